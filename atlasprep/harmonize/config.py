"""`harmonize`'s configuration, and its checks before any work: the fields it may map or set,
the source, the output and the report.

The cells come from a :class:`~atlasprep.sources.SourceSpec` naming one AnnData file. Of its
fields harmonize honours ``layer`` (the counts), ``batch_size``, ``where`` and ``primary_only``
(on the input's own obs columns) and the sampling (``per_group``, ``max_cells``, ``seed``); it
refuses the Census (already in CELLxGENE terms), several files, ontology-term filters (the input's
labels are not terms yet: filter by term after harmonizing) and ``genes`` (harmonize maps every
gene; a gene list names Ensembl IDs, which exist only after it). A plain path is the whole file.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from atlasprep._checks import as_paths
from atlasprep._io import check_file_output, check_new_output
from atlasprep.errors import UsageError
from atlasprep.harmonize._embedding import Embedding, require_scanpy
from atlasprep.harmonize.labels import TERM_FIELDS
from atlasprep.slice.writer import format_of
from atlasprep.sources._paths import missing_file
from atlasprep.sources.filters import FILTER_COLUMNS, CellFilter
from atlasprep.sources.spec import SourceSpec, one_input, refuse_fields

__all__ = ["ORGANISM_FIELD", "PLAIN_FIELDS", "UNS_FIELDS", "Embedding", "HarmonizeConfig", "check_config"]

# fields copied as they are (free text or schema literals), beside the term fields
PLAIN_FIELDS: tuple[str, ...] = ("donor_id", "tissue_type", "suspension_type", "is_primary_data")
ORGANISM_FIELD = "organism"
# dataset-level fields sets may give: they go to uns
UNS_FIELDS: tuple[str, ...] = ("title",)


@dataclass(frozen=True, slots=True, kw_only=True)
class HarmonizeConfig:
    """What harmonize reads (``source``: a :class:`SourceSpec` of one AnnData file, or its path:
    every cell), maps and writes."""

    source: SourceSpec
    out: Path
    maps: tuple[tuple[str, str], ...] = ()  # (source column, field)
    sets: tuple[tuple[str, str], ...] = ()  # (field, constant value)
    mapping: Path | None = None  # TSV column, value, term_id: wins over automatic matching
    organism: str | None = None  # else sets organism=…, else guessed from the genes
    gene_column: str | None = None  # var column holding the gene names (default: var index)
    report: Path | None = None
    strict: bool = False
    overwrite: bool = False
    # also write the label columns (cell_type, tissue, … in obs; feature_name, … in var) that
    # CELLxGENE derives on upload: it rejects a file that has them
    keep_labels: bool = False
    embedding: Embedding | None = None  # add obsm X_pca or X_umap (scanpy)

    def __post_init__(self) -> None:
        if self.embedding is not None and self.embedding not in list(Embedding):
            raise UsageError(f"embedding = {self.embedding!r}: choose {' or '.join(Embedding)}")
        if self.embedding is not None:
            object.__setattr__(self, "embedding", Embedding(self.embedding))
        if isinstance(self.source, str | Path):  # a path: the whole file, every cell
            whole = SourceSpec(inputs=(str(self.source),), filter=CellFilter(primary_only=False))
            object.__setattr__(self, "source", whole)
        if not isinstance(self.source, SourceSpec):
            raise UsageError(
                f"source = {self.source!r}: expected a SourceSpec or the path of an AnnData file"
            )
        as_paths(self, "out", "mapping", "report")
        one_input(self.source, "harmonize")
        refuse_fields(
            self.source,
            tuple(FILTER_COLUMNS),
            "harmonize reads labels before they are ontology terms; filter by term after it "
            "(slice or tokenize), or on the input's own columns with where",
        )
        refuse_fields(
            self.source,
            ("genes",),
            "harmonize maps every gene; keep a gene list's Ensembl IDs after it (slice or tokenize)",
        )

    @property
    def input(self) -> Path:
        """The AnnData file harmonize reads."""
        return Path(self.source.inputs[0])


def check_config(config: HarmonizeConfig) -> tuple[dict[str, str], dict[str, str]]:
    """(field -> source column, field -> constant), refusing unknown or doubled fields."""
    allowed = (*TERM_FIELDS, *PLAIN_FIELDS, ORGANISM_FIELD)
    maps: dict[str, str] = {}
    for column, field in config.maps:
        if field in UNS_FIELDS:
            raise UsageError(f"maps: {field} is one value for the dataset; give it with sets ({field}=…)")
        _known(field, allowed, "maps")
        if field in maps:
            raise UsageError(f"maps: {field} is mapped twice ({maps[field]} and {column})")
        maps[field] = column
    sets: dict[str, str] = {}
    for field, value in config.sets:
        _known(field, (*allowed, *UNS_FIELDS), "sets")
        if field in maps:
            raise UsageError(f"sets: {field} is also mapped from column {maps[field]} (maps); give it once")
        sets[field] = value
    if not config.input.exists():
        raise UsageError(missing_file(config.input, "harmonize"))
    if config.embedding is not None:
        require_scanpy()
    _check_outputs(config)
    return maps, sets


def _check_outputs(config: HarmonizeConfig) -> None:
    """The output and the report, refused before any work: each names a file whose directory
    exists, neither is the input or the other, and the output is new unless ``overwrite``."""
    out = config.out
    format_of(out)
    check_new_output(out, overwrite=config.overwrite)
    if _same_file(out, config.input):
        raise UsageError(f"out {out} is the input; write the harmonized file elsewhere")
    report = config.report
    if report is None:
        return
    for other, what in ((out, "out"), (config.input, "the input")):
        if _same_file(report, other):
            raise UsageError(f"report {report} is {what}; give the report its own file")
    check_file_output(report, overwrite=config.overwrite, field="report", example="report.json")


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _known(field: str, allowed: tuple[str, ...], option: str) -> None:
    if field not in allowed:
        close = difflib.get_close_matches(field, allowed, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UsageError(f"{option}: unknown field {field!r}{hint}; fields: {', '.join(allowed)}")
