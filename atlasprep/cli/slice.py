"""`atlasprep slice`: cells matching ontology-aware filters, out of core, into h5ad or zarr."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from atlasprep._names import SOURCE_DEFAULTS
from atlasprep.cli import _source as opt
from atlasprep.cli._app import command, err_console, out_console
from atlasprep.cli._progress import CellProgress
from atlasprep.cli._render import counts_table, report_resolution

if TYPE_CHECKING:
    from atlasprep.slice import SliceResult

_D = SOURCE_DEFAULTS  # the defaults the options show: SourceSpec's (a light copy, for --help)
_OUTPUT = "Output"


_Out = Annotated[
    str | None,
    typer.Option(
        "--out",
        "-o",
        help="Output PATH.h5ad or PATH.zarr, or s3://bucket/PATH.zarr.",
        rich_help_panel=_OUTPUT,
    ),
]
_BatchSize = Annotated[
    int,
    typer.Option("--batch-size", help="Cells per streamed batch; bounds memory.", rich_help_panel=_OUTPUT),
]
_Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing output.", rich_help_panel=_OUTPUT)
]
_AllowEmpty = Annotated[
    bool,
    typer.Option("--allow-empty", help="Succeed (and write) when nothing matches.", rich_help_panel=_OUTPUT),
]
_Compression = Annotated[
    str | None,
    typer.Option(
        "--compression",
        help="X's codec: gzip or lzf for .h5ad (none by default), gzip or zstd for .zarr (zstd default).",
        rich_help_panel=_OUTPUT,
    ),
]
_ObsColumns = Annotated[
    list[str] | None,
    typer.Option(
        "--obs-columns",
        help="Write only these obs columns (repeated or a,b; default: all), as the Census's column_names.",
        rich_help_panel=_OUTPUT,
    ),
]
_DryRun = Annotated[
    bool, typer.Option("--dry-run", help="Count the cells; write nothing.", rich_help_panel=_OUTPUT)
]
_By = Annotated[
    list[str] | None,
    typer.Option(
        "--by",
        help="With --dry-run (or --json): break counts down by these obs columns (repeated or a,b).",
        rich_help_panel=_OUTPUT,
    ),
]
_Json = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout.", rich_help_panel=_OUTPUT)
]


@command(
    "slice",
    fields=opt.SOURCE_FIELDS,
    help=(
        "Select cells from the Census, a local Census-layout SOMA store, the demo atlas or AnnData "
        "files by ontology terms, and stream them into an .h5ad or .zarr AnnData store "
        "(raw counts in X, Census obs columns, var indexed by Ensembl ID, provenance in "
        "uns['atlasprep']).\n\n"
        "Examples:\n\n"
        "  atlasprep slice --census demo --tissue lung --cell-type 'immune cell' --out lung_immune.h5ad\n\n"
        '  atlasprep slice --census stable --tissue-general brain --disease "Alzheimer\'s disease" '
        "--dry-run --by cell_type\n\n"
        "  atlasprep slice --input a.h5ad --input b.zarr --cell-type 'T cell' --max-cells 10000 --out t.zarr"
    ),
)
def slice_command(
    census: opt.Census = None,
    census_uri: opt.CensusUri = None,
    files: opt.Files = None,
    inputs: opt.Inputs = None,
    join: opt.Join = None,
    organism: opt.Organism = _D.organism,
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
    counts_layer: opt.CountsLayer = None,
    max_cells: opt.MaxCells = None,
    per_group: opt.PerGroup = None,
    seed: int = typer.Option(_D.seed, help="Seed for sampling.", rich_help_panel=opt.SAMPLING),
    genes: opt.Genes = None,
    var_filter: opt.VarFilter = None,
    out: _Out = None,
    batch_size: _BatchSize = _D.batch_size,
    overwrite: _Overwrite = False,
    allow_empty: _AllowEmpty = False,
    dry_run: _DryRun = False,
    compression: _Compression = None,
    obs_columns: _ObsColumns = None,
    by: _By = None,
    as_json: _Json = False,
) -> None:
    _slice(locals())


def _slice(values: dict[str, Any]) -> None:
    """The command's work, from its options (the library imported when a command runs, not
    for --help)."""
    from atlasprep._remote import is_url, staging_dir
    from atlasprep.slice import SliceConfig, slice_cells

    out, dry_run, census, as_json = values["out"], values["dry_run"], values["census"], values["as_json"]
    url = out if is_url(out) else None  # written locally, then uploaded (atlasprep.slice.remote)
    config = SliceConfig(
        source=opt.source_spec(values),
        out=None if out is None else staging_dir(out).with_suffix(".zarr") if url else Path(out),
        dry_run=dry_run,
        by=opt.list_names(values["by"], blank=True),
        allow_empty=values["allow_empty"],
        overwrite=values["overwrite"],
        compression=values["compression"],
        obs_columns=None
        if values["obs_columns"] is None
        else opt.list_names(values["obs_columns"], blank=True),
    )
    if census == "demo":
        _announce_demo_build()
    with CellProgress("slice") as progress:
        if url is None or dry_run:
            result = slice_cells(config, progress=progress)
        else:
            from atlasprep.slice.remote import slice_to_url

            result = slice_to_url(config, url, progress=progress)
    report_resolution(result.compiled.resolved, result.source, result.compiled.value_filter() or "")
    if as_json:
        typer.echo(
            json.dumps({**result.to_json(), **({"out": url} if url and not dry_run else {})}, indent=2)
        )
    else:
        _render(result, url)


def _announce_demo_build() -> None:
    from atlasprep._cache import cache_dir
    from atlasprep.demo import DEMO_N_CELLS, DEMO_VERSION

    if not (cache_dir() / f"demo-census-{DEMO_VERSION}").exists():
        err_console.print(f"building the demo atlas ({DEMO_N_CELLS:,} cells) once; later runs reuse it")


def _render(result: SliceResult, url: str | None = None) -> None:
    if result.out is not None:
        typer.echo(
            f"{result.n_cells} cells x {result.n_genes} genes -> {url or result.out} ({result.seconds:.1f} s)"
        )
    else:
        typer.echo(
            f"{result.n_cells} cells match"
            + (f" ({result.n_matched} before sampling)" if result.n_matched != result.n_cells else "")
        )
    for column, counts in result.breakdown.items():
        out_console.print(counts_table(column, counts))
