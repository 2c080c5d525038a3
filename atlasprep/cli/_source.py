"""The source and filter options every command that reads cells shares, declared once."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from atlasprep.errors import UsageError
from atlasprep.sources import CellFilter

__all__ = [
    "AllData",
    "Assay",
    "CellType",
    "Census",
    "CensusUri",
    "DatasetId",
    "DevelopmentStage",
    "Disease",
    "DonorId",
    "Exact",
    "Inputs",
    "MaxCells",
    "Organism",
    "Sex",
    "Tissue",
    "TissueGeneral",
    "Where",
    "as_flags",
    "cell_filter",
]

SOURCE = "Source (name exactly one)"
FILTERS = "Filters (repeatable; label, synonym or ID; a term matches its descendants)"

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
        help="A local copy (or mirror URI) of a Census-layout SOMA collection.",
        rich_help_panel=SOURCE,
    ),
]
Inputs = Annotated[
    list[Path] | None,
    typer.Option(
        "--input",
        "-i",
        help="AnnData file (.h5ad, .zarr, .zarr.zip); repeatable. Read backed.",
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
MaxCells = Annotated[
    int | None,
    typer.Option("--max-cells", help="Keep at most N cells (uniform, seeded).", rich_help_panel="Sampling"),
]


def cell_filter(
    *,
    cell_type: list[str] | None,
    tissue: list[str] | None,
    tissue_general: list[str] | None,
    assay: list[str] | None,
    disease: list[str] | None,
    sex: list[str] | None,
    development_stage: list[str] | None,
    dataset_id: list[str] | None,
    donor_id: list[str] | None,
    exact: bool,
    all_data: bool,
    where: str | None,
) -> CellFilter:
    return CellFilter(
        cell_type=tuple(cell_type or ()),
        tissue=tuple(tissue or ()),
        tissue_general=tuple(tissue_general or ()),
        assay=tuple(assay or ()),
        disease=tuple(disease or ()),
        sex=tuple(sex or ()),
        development_stage=tuple(development_stage or ()),
        dataset_id=tuple(dataset_id or ()),
        donor_id=tuple(donor_id or ()),
        exact=exact,
        primary_only=not all_data,
        where=where,
    )


# config fields whose flag is not "--" + the field with dashes
_FLAGS = {
    "shard_bytes": "--shard-size",
    "segment_max_len": "--max-len",
    "genes_file": "--genes",
    "inputs": "--input",
    "layer": "--counts-layer",
    "shuffle": "--no-shuffle",
    "format": "--format",
}
# a refusal names its field first: ``shard_cells = 0: …`` (quoted text after it is left alone)
_FIELD = re.compile(r"^([a-z][a-z0-9_]*) = ")


@contextmanager
def as_flags(*configs: type) -> Iterator[None]:
    """A config's refusal (``shard_cells = 0: must be at least 1``) in the command line's words
    (``--shard-cells 0: must be at least 1``): the library names its fields, the CLI its flags."""
    names = {f.name for config in configs for f in dataclasses.fields(config)}
    try:
        yield
    except UsageError as exc:

        def flag(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in names:
                return match.group(0)
            return f"{_FLAGS.get(name, '--' + name.replace('_', '-'))} "

        raise UsageError(_FIELD.sub(flag, str(exc))) from None
