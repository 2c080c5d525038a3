"""The source and filter options every command that reads cells shares, declared once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from atlasprep.errors import UsageError

if TYPE_CHECKING:
    from atlasprep.sources import SourceSpec

__all__ = [
    "SOURCE_FIELDS",
    "AllData",
    "Assay",
    "CellType",
    "Census",
    "CensusUri",
    "CountsLayer",
    "DatasetId",
    "DevelopmentStage",
    "Disease",
    "DonorId",
    "Exact",
    "Files",
    "Genes",
    "InputAlias",
    "Inputs",
    "Join",
    "MaxCells",
    "Organism",
    "PerGroup",
    "SelfReportedEthnicity",
    "Sex",
    "Tissue",
    "TissueGeneral",
    "VarFilter",
    "Where",
    "input_files",
    "list_names",
    "one_input",
    "per_group",
    "source_spec",
]

SOURCE = "Source (name exactly one)"
FILTERS = "Filters (repeatable; label, synonym or ID; a term matches its descendants)"
SAMPLING = "Sampling"

Census = Annotated[
    str | None,
    typer.Option(
        "--census",
        help="Census version ('stable', 'latest', '2025-11-08'; needs network) or 'demo'.",
        rich_help_panel=SOURCE,
    ),
]
CensusUri = Annotated[
    str | None,
    typer.Option(
        "--census-uri",
        help=(
            "A local copy (or mirror URI) of a Census-layout SOMA collection, or a local SOMA "
            "Experiment (as tiledbsoma.io.from_h5ad writes it)."
        ),
        rich_help_panel=SOURCE,
    ),
]
Inputs = Annotated[
    list[str] | None,
    typer.Option(
        "--input",
        "-i",
        help="AnnData file (.h5ad, .zarr, .zarr.zip), local or a URL (s3://bucket/x.h5ad: copied once "
        "into the cache); repeatable. Read backed.",
        rich_help_panel=SOURCE,
    ),
]
Files = Annotated[
    list[str] | None,
    typer.Argument(
        help="AnnData files (.h5ad, .zarr, .zarr.zip; file.h5mu:rna for a MuData modality), as --input.",
        show_default=False,
    ),
]
Join = Annotated[
    str | None,
    typer.Option(
        "--join",
        help="Several files measuring different genes: inner (the genes all measured) or outer (every "
        "gene; the presence is recorded). Without it such files are refused.",
        rich_help_panel=SOURCE,
    ),
]
Organism = Annotated[
    str, typer.Option("--organism", help="Census experiment to query.", rich_help_panel=SOURCE)
]
CellType = Annotated[
    list[str] | None,
    typer.Option(
        "--cell-type", help="CL term, e.g. 'immune cell', 'T cell', CL:0000084.", rich_help_panel=FILTERS
    ),
]
Tissue = Annotated[
    list[str] | None,
    typer.Option(
        "--tissue", help="UBERON term on tissue_ontology_term_id, e.g. lung.", rich_help_panel=FILTERS
    ),
]
TissueGeneral = Annotated[
    list[str] | None,
    typer.Option("--tissue-general", help="The Census tissue_general rollup.", rich_help_panel=FILTERS),
]
Assay = Annotated[
    list[str] | None, typer.Option("--assay", help='EFO term, e.g. "10x 3\' v3".', rich_help_panel=FILTERS)
]
Disease = Annotated[
    list[str] | None, typer.Option("--disease", help="MONDO term, or 'normal'.", rich_help_panel=FILTERS)
]
Sex = Annotated[
    list[str] | None, typer.Option("--sex", help="female, male (PATO) or unknown.", rich_help_panel=FILTERS)
]
SelfReportedEthnicity = Annotated[
    list[str] | None,
    typer.Option(
        "--self-reported-ethnicity",
        help="HANCESTRO term, e.g. European, or unknown.",
        rich_help_panel=FILTERS,
    ),
]
CountsLayer = Annotated[
    str | None,
    typer.Option(
        "--counts-layer",
        "--layer",
        help="The raw counts: a layers key, raw or X (AnnData); an X layer (SOMA, default raw).",
        rich_help_panel=SOURCE,
    ),
]
DevelopmentStage = Annotated[
    list[str] | None,
    typer.Option("--development-stage", help="HsapDv/MmusDv term (by --organism).", rich_help_panel=FILTERS),
]
DatasetId = Annotated[
    list[str] | None,
    typer.Option("--dataset-id", help="A Census dataset_id, verbatim.", rich_help_panel=FILTERS),
]
DonorId = Annotated[
    list[str] | None, typer.Option("--donor-id", help="A donor_id, verbatim.", rich_help_panel=FILTERS)
]
Exact = Annotated[
    bool,
    typer.Option("--exact", help="Match the terms only, not their descendants.", rich_help_panel=FILTERS),
]
AllData = Annotated[
    bool,
    typer.Option(
        "--all-data",
        help="Include non-primary (duplicate) cells; default is_primary_data only.",
        rich_help_panel=FILTERS,
    ),
]
Where = Annotated[
    str | None,
    typer.Option(
        "--where",
        help=(
            "A filter on obs columns (SOMA value-filter grammar: comparisons, in, not in, and/or/not, "
            "parentheses), ANDed to the rest; parsed, never evaluated."
        ),
        rich_help_panel=FILTERS,
    ),
]
VarFilter = Annotated[
    str | None,
    typer.Option(
        "--var-filter",
        help="A filter on var columns (the --where grammar), e.g. \"feature_type == 'protein_coding'\": "
        "keep those genes (the Census's var_value_filter).",
        rich_help_panel=SAMPLING,
    ),
]
MaxCells = Annotated[
    int | None,
    typer.Option("--max-cells", help="Keep at most N cells (uniform, seeded).", rich_help_panel=SAMPLING),
]
PerGroup = Annotated[
    str | None,
    typer.Option(
        "--per-group",
        metavar="COLUMN=N",
        help="Keep up to N cells of each value of COLUMN (balanced; before --max-cells).",
        rich_help_panel=SAMPLING,
    ),
]
Genes = Annotated[
    Path | None,
    typer.Option(
        "--genes",
        help="File of gene IDs or symbols (one per line; - reads stdin): keep those genes only.",
        rich_help_panel=SAMPLING,
    ),
]


def source_spec(options: Mapping[str, Any], **given: Any) -> SourceSpec:
    """The :class:`SourceSpec` of a command's source, filter and sampling options, built in one
    place for every command that reads cells. ``options`` is the command's ``locals()`` (typer
    needs each option as a parameter of its own); ``given`` overrides what a command parses
    itself (tokenize's input specs)."""
    from atlasprep.sources import FILTER_COLUMNS, CellFilter, SourceSpec, read_gene_list

    values = {**options, "inputs": input_files(options), **given}
    if not (values.get("census") or values.get("census_uri") or values.get("inputs")):
        raise UsageError("name exactly one source: --census VERSION|demo, --census-uri PATH or --input FILE")
    genes: Path | None = values.get("genes")
    return SourceSpec(
        census=values.get("census"),
        census_uri=values.get("census_uri"),
        inputs=tuple(str(p) for p in values.get("inputs") or ()),
        organism=values["organism"],
        layer=values.get("counts_layer"),
        filter=CellFilter(
            **{name: tuple(values.get(name) or ()) for name in FILTER_COLUMNS if name in values},
            exact=bool(values.get("exact")),
            primary_only=not values.get("all_data"),
            where=values.get("where"),
        ),
        per_group=per_group(values.get("per_group")),
        max_cells=values.get("max_cells"),
        genes=None if genes is None else read_gene_list(genes),
        seed=values["seed"],
        batch_size=values["batch_size"],
        join=values.get("join"),
        var_filter=values.get("var_filter"),
    )


InputAlias = Annotated[
    Path | None,
    typer.Option("--input", "-i", help="The same as the positional argument (every command takes both)."),
]


def one_input(positional: Path | None, option: Path | None, what: str) -> Path:
    """A command's one input, given positionally or with ``--input`` (not both, not neither)."""
    if positional is not None and option is not None and positional != option:
        raise UsageError(f"{what}: given twice ({positional} and --input {option}); give it once")
    chosen = positional if positional is not None else option
    if chosen is None:
        raise UsageError(f"{what}: missing; give it as the first argument (or with --input; see --help)")
    return chosen


def list_names(given: str | Sequence[str] | None, *, blank: bool = False) -> tuple[str, ...]:
    """A list option's names, repeated, comma-separated or both (``--context a,b --context c``).
    An empty name (``a,,b``) is kept for the config to refuse; a wholly blank item is dropped,
    or kept as one empty name with ``blank`` (where an empty value must be refused)."""
    items = [given] if isinstance(given, str) else list(given or ())
    return tuple(name.strip() for item in items if blank or item.strip() for name in item.split(","))


def input_files(options: Mapping[str, Any]) -> list[str]:
    """The input files a command was given: positional (``files``) and ``--input``, in order."""
    return [*(options.get("files") or ()), *(options.get("inputs") or ())]


def per_group(value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    column, sep, n = value.partition("=")
    if not sep or not column or not n.strip().isdigit():
        raise UsageError(f"--per-group {value!r}: expected COLUMN=N, e.g. --per-group cell_type=500")
    return column.strip(), int(n)


# config fields whose flag is not "--" + the field with dashes
# config fields whose flag is not their name (the rest map by name: max_cells -> --max-cells);
# commands pass this to ``command(fields=...)``, which turns a refusal's fields into flags
SOURCE_FIELDS = {
    "inputs": "--input",
    "layer": "--counts-layer",
    "primary_only": "--all-data",
    "shard_bytes": "--shard-size",
    "segment_max_len": "--max-len",
    "shuffle": "--no-shuffle",
    "format": "--format",
}
