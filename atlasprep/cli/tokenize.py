"""`atlasprep tokenize`: cells from any source into a shuffled, split, checksummed token store."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from atlasprep.cli import _source as opt
from atlasprep.cli._app import command
from atlasprep.cli._progress import CellProgress
from atlasprep.errors import UsageError
from atlasprep.shard.format import ShardFormatName
from atlasprep.shard.sizes import parse_size
from atlasprep.sources import SourceSpec
from atlasprep.sources.anndata import split_modality
from atlasprep.tokenize.api import DEFAULT_OBS_COLUMNS, TOKENIZE_BATCH_SIZE, TokenizeConfig, tokenize_cells
from atlasprep.tokenize.config import Scheme

_D = TokenizeConfig(source=SourceSpec(), out=Path("."))


def _fractions(value: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise UsageError(f"--split {value!r}: expected three fractions, e.g. 0.8,0.1,0.1")
    return parts[0], parts[1], parts[2]


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
    out: Path = typer.Option(..., "--out", "-o", help="The token store directory."),
    census: opt.Census = None,
    census_uri: opt.CensusUri = None,
    inputs: opt.Inputs = None,
    organism: opt.Organism = _D.source.organism,
    cell_type: opt.CellType = None,
    tissue: opt.Tissue = None,
    tissue_general: opt.TissueGeneral = None,
    assay: opt.Assay = None,
    disease: opt.Disease = None,
    sex: opt.Sex = None,
    development_stage: opt.DevelopmentStage = None,
    dataset_id: opt.DatasetId = None,
    donor_id: opt.DonorId = None,
    exact: opt.Exact = False,
    all_data: opt.AllData = False,
    where: opt.Where = None,
    max_cells: opt.MaxCells = None,
    per_group: opt.PerGroup = None,
    genes: opt.Genes = None,
    scheme: Scheme = typer.Option(
        Scheme(_D.scheme), "--scheme", help="rank (Geneformer), bin (scGPT) or raw (log1p values)."
    ),
    max_len: str = typer.Option(
        str(_D.max_len),
        "--max-len",
        help="Tokens per cell at most (incl. special); with --modalities a budget each: rna=1536,atac=512.",
    ),
    modalities: str = typer.Option(
        "", "--modalities", help="An aligned .h5mu: rna,atac or rna,prot (one token segment per modality)."
    ),
    targets: str = typer.Option("", "--targets", help="An aligned .h5mu: modalities as target columns."),
    n_bins: int = typer.Option(_D.n_bins, "--n-bins", help="Bins for --scheme bin."),
    n_hvg: int | None = typer.Option(
        None, "--n-hvg", help="bin: keep the N most variable genes (Seurat v3, two streaming passes)."
    ),
    token_dictionary: Path | None = typer.Option(None, "--token-dictionary", help="JSON gene -> id."),
    gene_medians: Path | None = typer.Option(None, "--gene-medians", help="JSON gene -> median (rank)."),
    gene_mapping: Path | None = typer.Option(None, "--gene-mapping", help="JSON id/symbol -> Ensembl ID."),
    special_tokens: bool = typer.Option(
        _D.special_tokens, "--special-tokens/--no-special-tokens", help="<cls> first, <eos> last (rank)."
    ),
    gene_column: str | None = typer.Option(None, "--gene-column", help="var column with Ensembl IDs."),
    n_counts_column: str = typer.Option(
        _D.n_counts_column or "none",
        "--n-counts-column",
        help="rank: obs column with each cell's total (read as Geneformer reads obs['n_counts']) "
        "when the input has it; none: always the sum of the counts over all genes.",
    ),
    assume_normalized: bool = typer.Option(False, "--assume-normalized", help="Accept non-integer X."),
    counts_layer: str | None = typer.Option(
        None, "--counts-layer", help="The raw counts: a layers key, raw or X (AnnData); an X layer (SOMA)."
    ),
    min_gene_match: float = typer.Option(
        _D.min_gene_match, "--min-gene-match", help="Fail below this share."
    ),
    obs_columns: str = typer.Option(",".join(DEFAULT_OBS_COLUMNS), "--obs-columns", help="Metadata to keep."),
    context: str = typer.Option(
        "", "--context", help="obs columns, e.g. tissue_general,assay: a token each."
    ),
    store_format: ShardFormatName = typer.Option(
        ShardFormatName(_D.format), "--format", help="arrow (IPC streams) or zarr (v3 groups)."
    ),
    shard_cells: int | None = typer.Option(
        None, "--shard-cells", help=f"Cells per shard [default: {_D.shard_cells}]."
    ),
    shard_size: str | None = typer.Option(
        None, "--shard-size", help="Cut shards by size instead, e.g. 256MB (uncompressed Arrow bytes)."
    ),
    no_shuffle: bool = typer.Option(False, "--no-shuffle", help="Keep source order."),
    seed: int = typer.Option(_D.seed, "--seed", help="Shuffle, split and sampling seed."),
    split_by: str | None = typer.Option(None, "--split-by", help="obs column whose groups split."),
    split: str = typer.Option("0.8,0.1,0.1", "--split", help="train,val,test fractions."),
    holdout: list[str] = typer.Option([], "--holdout", help="COLUMN=VALUE: that group to test."),
    batch_size: int = typer.Option(
        TOKENIZE_BATCH_SIZE, "--batch-size", help="Cells per streamed batch (fewer when cells are dense)."
    ),
    drop_empty: bool = typer.Option(
        False,
        "--drop-empty",
        help="Leave out cells without a single vocabulary gene, as Geneformer's tokenizer does "
        "(by default they are kept with special tokens only; either way the manifest counts them).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a complete store."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as one JSON document."),
) -> None:
    held: list[str] = []
    for item in holdout:
        column, sep, value = item.partition("=")
        if not sep or (split_by and column != split_by):
            raise UsageError(f"--holdout {item!r}: expected {split_by or 'COLUMN'}=VALUE matching --split-by")
        split_by = split_by or column
        held.append(value)
    budgets, segment_names, input_specs = _multimodal(max_len, modalities, targets, inputs)
    # the values go to the configs as given: they check them (and the message names the flag)
    source = opt.source_spec(locals(), inputs=input_specs)
    config = TokenizeConfig(
        source=source,
        out=out,
        scheme=scheme,
        max_len=budgets.pop("rna"),
        segment_max_len=tuple(budgets.items()),
        modalities=segment_names,
        targets=_names(targets),
        n_bins=n_bins,
        n_hvg=n_hvg,
        token_dictionary=token_dictionary,
        gene_medians=gene_medians,
        gene_mapping=gene_mapping,
        special_tokens=special_tokens,
        min_gene_match=min_gene_match,
        gene_column=gene_column,
        n_counts_column=None if n_counts_column.lower() == "none" else n_counts_column,
        assume_normalized=assume_normalized,
        drop_empty=drop_empty,
        context=_names(context),
        format=store_format,
        obs_columns=_names(obs_columns),
        shard_cells=_D.shard_cells if shard_cells is None else shard_cells,
        shard_bytes=None if shard_size is None else parse_size(shard_size),
        shuffle=not no_shuffle,
        seed=seed,
        split_by=split_by,
        split=_fractions(split),
        holdout=tuple(held),
        overwrite=overwrite,
    )
    with CellProgress("tokenize") as progress:
        result = tokenize_cells(config, progress=progress)
    coverage = result.manifest["coverage"]
    typer.echo(
        f"Coverage: {coverage['genes_outside_vocab_fraction']:.1%} of genes and "
        f"{coverage['counts_outside_vocab_fraction']:.1%} of counts are outside the vocabulary",
        err=True,
    )
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        splits = result.manifest["splits"]["n_cells"]
        typer.echo(
            f"{result.manifest['n_cells']} cells -> {len(result.manifest['shards'])} shards in {out} "
            f"({', '.join(f'{k} {v}' for k, v in splits.items())}; {result.seconds:.1f} s)"
        )


def _names(text: str) -> tuple[str, ...]:
    """``a,b`` as names; an empty name (``a,,b``) goes to the config, which refuses it."""
    return tuple(name.strip() for name in text.split(",")) if text.strip() else ()


def _multimodal(
    max_len: str, modalities: str, targets: str, inputs: list[Path] | None
) -> tuple[dict[str, int], tuple[str, ...], tuple[str, ...]]:
    """(budget per modality, paired modalities, input specs) from --max-len/--modalities/--targets."""
    budgets: dict[str, int] = {}
    for part in max_len.split(","):
        name, sep, value = part.rpartition("=")
        if not value.strip().isdigit() or (sep and not name.strip()):
            raise UsageError(f"--max-len {max_len!r}: expected a number, or rna=1536,atac=512")
        budgets[name.strip() if sep else "rna"] = int(value)
    names = tuple(m for m in modalities.split(",") if m)
    specs = tuple(str(p) for p in inputs or ())
    if not names and not targets:
        if set(budgets) != {"rna"}:
            raise UsageError("per-modality --max-len budgets need --modalities")
        return budgets, (), specs
    if names and names[0] != "rna":
        raise UsageError(f"--modalities {modalities!r}: the RNA comes first (rna,atac or rna,prot)")
    path, modality = split_modality(specs[0]) if len(specs) == 1 else (None, None)
    if path is None or path.suffix != ".h5mu":
        raise UsageError("--modalities/--targets need one aligned MuData --input (atlasprep align barcodes)")
    if "rna" not in budgets:
        budgets["rna"] = _D.max_len
    unknown = set(budgets) - {"rna", *names}
    if unknown:
        raise UsageError(f"--max-len names {', '.join(sorted(unknown))}, not in --modalities")
    return budgets, names[1:], (specs[0] if modality else f"{specs[0]}:rna",)
