"""`atlasprep tokenize`: cells from any source into a shuffled, split, checksummed token store."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from atlasprep.cli import _source as opt
from atlasprep.cli import _tokenize_options as o
from atlasprep.cli._app import command, err_console, out_console
from atlasprep.cli._progress import CellProgress
from atlasprep.cli._render import report_resolution

if TYPE_CHECKING:
    from atlasprep.tokenize.config import TokenizeConfig, TokenizeResult
    from atlasprep.tokenize.dry_run import TokenizePlan

_D = o.DEFAULTS


@command(
    "tokenize",
    fields=opt.SOURCE_FIELDS,
    help=(
        "Tokenize cells (Geneformer rank value encoding, scGPT value bins, or raw log1p values) from the "
        "Census, a SOMA store, the demo atlas or AnnData files (a slice) into a token store: Arrow shards "
        "shuffled across the whole corpus, group-aware splits, vocab.json and a manifest with checksums, "
        "written last.\n\n"
        "Examples:\n\n"
        "  atlasprep tokenize --census demo --scheme rank --token-dictionary token_dictionary_gc104M.json "
        "--gene-medians gene_median_dictionary_gc104M.json --split-by donor_id --out store/\n\n"
        "  atlasprep tokenize --input slice.h5ad --scheme bin --n-bins 51 --n-hvg 1200 --max-len 1200 "
        "--out bins/\n\n"
        "  atlasprep tokenize --census demo --tissue liver --scheme raw --shard-size 256MB --format zarr "
        "--out raw/"
    ),
)
def tokenize_command(
    out: o.Out,
    census: opt.Census = None,
    census_uri: opt.CensusUri = None,
    files: opt.Files = None,
    inputs: opt.Inputs = None,
    join: opt.Join = None,
    organism: opt.Organism = _D.source.organism,
    cell_type: opt.CellType = None,
    tissue: opt.Tissue = None,
    tissue_general: opt.TissueGeneral = None,
    assay: opt.Assay = None,
    disease: opt.Disease = None,
    sex: opt.Sex = None,
    development_stage: opt.DevelopmentStage = None,
    self_reported_ethnicity: opt.SelfReportedEthnicity = None,
    dataset_id: opt.DatasetId = None,
    donor_id: opt.DonorId = None,
    exact: opt.Exact = False,
    all_data: opt.AllData = False,
    where: opt.Where = None,
    max_cells: opt.MaxCells = None,
    per_group: opt.PerGroup = None,
    genes: opt.Genes = None,
    var_filter: opt.VarFilter = None,
    scheme: o.SchemeOption = _D.scheme,
    max_len: o.MaxLen = o.DEFAULT_MAX_LEN,
    modalities: o.Modalities = None,
    targets: o.Targets = None,
    n_bins: o.NBins = _D.n_bins,
    n_hvg: o.NHvg = None,
    tokenizer: o.TokenizerOption = None,
    token_dictionary: o.TokenDictionary = None,
    gene_medians: o.GeneMedians = None,
    gene_mapping: o.GeneMapping = None,
    special_tokens: o.SpecialTokens = _D.special_tokens,
    gene_column: o.GeneColumn = None,
    n_counts_column: o.NCountsColumn = o.DEFAULT_N_COUNTS_COLUMN,
    tie_order: o.TieOrderOption = _D.tie_order,
    assume_normalized: o.AssumeNormalized = False,
    counts_layer: o.CountsLayer = None,
    min_gene_match: o.MinGeneMatch = _D.min_gene_match,
    obs_columns: o.ObsColumns = None,
    context: o.Context = None,
    store_format: o.StoreFormat = _D.format,
    shard_cells: o.ShardCells = None,
    shard_size: o.ShardSize = None,
    no_shuffle: o.NoShuffle = False,
    seed: o.Seed = _D.seed,
    split_by: o.SplitBy = None,
    split: o.Split = None,
    holdout: o.Holdout = None,
    holdout_exact: o.HoldoutExact = False,
    stratify: o.Stratify = None,
    split_fallback: o.SplitFallback = False,
    batch_size: o.BatchSize = o.DEFAULT_BATCH_SIZE,
    drop_empty: o.DropEmpty = False,
    overwrite: o.Overwrite = False,
    as_json: o.Json = False,
    dry_run: o.DryRun = False,
) -> None:
    _tokenize(o.tokenize_config(locals()), dry_run=dry_run, as_json=as_json, url=o.out_url(out))


def _tokenize(config: TokenizeConfig, *, dry_run: bool, as_json: bool, url: str | None = None) -> None:
    # the library is imported when a command runs, not for --help (numba, anndata: seconds)
    from atlasprep.sources import resolve
    from atlasprep.tokenize.api import tokenize_cells
    from atlasprep.tokenize.dry_run import plan_tokenize

    if dry_run:
        _render_plan(plan_tokenize(config), as_json=as_json)
        return
    report_resolution(resolve(config.source))  # before the work: the cells the names mean
    with CellProgress("tokenize") as progress:
        if url is None:
            result = tokenize_cells(config, progress=progress)
        else:  # built locally, then uploaded (atlasprep.tokenize.remote)
            from atlasprep.tokenize.remote import tokenize_to_url

            result = tokenize_to_url(config, url, progress=progress)
    _render(result, as_json=as_json, out=url)


def _render_plan(plan: TokenizePlan, *, as_json: bool) -> None:
    report_resolution(plan.compiled.resolved, plan.source, plan.compiled.value_filter() or "")
    if as_json:
        typer.echo(json.dumps(plan.to_json(), indent=2))
        return
    sampled = f" ({plan.n_matched:,} before sampling)" if plan.n_matched != plan.n_cells else ""
    typer.echo(f"{plan.n_cells:,} cells would be tokenized{sampled}; nothing written (--dry-run)")
    table = Table(show_edge=False)
    for column in ("split", "cells", "groups", "shards"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for name, split in plan.splits.items():
        groups = "-" if split.groups is None else f"{split.groups:,}"
        shards = "by size" if split.shards is None else f"{split.shards:,}"
        table.add_row(name, f"{split.cells:,}", groups, shards)
    out_console.print(table)
    if plan.components:
        n, largest = plan.components["n"], plan.components["largest_share"]
        typer.echo(f"{n:,} linked groups; the largest holds {largest:.1%} of the cells")
    typer.echo(f"at most {plan.max_tokens:,} tokens (bounded by {plan.tokens_from})")


def _render(result: TokenizeResult, *, as_json: bool, out: str | None = None) -> None:
    coverage = result.manifest["coverage"]
    unknown = coverage.get("context_unknown") or {}
    err_console.print(
        f"Coverage: {coverage['genes_outside_vocab_fraction']:.1%} of genes and "
        f"{coverage['counts_outside_vocab_fraction']:.1%} of counts are outside the vocabulary"
        + "".join(f"; {n:,} cells' {column} unseen in the corpus (<unk>)" for column, n in unknown.items()),
        soft_wrap=True,
        markup=False,
    )
    if as_json:
        typer.echo(json.dumps({**result.to_json(), **({"out": out} if out else {})}, indent=2))
        return
    splits = result.manifest["splits"]["n_cells"]
    typer.echo(
        f"{result.manifest['n_cells']} cells -> {len(result.manifest['shards'])} shards "
        f"in {out or result.out} "
        f"({', '.join(f'{k} {v}' for k, v in splits.items())}; {result.seconds:.1f} s)"
    )
