"""`atlasprep harmonize`: thin CLI over :func:`atlasprep.harmonize.harmonize`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from atlasprep._names import Embedding
from atlasprep.cli._app import command, err_console, out_console
from atlasprep.cli._progress import CellProgress
from atlasprep.cli._source import SOURCE_FIELDS, InputAlias, MaxCells, PerGroup, Where, one_input
from atlasprep.cli._source import per_group as parse_per_group
from atlasprep.errors import UsageError

if TYPE_CHECKING:
    from atlasprep.harmonize.api import HarmonizeReport


def _pairs(items: list[str], option: str, shape: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items:
        left, sep, right = item.partition("=")
        if not sep or not left.strip() or not right.strip():
            raise UsageError(f"{option} {item!r}: expected {shape}")
        out.append((left.strip(), right.strip()))
    return tuple(out)


_SETS_HELP = "FIELD=VALUE for every cell, e.g. tissue=blood; title=… is the dataset's uns title."
_Mapping = Annotated[
    Path | None,
    typer.Option("--mapping", help="TSV with columns column, value, term_id: wins over automatic matching."),
]
_CountsLayer = Annotated[
    str | None,
    typer.Option("--counts-layer", help="The counts: X, raw or a layers key [default: raw.X, else X]."),
]
_Strict = Annotated[
    bool, typer.Option("--strict", help="Exit 1, writing nothing, if anything stays unmapped.")
]
_Seed = Annotated[
    int,
    typer.Option(
        "--seed", help="Seed of --per-group, --max-cells and --embedding.", rich_help_panel="Sampling"
    ),
]
_Embedding = Annotated[
    Embedding | None,
    typer.Option(
        "--embedding",
        help="Add obsm X_pca or X_umap (scanpy; holds the counts in memory): CELLxGENE needs one embedding.",
    ),
]
_KeepLabels = Annotated[
    bool,
    typer.Option(
        "--keep-labels",
        help=(
            "Also write the label columns (obs cell_type, tissue, …; var feature_name, …). CELLxGENE "
            "derives them on upload and will reject a file that has them."
        ),
    ),
]


@command(
    "harmonize",
    help=(
        "Map a dataset's metadata and genes to CELLxGENE standards: free-text labels to CL, UBERON, "
        "MONDO, EFO, HsapDv/MmusDv, PATO and HANCESTRO terms (graded: table, id, label, synonym, alias, "
        "normalized), gene symbols to Ensembl IDs (GENCODE), tissue_general derived from the IDs. X is "
        "streamed batch by batch. The output is what a CELLxGENE upload takes: float32 counts, "
        "var feature_is_filtered, no label columns (CELLxGENE derives cell_type, tissue, feature_name "
        "… on upload), uns title from --set title=…, and with --embedding an X_pca or X_umap "
        "(check it with atlasprep validate). Nothing is dropped silently: unmapped values and "
        "genes are reported with counts (--report FILE.json); --strict exits 1 if any remain.\n\n"
        "Examples:\n\n"
        "  atlasprep harmonize wu2020.h5ad --out wu2020.cxg.h5ad --map cluster_orig=cell_type "
        "--map patient=donor_id --set organism='Homo sapiens' --set title='Wu 2020 T cells' "
        "--embedding umap --mapping labels.tsv --report report.json\n\n"
        "  atlasprep harmonize pbmc.h5ad --out pbmc.cxg.h5ad --map celltype=cell_type --set tissue=blood "
        "--strict\n\n"
        "  atlasprep harmonize atlas.h5ad --out lung.cxg.h5ad --where \"organ == 'lung'\" --max-cells 20000 "
        "--map annotation=cell_type"
    ),
    fields=SOURCE_FIELDS,
)
def harmonize_command(
    input: Path | None = typer.Argument(None, help="An AnnData file (.h5ad or .zarr).", show_default=False),
    input_option: InputAlias = None,
    out: Path = typer.Option(..., "--out", "-o", help="The harmonized AnnData (.h5ad or .zarr)."),
    maps: list[str] = typer.Option([], "--map", help="SOURCE_COLUMN=FIELD, e.g. celltype=cell_type."),
    sets: list[str] = typer.Option([], "--set", help=_SETS_HELP),
    mapping: _Mapping = None,
    organism: str | None = typer.Option(None, "--organism", help="Homo sapiens or Mus musculus."),
    gene_column: str | None = typer.Option(None, "--gene-column", help="var column with the gene names."),
    counts_layer: _CountsLayer = None,
    report: Path | None = typer.Option(None, "--report", help="Write the full report as JSON."),
    strict: _Strict = False,
    where: Where = None,
    per_group: PerGroup = None,
    max_cells: MaxCells = None,
    seed: _Seed = 0,
    batch_size: int = typer.Option(4096, "--batch-size", help="Cells per streamed batch."),
    embedding: _Embedding = None,
    keep_labels: _KeepLabels = False,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    from atlasprep.harmonize import config as harmonize_config
    from atlasprep.harmonize.api import HarmonizeConfig, harmonize
    from atlasprep.sources import CellFilter, SourceSpec

    input = one_input(input, input_option, "the input AnnData file")
    source = SourceSpec(
        inputs=(str(input),),
        layer=counts_layer,
        # the input's own columns: its labels are not terms yet; every cell unless narrowed
        filter=CellFilter(where=where, primary_only=False),
        per_group=parse_per_group(per_group),
        max_cells=max_cells,
        seed=seed,
        batch_size=batch_size,
    )
    config = HarmonizeConfig(
        source=source,
        out=out,
        maps=_pairs(maps, "--map", "SOURCE_COLUMN=FIELD"),
        sets=_pairs(sets, "--set", "FIELD=VALUE"),
        mapping=mapping,
        organism=organism,
        gene_column=gene_column,
        report=report,
        strict=strict,
        overwrite=overwrite,
        keep_labels=keep_labels,
        # the library's own member (the option's choices are a light copy, for --help)
        embedding=None if embedding is None else harmonize_config.Embedding(embedding),
    )
    with CellProgress("harmonize") as progress:
        result = harmonize(config, progress=progress)
    _show(result, report=report, as_json=as_json)


def _show(result: HarmonizeReport, *, report: Path | None, as_json: bool) -> None:
    """The result on stdout (a table, or JSON), and how much stayed unmapped on stderr."""
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        _summary(out_console, result)
    if result.n_unmapped:
        err_console.print(
            f"{result.n_unmapped} values or genes stayed unmapped"
            + (f"; see {report}" if report else "; --report FILE lists them")
        )


def _summary(console: Console, result: HarmonizeReport) -> None:
    table = Table(title=f"{result.input} → {result.out} ({result.n_cells:,} cells)", show_edge=False)
    for column in ("field", "from", "mapped", "how", "unmapped (cells)", "e.g. unmapped → closest"):
        table.add_column(column)
    for field in result.fields:
        info = field.to_json()
        how = ", ".join(f"{k} {v}" for k, v in info["by_how"].items())
        examples = "; ".join(
            f"{m.value!r} → {m.suggestions[0][0]} ({m.suggestions[0][1]})" if m.suggestions else repr(m.value)
            for m in field.unmapped[:2]
        )
        table.add_row(
            field.field,
            field.source,
            f"{info['n_mapped']}/{info['n_values']}",
            how,
            f"{info['n_unmapped']} ({info['cells_unmapped']:,})",
            examples,
        )
    console.print(table)
    genes = result.genes.to_json()
    console.print(
        f"genes: {genes['mapped']:,} of {genes['n_input']:,} mapped to {genes['n_output']:,} "
        f"{genes['annotation']} IDs ({', '.join(f'{k} {v:,}' for k, v in genes['by_how'].items())}); "
        f"{genes['n_unknown']:,} unknown, {genes['n_ambiguous']:,} ambiguous, {genes['n_summed']:,} summed"
    )
    counts = result.raw_counts
    console.print(
        f"counts ({counts['matrix']}): "
        + ("integer" if counts["integer"] else f"{counts['non_integer_values']:,} non-integer values")
        + (", non-negative" if counts["non_negative"] else f", {counts['negative_values']:,} negative")
    )
