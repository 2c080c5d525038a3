"""`validate`: does an AnnData slice (.h5ad, .zarr, zipped .zarr) meet the CELLxGENE rules a corpus needs?

Rules and where they come from
------------------------------
* CELLxGENE dataset schema 7.1.0 — the ``schema_definition.yaml`` that cellxgene-schema 7.1.2 ships
  — with the ontology releases cellxgene-ontology-guide pins to it
  (:data:`atlasprep.ontology.SCHEMA_VERSION`; the report lists every release). Required obs columns;
  each ``*_ontology_term_id`` a live (not deprecated) term of the right ontology and branch, where
  the branch can depend on the organism and on ``tissue_type`` (:class:`_TermRule` holds one such
  rule as data); ``suspension_type`` as the assay allows; label columns (``cell_type`` …) equal to
  the labels of their IDs; one organism per dataset, in ``uns`` since schema 6.0.0.
* Genes: var names are Ensembl gene IDs without version suffix, of the dataset's organism
  (``ENSG`` human, ``ENSMUSG`` mouse) and present in atlasprep's GENCODE table (v48 / vM37), or
  ERCC spike-ins; obs names and var names unique.
* Counts (``raw.X`` when present, else ``X``): whole, non-negative numbers, and every cell with at
  least one nonzero count. The matrix is streamed in slices of its stored values (sparse) or rows
  (dense), never loaded whole.
* ``profile="hca"`` adds the HCA Tier 1 fields (see :data:`HCA_OBS`): required, non-empty, and
  ``cell_enrichment`` a list of ``CL:nnnnnnn+``/``-`` or "na". The HCA validator wants the organism
  in obs, so that profile requires the obs column and accepts ``uns`` only as a consistent extra.
  Values outside the enumerations of hca-validation-tools' ``hca_schema_definition.yaml`` (HCA
  anndata schema 1.0.0) are warnings: the HCA Tier 1 text states no such lists.

Problems are what breaks a corpus or misstates a cell; warnings are schema points CELLxGENE
would still reject (deprecated and reserved columns, dtype, layout) that atlasprep reads through.
A required column that is missing but whose deprecated predecessor is present
(``ethnicity_ontology_term_id``) is a problem, and the predecessor's values are checked under the
new column's rules and reported under the predecessor's name.

Every check runs once per distinct value (or combination of values, such as a tissue and its
``tissue_type``) and then counts cells by value, so a million-cell obs costs a few group-bys.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

import h5py
import numpy as np
import numpy.typing as npt
import pandas as pd
import zarr
from anndata.io import read_elem

from atlasprep.errors import AtlasprepError, InputFormatError, SourceError, UsageError
from atlasprep.ontology import SCHEMA_VERSION, get_parser, ontology_versions
from atlasprep.reference import gene_table
from atlasprep.sources.anndata import _read_frame  # also reads the legacy structured-array encoding

__all__ = ["HCA_OBS", "HCA_UNS", "REQUIRED_OBS", "Problem", "Profile", "ValidationReport", "validate_anndata"]

log = logging.getLogger("atlasprep.harmonize")

Profile = Literal["cellxgene", "hca"]

N_EXAMPLES = 3
_CHUNK_VALUES = 1 << 21  # stored matrix values per read (~8 MB of float32 data, plus indices)

REQUIRED_OBS: tuple[str, ...] = (
    "assay_ontology_term_id",
    "cell_type_ontology_term_id",
    "development_stage_ontology_term_id",
    "disease_ontology_term_id",
    "self_reported_ethnicity_ontology_term_id",
    "sex_ontology_term_id",
    "tissue_ontology_term_id",
    "tissue_type",
    "is_primary_data",
    "donor_id",
    "suspension_type",
)
HCA_OBS: tuple[str, ...] = (
    "sample_id",
    "library_id",
    "institute",
    "library_preparation_batch",
    "library_sequencing_run",
    "alignment_software",
    "manner_of_death",
    "sample_source",
    "sample_collection_method",
    "sampled_site_condition",
    "sample_preservation_method",
    "sequenced_fragment",
    "reference_genome",
    "cell_enrichment",
    "gene_annotation_version",
)
HCA_UNS: tuple[str, ...] = ("study_pi", "description", "contact_email")
# hca-validation-tools, hca_schema_definition.yaml (HCA anndata schema 1.0.0)
_HCA_ENUMS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "manner_of_death": ("0", "1", "2", "3", "4", "unknown", "not applicable"),
        "sample_source": ("surgical donor", "postmortem donor", "living organ donor"),
        "sample_collection_method": (
            *("brush", "scraping", "biopsy", "surgical resection", "blood draw", "body fluid", "other"),
        ),
        "sampled_site_condition": ("healthy", "diseased", "adjacent"),
        "sample_preservation_method": (
            *("fresh", "ambient temperature", "cut slide", "paraffin block", "frozen at -70C"),
            *("frozen at -80C", "frozen at -150C", "frozen in liquid nitrogen", "frozen in vapor phase"),
            *("RNAlater at 4C", "RNAlater at 25C", "RNAlater at -20C", "other"),
        ),
        "sequenced_fragment": ("3 prime tag", "5 prime tag", "full length", "probe-based"),
        "reference_genome": ("GRCh38", "GRCh37", "GRCm39", "GRCm38", "GRCm37", "not applicable"),
    }
)
_GENE_ANNOTATION_VERSION = re.compile(r"^(v(7[5-9]|[89]\d|10\d|11[01])|GCF_000001405\.(2[5-9]|3\d|40))$")
_ENRICHMENT_ITEM = re.compile(r"^CL:\d{7}[+-]$")

TISSUE_TYPES = ("tissue", "organoid", "primary cell culture", "cell line")
SUSPENSION_TYPES = ("cell", "nucleus", "na")
_CELL_LINE = "cell line"
# label column CELLxGENE derives -> the ID column it comes from
LABEL_COLUMNS: Mapping[str, str] = MappingProxyType(
    {
        name: f"{name}_ontology_term_id"
        for name in (
            "assay",
            "cell_type",
            "development_stage",
            "disease",
            "self_reported_ethnicity",
            "sex",
            "tissue",
        )
    }
)
_UNS_ORGANISM = "uns['organism_ontology_term_id']"
# deprecated obs column -> what replaced it (the organism columns: see _check_organism)
_DEPRECATED_OBS: Mapping[str, str] = MappingProxyType(
    {
        "ethnicity_ontology_term_id": "renamed self_reported_ethnicity_ontology_term_id",
        "ethnicity": "renamed self_reported_ethnicity",
    }
)
_ORGANISM_OBS = ("organism_ontology_term_id", "organism")
# required column -> the deprecated column that held its values
_PREDECESSORS: Mapping[str, str] = MappingProxyType(
    {"self_reported_ethnicity_ontology_term_id": "ethnicity_ontology_term_id"}
)
_RESERVED_OBS = ("observation_joinid", "experimental_condition", "perturbation_types", *LABEL_COLUMNS)
_RESERVED_VAR = ("feature_name", "feature_reference", "feature_biotype", "feature_length", "feature_type")
_DEPRECATED_UNS = (
    *("X_normalization", "default_field", "layer_descriptions", "tags", "version", "contributors"),
    *("preprint_doi", "project_description", "project_links", "project_name", "publication_doi"),
)

# --- organisms: schema 7.1.0 accepts these taxa (and strains / subspecies of the second group) ---
HUMAN, MOUSE = "NCBITaxon:9606", "NCBITaxon:10090"
ORGANISMS: Mapping[str, str] = MappingProxyType(
    {
        HUMAN: "Homo sapiens",
        MOUSE: "Mus musculus",
        "NCBITaxon:7227": "Drosophila melanogaster",
        "NCBITaxon:7955": "Danio rerio",
        "NCBITaxon:6239": "Caenorhabditis elegans",
        "NCBITaxon:9541": "Macaca fascicularis",
        "NCBITaxon:9986": "Oryctolagus cuniculus",
        "NCBITaxon:9483": "Callithrix jacchus",
        "NCBITaxon:9595": "Gorilla gorilla gorilla",
        "NCBITaxon:9544": "Macaca mulatta",
        "NCBITaxon:9598": "Pan troglodytes",
        "NCBITaxon:9823": "Sus scrofa",
        "NCBITaxon:30608": "Microcebus murinus",
        "NCBITaxon:10116": "Rattus norvegicus",
    }
)
_WITH_DESCENDANTS: tuple[str, ...] = (
    *("NCBITaxon:9541", "NCBITaxon:9544", MOUSE, "NCBITaxon:9986", "NCBITaxon:9598"),
    *("NCBITaxon:10116", "NCBITaxon:9823"),
)
_FORBIDDEN_TAXA = ("NCBITaxon:2697049", "NCBITaxon:32630")
# species -> (atlasprep gene table, Ensembl gene ID prefix)
_GENES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {HUMAN: ("homo_sapiens", "ENSG"), MOUSE: ("mus_musculus", "ENSMUSG")}
)
# species -> (development stage ontology, below these, or exactly these, but not these)
_STAGES: Mapping[str, tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = MappingProxyType(
    {
        HUMAN: ("HsapDv", ("HsapDv:0000001",), (), ()),
        MOUSE: ("MmusDv", ("MmusDv:0000001",), (), ()),
        "NCBITaxon:7955": ("ZFS", ("ZFS:0100000",), (), ("ZFS:0000000",)),
        "NCBITaxon:7227": ("FBdv", ("FBdv:00007014", "FBdv:00005259"), (), ("FBdv:00007012",)),
        "NCBITaxon:6239": ("WBls", ("WBls:0000803", "WBls:0000804"), ("WBls:0000669",), ()),
    }
)
_OTHER_STAGES = ("UBERON", ("UBERON:0000105",), (), ("UBERON:0000071",))
# non-mammal species -> (anatomy ontology, its cell root, its anatomy root), allowed beside CL / UBERON
_ANATOMY: Mapping[str, tuple[str, str, str]] = MappingProxyType(
    {
        "NCBITaxon:7955": ("ZFA", "ZFA:0009000", "ZFA:0100000"),
        "NCBITaxon:7227": ("FBbt", "FBbt:00007002", "FBbt:10000000"),
        "NCBITaxon:6239": ("WBbt", "WBbt:0004017", "WBbt:0005766"),
    }
)
_FORBIDDEN_CELL_TYPES = ("CL:0000255", "CL:0000257", "CL:0000548")
# assay -> suspension_type, first match wins: (values, assays and their descendants, exact assays)
_SUSPENSION_BY_ASSAY: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    (
        ("cell", "nucleus"),
        ("EFO:0030080", "EFO:0010184", "EFO:0010010", "EFO:0009919"),
        (
            *("EFO:0008722", "EFO:0008780", "EFO:0700010", "EFO:0700011", "EFO:0030060"),
            *("EFO:0022490", "EFO:0030028"),
        ),
    ),
    (("nucleus",), ("EFO:0007045", "EFO:0002761"), ("EFO:0008720", "EFO:0030026")),
    (
        ("cell",),
        ("EFO:0008919", "EFO:0008853", "EFO:0008953"),
        ("EFO:0030002", "EFO:0008796", "EFO:0700003", "EFO:0700004", "EFO:0008679", "EFO:0008877"),
    ),
    (("na",), ("EFO:0008994",), ("EFO:0008992",)),
)

_CURIE = re.compile(r"^([A-Za-z][A-Za-z0-9]*)[:_][A-Za-z0-9]+$")
_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{11}$")
_ENSEMBL_VERSIONED = re.compile(r"^ENS[A-Z]*G\d{11}\.\d+(_PAR_Y)?$")
_ERCC = re.compile(r"^ERCC-\d{5}$")


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: where (``column``: an obs column, ``var_names``, ``raw.X``, ``uns['key']`` …),
    what is wrong, how many cells it touches, and up to three offending values or obs names."""

    column: str
    what: str
    n_cells: int
    examples: tuple[str, ...] = ()

    def __str__(self) -> str:
        shown = f" (e.g. {', '.join(self.examples)})" if self.examples else ""
        cells = "cell" if self.n_cells == 1 else "cells"
        return f"{self.column}: {self.what} — {self.n_cells:,} {cells}{shown}"

    def to_json(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "what": self.what,
            "n_cells": self.n_cells,
            "examples": list(self.examples),
        }


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """What :func:`validate_anndata` found, and the rule set (schema, ontology and gene releases) it used."""

    path: Path
    profile: Profile
    schema_version: str
    ontology_versions: dict[str, str]
    problems: tuple[Problem, ...]
    warnings: tuple[Problem, ...]
    n_cells: int
    n_genes: int
    references: dict[str, str] = field(default_factory=dict)  # gene table, ASCT+B table

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "profile": self.profile,
            "ok": self.ok,
            "schema_version": self.schema_version,
            "ontology_versions": dict(self.ontology_versions),
            "references": dict(self.references),
            "n_cells": self.n_cells,
            "n_genes": self.n_genes,
            "problems": [p.to_json() for p in self.problems],
            "warnings": [w.to_json() for w in self.warnings],
        }


class _Found:
    """Findings as they come, merged by (column, what): cell counts add up, examples collect."""

    def __init__(self) -> None:
        self._found: dict[tuple[str, str], tuple[int, list[str]]] = {}

    def add(self, column: str, what: str, n_cells: int, examples: Iterable[str] = ()) -> None:
        n, shown = self._found.get((column, what), (0, []))
        shown.extend(e for e in examples if e not in shown)
        self._found[(column, what)] = (n + int(n_cells), shown[:N_EXAMPLES])

    def extend(self, found: Iterable[Problem]) -> None:
        for p in found:
            self.add(p.column, p.what, p.n_cells, p.examples)

    def freeze(self) -> tuple[Problem, ...]:
        return tuple(Problem(c, w, n, tuple(e)) for (c, w), (n, e) in self._found.items())


@dataclass(frozen=True, slots=True)
class _Slice:
    """obs, var and uns read whole; the counts matrix left on disk."""

    obs: pd.DataFrame
    var: pd.DataFrame
    raw_var: pd.DataFrame | None
    uns: Mapping[str, Any]
    counts: Any  # h5py / zarr group (sparse) or array (dense)
    counts_name: str  # "raw.X" or "X"


def validate_anndata(
    path: Path, *, profile: Profile = "cellxgene", asctb: Path | None = None
) -> ValidationReport:
    """Check an AnnData file against CELLxGENE schema 7.1.0 (and HCA Tier 1 for ``profile="hca"``).

    ``asctb`` names an HRA ASCT+B table: (tissue, cell type) pairs it does not list become warnings.
    Bad input (no such file, not AnnData) raises :class:`~atlasprep.errors.AtlasprepError`; what the
    file gets wrong is in the report, never raised.
    """
    if profile not in get_args(Profile):
        raise UsageError(f"profile {profile!r}: choose {' or '.join(get_args(Profile))}")
    path = Path(path)
    table = None
    references: dict[str, str] = {}
    if asctb is not None:
        from atlasprep.harmonize.asctb import load_asctb  # asctb imports Problem from here

        table = load_asctb(Path(asctb))
        references["asctb"] = table.name
    problems, warnings = _Found(), _Found()
    with _opened(path) as handle:
        try:
            part = _read_slice(handle, path)
        except AtlasprepError:
            raise
        except Exception as exc:  # anndata, h5py and zarr raise many kinds on a damaged store
            raise InputFormatError(f"{path}: cannot read it as AnnData ({exc})") from None
        n = len(part.obs)
        organism = _check_organism(part, profile, problems, warnings)
        _check_obs(part.obs, organism, problems, warnings)
        if profile == "hca":
            _check_hca(part.obs, part.uns, problems, warnings)
        _check_frames(part, problems, warnings)
        gene_flags, annotation = _check_genes(part.var.index, organism, n, warnings)
        if annotation:
            references["genes"] = annotation
        _check_counts(part, gene_flags, problems, warnings)
    if table is not None:
        from atlasprep.harmonize.asctb import check_cell_types

        cols = ("tissue_ontology_term_id", "cell_type_ontology_term_id")
        if all(c in part.obs for c in cols):
            warnings.extend(check_cell_types(table, part.obs[cols[0]], part.obs[cols[1]]))
    report = ValidationReport(
        path=path,
        profile=profile,
        schema_version=SCHEMA_VERSION,
        ontology_versions=ontology_versions(),
        problems=problems.freeze(),
        warnings=warnings.freeze(),
        n_cells=n,
        n_genes=len(part.var),
        references=references,
    )
    log.info("validate %s: %d problem(s), %d warning(s)", path, len(report.problems), len(report.warnings))
    return report


# --- reading ---


@contextmanager
def _opened(path: Path) -> Iterator[Any]:
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory")
    store = None
    try:
        if path.is_file() and h5py.is_hdf5(path):
            handle: Any = h5py.File(path, "r")
        elif path.suffix == ".zip":
            store = zarr.storage.ZipStore(path, mode="r")
            handle = zarr.open_group(store, mode="r")
        else:
            handle = zarr.open_group(path, mode="r")
    except Exception as exc:  # h5py and zarr raise many types for a file that is neither
        if store is not None:
            store.close()
        raise SourceError(f"{path}: cannot open it as an h5ad or zarr AnnData store ({exc})") from None
    try:
        yield handle
    finally:
        if isinstance(handle, h5py.File):
            handle.close()
        if store is not None:
            store.close()


def _read_slice(handle: Any, path: Path) -> _Slice:
    missing = [key for key in ("obs", "var", "X") if key not in handle]
    if missing:
        raise InputFormatError(f"{path}: not an AnnData store (no {', '.join(missing)})")
    raw = "raw" in handle and "X" in handle["raw"]
    obs = _read_frame(handle["obs"])
    var = _read_frame(handle["var"])
    obs.index, var.index = obs.index.astype(str), var.index.astype(str)
    raw_var = None
    if raw and "var" in handle["raw"]:
        raw_var = _read_frame(handle["raw/var"])
        raw_var.index = raw_var.index.astype(str)
    uns = read_elem(handle["uns"]) if "uns" in handle else {}
    return _Slice(
        obs=obs,
        var=var,
        raw_var=raw_var,
        uns=uns if isinstance(uns, Mapping) else {},
        counts=handle["raw/X" if raw else "X"],
        counts_name="raw.X" if raw else "X",
    )


# --- distinct values ---


def _tally(obs: pd.DataFrame, columns: Sequence[str]) -> Iterator[tuple[tuple[Any, ...], int]]:
    """Each distinct combination of values in ``columns`` (missing values included), with its cells."""
    sizes = obs.groupby(list(columns), observed=True, dropna=False, sort=False).size()
    for key, n in sizes.items():
        yield (key if isinstance(key, tuple) else (key,)), int(n)


def _blank(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or bool(np.all(pd.isna(value)))


def _check_missing(obs: pd.DataFrame, column: str, problems: _Found, what: str = "") -> None:
    """Cells whose value is missing or blank."""
    values = obs[column]
    distinct = pd.unique(values.dropna())
    blanks = [v for v in distinct if _blank(v)]
    mask = values.isna().to_numpy() | values.isin(blanks).to_numpy()
    if mask.any():
        names = obs.index[mask][:N_EXAMPLES]
        problems.add(column, what or "has no value for some cells", int(mask.sum()), names)


# --- ontology terms ---


@dataclass(frozen=True, slots=True)
class _TermRule:
    """What one ID column accepts in one context (organism, tissue_type), as cellxgene-schema states it.

    A term is allowed when it is in ``exact`` or strictly below one of ``under`` (is_a / part_of);
    with neither given, any live term of ``ontologies`` is.
    """

    ontologies: tuple[str, ...]
    exact: tuple[str, ...] = ()
    under: tuple[str, ...] = ()
    forbidden: tuple[str, ...] = ()
    forbidden_under: tuple[str, ...] = ()
    exceptions: tuple[str, ...] = ()  # schema literals such as "unknown", "na"
    multi: bool = False  # several terms, sorted, joined by " || "
    multi_ontologies: tuple[str, ...] = ()  # if set, only these may be joined
    context: str = ""

    @property
    def describe(self) -> str:
        kinds, exact = [], [t for t in self.exact if t not in self.under]
        if exact:
            kinds.append(", ".join(exact))
        if self.under:
            roots = " or ".join(("at or below " if u in self.exact else "below ") + u for u in self.under)
            kinds.append(f"{'/'.join(self.ontologies)} terms {roots}")
        elif not self.exact and self.ontologies:
            kinds.append(f"any {'/'.join(self.ontologies)} term")
        text = " or ".join(kinds)
        if self.forbidden:
            text += f" except {', '.join(self.forbidden)}"
        if self.multi:
            text += f" (several {'/'.join(self.multi_ontologies or self.ontologies)} terms: sorted, ' || ')"
        text = " or ".join([t for t in (text, *(repr(e) for e in self.exceptions)) if t])
        return f"{text} ({self.context})" if self.context else text


@functools.cache
def _ontology_of(prefix: str) -> str | None:
    """The shipped ontology holding terms with this prefix (AfPO terms live in HANCESTRO)."""
    schema = get_parser().cxg_schema
    if prefix in schema.supported_ontologies:
        return prefix
    found = schema.imported_ontologies.get(prefix)
    return str(found) if found else None


def _term_meta(term: str) -> tuple[str, Mapping[str, Any] | None]:
    """(the ontology with its release, the term's metadata or None if the release lacks it)."""
    ontology = _ontology_of(_prefix(term))
    if ontology is None:
        return "no shipped ontology", None
    info = get_parser().cxg_schema
    release = f"{ontology} {info.supported_ontologies[ontology]['version']}"
    return release, info.ontology(ontology).get(term)


@functools.cache
def _verdict(value: str, rule: _TermRule) -> str | None:
    """Why ``value`` breaks ``rule``, or None when it is allowed."""
    if value in rule.exceptions:
        return None
    parts = value.split(" || ") if rule.multi else [value]
    if len(parts) > 1:
        if parts != sorted(set(parts)):
            return f"several terms must be sorted, unique and joined by ' || '; allowed: {rule.describe}"
        if rule.multi_ontologies and any(_prefix(p) not in rule.multi_ontologies for p in parts):
            return f"only {'/'.join(rule.multi_ontologies)} terms may be joined; allowed: {rule.describe}"
    for part in parts:
        reason = _term_verdict(part, rule)
        if reason is not None:
            return reason
    return None


def _prefix(term: str) -> str:
    match = _CURIE.match(term)
    return match.group(1) if match else ""


def _term_verdict(term: str, rule: _TermRule) -> str | None:
    if not _CURIE.match(term):
        return f"not an ontology term ID nor an allowed value; allowed: {rule.describe}"
    if _prefix(term) not in rule.ontologies:
        return f"a term of the wrong ontology; allowed: {rule.describe}"
    release, meta = _term_meta(term)
    if meta is None:
        return f"not a term of {release}"
    if meta.get("deprecated"):
        return f"deprecated in {release}; use a live term"
    ancestors = meta.get("ancestors") or {}
    if term in rule.forbidden or any(a == term or a in ancestors for a in rule.forbidden_under):
        return f"a term the schema forbids here; allowed: {rule.describe}"
    if (rule.exact or rule.under) and term not in rule.exact and not any(a in ancestors for a in rule.under):
        return f"outside the allowed branch; allowed: {rule.describe}"
    return None


def _organism_note(species: str | None) -> str:
    return f"organism {species}, {ORGANISMS.get(species, species)}" if species else "an unknown organism"


def _cell_ontologies(species: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(ontologies, roots) of cell types: CL, plus the species' own anatomy ontology for fish, fly, worm."""
    anatomy = _ANATOMY.get(species or "")
    return (("CL", anatomy[0]), ("CL:0000000", anatomy[1])) if anatomy else (("CL",), ("CL:0000000",))


@functools.cache
def _cell_type_rule(tissue_type: str, species: str | None) -> _TermRule:
    ontologies, under = _cell_ontologies(species)
    exceptions = ("unknown", "na") if tissue_type == _CELL_LINE else ("unknown",)
    return _TermRule(ontologies, ("CL:0000000",), under, _FORBIDDEN_CELL_TYPES, exceptions=exceptions)


@functools.cache
def _tissue_rule(tissue_type: str, species: str | None) -> _TermRule:
    if tissue_type == _CELL_LINE:
        return _TermRule(("CVCL",), context="tissue_type 'cell line'")
    if tissue_type == "primary cell culture":
        cells, roots = _cell_ontologies(species)
        return _TermRule(
            cells, (), roots, _FORBIDDEN_CELL_TYPES, exceptions=("unknown",), context=f"{tissue_type=}"
        )
    anatomy = _ANATOMY.get(species or "")
    ontologies: tuple[str, ...] = ("UBERON", anatomy[0]) if anatomy else ("UBERON",)
    under: tuple[str, ...] = ("UBERON:0001062", anatomy[2]) if anatomy else ("UBERON:0001062",)
    not_under: tuple[str, ...] = (anatomy[1],) if anatomy else ()
    forbidden = ("UBERON:0000922",) if tissue_type == "organoid" else ()
    context = (
        f"{tissue_type=}"
        if tissue_type in TISSUE_TYPES
        else f"tissue_type {tissue_type!r} is no schema value, checked as 'tissue'"
    )
    return _TermRule(ontologies, (), under, forbidden, not_under, context=context)


@functools.cache
def _stage_rule(tissue_type: str, species: str | None) -> _TermRule:
    if tissue_type == _CELL_LINE:
        return _TermRule((), exceptions=("na",), context="tissue_type 'cell line'")
    ontology, under, exact, forbidden = _STAGES.get(species or "", _OTHER_STAGES)
    return _TermRule(
        (ontology,), exact, under, forbidden, exceptions=("unknown",), context=_organism_note(species)
    )


@functools.cache
def _ethnicity_rule(tissue_type: str, species: str | None) -> _TermRule:
    if tissue_type == _CELL_LINE:
        return _TermRule((), exceptions=("na",), context="tissue_type 'cell line'")
    if species != HUMAN:
        return _TermRule((), exceptions=("na",), context=_organism_note(species))
    return _TermRule(
        ("HANCESTRO", "AfPO"),
        under=("HANCESTRO:0601", "HANCESTRO:0602"),
        exceptions=("unknown",),
        multi=True,
        context=_organism_note(species),
    )


@functools.cache
def _sex_rule(tissue_type: str, species: str | None) -> _TermRule:
    if tissue_type == _CELL_LINE:
        return _TermRule((), exceptions=("na",), context="tissue_type 'cell line'")
    worm = species == "NCBITaxon:6239"
    exact = ("PATO:0000384", "PATO:0001340") if worm else ("PATO:0000383", "PATO:0000384", "PATO:0001340")
    return _TermRule(("PATO",), exact, exceptions=("unknown",))


_ASSAY_RULE = _TermRule(("EFO",), under=("EFO:0002772", "EFO:0010183"))
_DISEASE_RULE = _TermRule(
    ("MONDO", "PATO"),
    ("PATO:0000461", "MONDO:0021178"),
    ("MONDO:0000001", "MONDO:0021178"),
    multi=True,
    multi_ontologies=("MONDO",),
)
_TERM_RULES: Mapping[str, Callable[[str, str | None], _TermRule]] = MappingProxyType(
    {
        "assay_ontology_term_id": lambda tissue_type, species: _ASSAY_RULE,
        "cell_type_ontology_term_id": _cell_type_rule,
        "development_stage_ontology_term_id": _stage_rule,
        "disease_ontology_term_id": lambda tissue_type, species: _DISEASE_RULE,
        "self_reported_ethnicity_ontology_term_id": _ethnicity_rule,
        "sex_ontology_term_id": _sex_rule,
        "tissue_ontology_term_id": _tissue_rule,
    }
)
_BY_ORGANISM = ("development_stage_ontology_term_id", "self_reported_ethnicity_ontology_term_id")


def _check_terms(obs: pd.DataFrame, column: str, species: str | None, problems: _Found) -> None:
    source = column if column in obs else _PREDECESSORS.get(column, "")
    if source not in obs or (species is None and column in _BY_ORGANISM):
        return
    suffix = f" (checked as {column})" if source != column else ""
    by = [source, "tissue_type"] if "tissue_type" in obs else [source]
    for values, n in _tally(obs, by):
        value, tissue_type = values[0], (values[1] if len(values) > 1 else "tissue")
        if _blank(value):
            continue  # counted by _check_missing
        reason = _verdict(str(value), _TERM_RULES[column](str(tissue_type), species))
        if reason is not None:
            problems.add(source, reason + suffix, n, (str(value),))


# --- obs ---


def _check_obs(obs: pd.DataFrame, species: str | None, problems: _Found, warnings: _Found) -> None:
    n = len(obs)
    for column in REQUIRED_OBS:
        if column in obs:
            _check_missing(obs, column, problems)
            continue
        old = _PREDECESSORS.get(column)
        hint = f"; the deprecated {old} holds its values: rename it" if old in obs else ""
        problems.add(column, f"required column is missing{hint}", n)
    for column, note in _DEPRECATED_OBS.items():
        if column in obs:
            warnings.add(column, f"deprecated obs column: {note}", n)
    for column in _TERM_RULES:
        _check_terms(obs, column, species, problems)
    _check_enums(obs, problems)
    _check_labels(obs, problems)
    dup = obs.index.duplicated(keep=False)
    if dup.any():
        problems.add(
            "obs_names", "obs names repeat: cells must be unique", int(dup.sum()), obs.index[dup].unique()
        )
    reserved = [c for c in _RESERVED_OBS if c in obs]
    if reserved:
        what = "reserved columns: CELLxGENE writes them from the IDs (drop them before submitting)"
        warnings.add("obs", what, n, reserved)


def _check_enums(obs: pd.DataFrame, problems: _Found) -> None:
    """tissue_type, suspension_type (by assay), donor_id (by tissue_type), is_primary_data."""
    if "tissue_type" in obs:
        for (value,), n in _tally(obs, ["tissue_type"]):
            if not _blank(value) and value not in TISSUE_TYPES:
                problems.add("tissue_type", f"not one of {', '.join(TISSUE_TYPES)}", n, (str(value),))
    if "suspension_type" in obs:
        by = (
            ["suspension_type", "assay_ontology_term_id"]
            if "assay_ontology_term_id" in obs
            else ["suspension_type"]
        )
        for values, n in _tally(obs, by):
            reason = _suspension_verdict(values[0], values[1] if len(values) > 1 else None)
            if reason is not None:
                problems.add("suspension_type", reason, n, (str(values[0]),))
    if "donor_id" in obs:
        by = ["donor_id", "tissue_type"] if "tissue_type" in obs else ["donor_id"]
        for values, n in _tally(obs, by):
            cell_line = len(values) > 1 and values[1] == _CELL_LINE
            if not _blank(values[0]) and (values[0] == "na") != cell_line:
                what = "must be 'na' for tissue_type 'cell line'" if cell_line else "'na' only for cell lines"
                problems.add("donor_id", what, n, (str(values[0]),))
    column = obs.get("is_primary_data")
    if column is not None and not pd.api.types.is_bool_dtype(column):
        shown = [str(v) for v in pd.unique(column)[:N_EXAMPLES]]
        problems.add("is_primary_data", f"must be boolean, not {column.dtype}", len(obs), shown)


def _suspension_verdict(value: Any, assay: Any) -> str | None:
    if _blank(value):
        return None
    if value not in SUSPENSION_TYPES:
        return f"not one of {', '.join(SUSPENSION_TYPES)}"
    if assay is None or _blank(assay):
        return None
    allowed = _suspension_for(str(assay))
    if allowed is None or value in allowed:
        return None
    return f"not allowed for assay {assay}: it takes {' or '.join(allowed)}"


@functools.cache
def _suspension_for(assay: str) -> tuple[str, ...] | None:
    """The suspension types the schema's table allows for ``assay`` (None: the table has no row)."""
    _, meta = _term_meta(assay) if _CURIE.match(assay) else ("", None)
    if meta is None:
        return None
    lineage = {assay, *(meta.get("ancestors") or {})}
    for values, below, exact in _SUSPENSION_BY_ASSAY:
        if assay in exact or lineage.intersection(below):
            return values
    return None


def _check_labels(obs: pd.DataFrame, problems: _Found) -> None:
    """Label columns (cell_type, tissue …) must equal the labels of their ID columns."""
    for label_column, id_column in LABEL_COLUMNS.items():
        if label_column not in obs or id_column not in obs:
            continue
        for (term, label), n in _tally(obs, [id_column, label_column]):
            expected = None if _blank(term) else _expected_label(str(term))
            if expected is not None and str(label) != expected:
                problems.add(
                    label_column, f"differs from the label of {id_column}", n, (f"{label!r} for {term}",)
                )


@functools.cache
def _expected_label(value: str) -> str | None:
    if value in ("unknown", "na"):
        return value
    labels = []
    for term in value.split(" || "):
        _, meta = _term_meta(term) if _CURIE.match(term) else ("", None)
        if meta is None:
            return None  # an unknown term: reported as such, no label to compare
        labels.append(str(meta.get("label")))
    return " || ".join(labels)


# --- organism ---


def _check_organism(part: _Slice, profile: Profile, problems: _Found, warnings: _Found) -> str | None:
    """The dataset's species (an ORGANISMS key) for the organism-dependent rules, or None."""
    obs, n, column = part.obs, len(part.obs), "organism_ontology_term_id"
    in_uns = part.uns.get(column)
    if in_uns is None and profile == "cellxgene":
        where = f" ({column} sits per cell in obs, a deprecated place)" if column in obs else ""
        problems.add(_UNS_ORGANISM, f"required key is missing: schema 7 keeps the organism in uns{where}", n)
    if column not in obs and profile == "hca":
        problems.add(column, "required column is missing: the HCA validator expects the organism in obs", n)
    if profile == "cellxgene":  # the HCA validator still reads the organism from obs
        for old in _ORGANISM_OBS:
            if old in obs:
                warnings.add(
                    old, "deprecated obs column: schema 7 keeps the dataset's one organism in uns", n
                )
    organism = None
    if in_uns is not None:
        reason = _organism_verdict(str(in_uns))
        if reason is None:
            organism = str(in_uns)
        else:
            problems.add(_UNS_ORGANISM, reason, n, (str(in_uns),))
    if column in obs:
        organism = _check_obs_organism(obs, organism, problems)
    if organism is None:
        organism = _organism_from_genes(part.var.index)
        if organism is None:
            problems.add(_UNS_ORGANISM, "no organism: organism-dependent fields were not checked", n)
    return _species(organism) if organism else None


def _check_obs_organism(obs: pd.DataFrame, organism: str | None, problems: _Found) -> str | None:
    """Check the per-cell organism column; the dataset's organism (uns's, else the most common)."""
    column = "organism_ontology_term_id"
    counts: dict[str, int] = {}
    for (value,), n in _tally(obs, [column]):
        reason = "has no value" if _blank(value) else _organism_verdict(str(value))
        if reason is None:
            counts[str(value)] = n
        else:
            problems.add(column, reason, n, (str(value),))
    if organism is None and counts:
        organism = max(counts, key=counts.__getitem__)
    others = {v: k for v, k in counts.items() if v != organism}
    if others and organism is not None:
        label = ORGANISMS.get(organism, organism)
        what = f"one organism per dataset: these cells name another than {organism} ({label})"
        problems.add(column, what, sum(others.values()), sorted(others, key=others.__getitem__, reverse=True))
    return organism


def _organism_verdict(term: str) -> str | None:
    if term in _FORBIDDEN_TAXA or _species(term) is None:
        return f"not an organism schema {SCHEMA_VERSION} accepts ({', '.join(ORGANISMS)}, or their strains)"
    return None


@functools.cache
def _species(term: str) -> str | None:
    """The accepted taxon ``term`` is, or descends from (a strain or subspecies); None if none."""
    if term in ORGANISMS:
        return term
    if not term.startswith("NCBITaxon:") or term in _FORBIDDEN_TAXA:
        return None
    log.info("%s is not among the usual organisms: loading NCBITaxon (~16 s) to place it", term)
    meta = get_parser().cxg_schema.ontology("NCBITaxon").get(term)
    ancestors = (meta or {}).get("ancestors") or {}
    return next((s for s in _WITH_DESCENDANTS if s in ancestors), None)


def _organism_from_genes(ids: pd.Index) -> str | None:
    """Human or mouse, by the Ensembl prefix most var names carry (None when neither dominates)."""
    n_mouse = int(ids.str.startswith("ENSMUSG").sum())
    n_human = int(ids.str.startswith("ENSG").sum())
    if max(n_human, n_mouse) * 2 <= len(ids):
        return None
    found = HUMAN if n_human > n_mouse else MOUSE
    log.info("no organism recorded: taking %s from the var names' Ensembl prefix", found)
    return found


# --- var / uns ---


def _check_frames(part: _Slice, problems: _Found, warnings: _Found) -> None:
    n = len(part.obs)
    if part.raw_var is not None and not part.raw_var.index.equals(part.var.index):
        problems.add("raw.var_names", "differ from var_names: raw.X and X must hold the same genes", n)
    reserved = [c for c in _RESERVED_VAR if c in part.var]
    if reserved:
        what = "reserved columns: CELLxGENE writes them from the gene IDs (drop them before submitting)"
        warnings.add("var", what, n, reserved)
    deprecated = [k for k in _DEPRECATED_UNS if k in part.uns]
    if deprecated:
        warnings.add("uns", "deprecated keys (schema 7 no longer reads them)", n, deprecated)


_GeneFindings = list[tuple[str, npt.NDArray[np.bool_]]]


def _check_genes(
    ids: pd.Index, species: str | None, n_cells: int, warnings: _Found
) -> tuple[_GeneFindings, str]:
    """Gene-ID findings as (what, mask over var) — their cell counts come from the matrix scan —
    and the gene annotation the IDs were checked against."""
    found: _GeneFindings = []
    dup = np.asarray(ids.duplicated(keep=False))
    if dup.any():
        found.append((f"{int(dup.sum())} var names repeat: genes must be unique", dup))
    spike = np.asarray(ids.str.match(_ERCC.pattern))
    ensembl = np.asarray(ids.str.match(_ENSEMBL.pattern))
    versioned = np.asarray(ids.str.match(_ENSEMBL_VERSIONED.pattern))
    if versioned.any():
        found.append((f"{int(versioned.sum())} Ensembl IDs carry a version suffix (drop '.N')", versioned))
    other = ~(spike | ensembl | versioned)
    if other.any():
        what = "var names are neither Ensembl gene IDs nor ERCC spike-ins (atlasprep harmonize maps symbols)"
        found.append((f"{int(other.sum())} {what}", other))
    if species is None or species not in _GENES:
        warnings.add(
            "var_names", f"no gene table for {_organism_note(species)}: IDs checked for form only", n_cells
        )
        return found, ""
    table = gene_table(_GENES[species][0])
    prefix = _GENES[species][1]
    foreign = ensembl & ~np.asarray(ids.str.startswith(f"{prefix}0"))
    if foreign.any():
        what = f"{int(foreign.sum())} Ensembl IDs are not {ORGANISMS[species]}'s ({prefix}…)"
        found.append((what, foreign))
    unknown = ensembl & ~foreign & ~np.asarray(ids.isin(table.genes.index))
    if unknown.any():
        found.append((f"{int(unknown.sum())} Ensembl IDs are not in {table.annotation}", unknown))
    return found, table.annotation


# --- counts ---


@dataclass(slots=True)
class _Scan:
    """Per-cell flags gathered while the counts stream by (mutable: filled chunk by chunk)."""

    non_integer: npt.NDArray[np.bool_]
    negative: npt.NDArray[np.bool_]
    has_value: npt.NDArray[np.bool_]
    stored_zero: npt.NDArray[np.bool_]  # cells with explicit zeros
    zero_genes: npt.NDArray[np.bool_]
    flagged: npt.NDArray[np.bool_]  # (n_gene_findings, n_cells): cells counting in flagged genes
    n_zeros: int = 0
    n_nonzero: int = 0


def _check_counts(part: _Slice, gene_findings: _GeneFindings, problems: _Found, warnings: _Found) -> None:
    n_cells, n_genes = len(part.obs), len(part.var)
    elem, name = part.counts, part.counts_name
    layout, shape, dtype = _layout(elem)
    if shape != (n_cells, len(part.raw_var) if part.raw_var is not None else n_genes):
        raise InputFormatError(f"{name} has shape {shape}, but obs × var is {n_cells} × {n_genes}")
    aligned = part.raw_var is None or part.raw_var.index.equals(part.var.index)
    masks = [mask for _, mask in gene_findings] if aligned else []
    scan = _scan(elem, layout, shape, masks)
    for i, (what, mask) in enumerate(gene_findings):
        ids = part.var.index[mask][:N_EXAMPLES]
        problems.add("var_names", what, int(scan.flagged[i].sum()) if aligned else n_cells, ids)
    names = part.obs.index
    hint = " (X holds normalized values and there is no raw.X)" if name == "X" else ""
    for mask, what in (
        (scan.non_integer, f"holds non-integer, NaN or infinite values: raw counts are whole numbers{hint}"),
        (scan.negative, "holds negative values: counts are never below 0"),
        (~scan.has_value, "cells without a single nonzero count (CELLxGENE requires one per cell)"),
    ):
        if mask.any():
            problems.add(name, what, int(mask.sum()), names[mask][:N_EXAMPLES])
    if scan.n_zeros:
        genes = part.var.index[scan.zero_genes[: len(part.var)]] if aligned else pd.Index([])
        what = f"stores {scan.n_zeros:,} explicit zeros in {int(scan.zero_genes.sum())} genes"
        warnings.add(name, what, int(scan.stored_zero.sum()), genes[:N_EXAMPLES])
    if dtype != np.float32:
        warnings.add(name, f"stored as {dtype}: CELLxGENE stores counts as float32", n_cells)
    sparse_enough = scan.n_nonzero * 2 < max(shape[0] * shape[1], 1)
    if layout == "csc" or (layout == "dense" and sparse_enough):
        what = f"stored {layout}: CELLxGENE wants CSR for sparse counts, and atlasprep streams CSR rows"
        warnings.add(name, what, n_cells)


def _layout(elem: Any) -> tuple[str, tuple[int, int], np.dtype[Any]]:
    encoding = str(elem.attrs.get("encoding-type", ""))
    if encoding in ("csr_matrix", "csc_matrix"):
        shape = tuple(int(s) for s in elem.attrs["shape"])
        return encoding[:3], (shape[0], shape[1]), np.dtype(elem["data"].dtype)
    if hasattr(elem, "keys") or len(elem.shape) != 2:
        raise InputFormatError(
            f"counts matrix {elem.name} has an encoding atlasprep cannot read ({encoding!r})"
        )
    return "dense", (int(elem.shape[0]), int(elem.shape[1])), np.dtype(elem.dtype)


def _scan(elem: Any, layout: str, shape: tuple[int, int], masks: list[npt.NDArray[np.bool_]]) -> _Scan:
    n_cells, n_genes = shape
    scan = _Scan(
        non_integer=np.zeros(n_cells, bool),
        negative=np.zeros(n_cells, bool),
        has_value=np.zeros(n_cells, bool),
        stored_zero=np.zeros(n_cells, bool),
        zero_genes=np.zeros(n_genes, bool),
        flagged=np.zeros((len(masks), n_cells), bool),
    )
    flags = np.zeros((len(masks), n_genes), bool)
    for i, mask in enumerate(masks):
        flags[i, : len(mask)] = mask[:n_genes]
    if layout == "dense":
        rows_per_read = max(1, _CHUNK_VALUES // max(n_genes, 1))
        for start in range(0, n_cells, rows_per_read):
            block = np.asarray(elem[start : start + rows_per_read])
            rows, cols = np.nonzero(block)  # NaN counts as nonzero
            _mark(scan, rows + start, cols, block[rows, cols], flags, explicit=False)
        return scan
    indptr = np.asarray(elem["indptr"][:], dtype=np.int64)
    data, indices = elem["data"], elem["indices"]
    for start in range(0, int(indptr[-1]), _CHUNK_VALUES):
        stop = min(start + _CHUNK_VALUES, int(indptr[-1]))
        major = np.searchsorted(indptr, np.arange(start, stop), side="right") - 1
        minor = np.asarray(indices[start:stop], dtype=np.int64)
        rows, cols = (major, minor) if layout == "csr" else (minor, major)
        _mark(scan, rows, cols, np.asarray(data[start:stop]), flags, explicit=True)
    return scan


def _mark(
    scan: _Scan,
    rows: npt.NDArray[np.int64],
    cols: npt.NDArray[np.int64],
    values: npt.NDArray[Any],
    flags: npt.NDArray[np.bool_],
    *,
    explicit: bool,
) -> None:
    """Fold one slice of stored values (with their cell and gene) into the scan."""
    if np.issubdtype(values.dtype, np.floating):
        scan.non_integer[rows[~np.isfinite(values) | (values != np.trunc(values))]] = True
    scan.negative[rows[values < 0]] = True
    nonzero = values != 0
    scan.has_value[rows[nonzero]] = True
    scan.n_nonzero += int(nonzero.sum())
    if explicit and not nonzero.all():
        zero = ~nonzero
        scan.stored_zero[rows[zero]] = True
        scan.zero_genes[cols[zero]] = True
        scan.n_zeros += int(zero.sum())
    for i in range(len(flags)):
        scan.flagged[i, rows[nonzero & flags[i, cols]]] = True


# --- HCA Tier 1 ---


def _check_hca(obs: pd.DataFrame, uns: Mapping[str, Any], problems: _Found, warnings: _Found) -> None:
    n = len(obs)
    for column in HCA_OBS:
        if column not in obs:
            problems.add(column, "required HCA Tier 1 column is missing", n)
        else:
            _check_missing(obs, column, problems, "HCA Tier 1 field without a value for some cells")
    for key in HCA_UNS:
        value = uns.get(key)
        if value is None or np.size(value) == 0 or _blank(value):
            problems.add(f"uns['{key}']", "required HCA Tier 1 key is missing or empty", n)
    if "cell_enrichment" in obs:
        for (value,), k in _tally(obs, ["cell_enrichment"]):
            reason = None if _blank(value) else _enrichment_verdict(str(value))
            if reason is not None:
                problems.add("cell_enrichment", reason, k, (str(value),))
    for column, allowed in _HCA_ENUMS.items():
        if column in obs:
            for (value,), k in _tally(obs, [column]):
                if not _blank(value) and str(value) not in allowed:
                    what = f"not a value hca-validation-tools accepts ({', '.join(allowed)})"
                    warnings.add(column, what, k, (str(value),))
    if "gene_annotation_version" in obs:
        for (value,), k in _tally(obs, ["gene_annotation_version"]):
            if not _blank(value) and not _GENE_ANNOTATION_VERSION.match(str(value)):
                what = (
                    "not an Ensembl release v75–v111 nor a RefSeq GCF_000001405.25–40 (hca-validation-tools)"
                )
                warnings.add("gene_annotation_version", what, k, (str(value),))


def _enrichment_verdict(value: str) -> str | None:
    """``na``, or comma-separated CL terms each followed by + (enriched) or - (depleted)."""
    if value == "na":
        return None
    items = [item.strip() for item in value.split(",")]
    if not all(_ENRICHMENT_ITEM.match(item) for item in items):
        return "must be 'na' or CL terms each followed by '+' or '-' (e.g. 'CL:0000236+,CL:0000084-')"
    for item in items:
        release, meta = _term_meta(item[:-1])
        if meta is None or meta.get("deprecated"):
            return f"names a CL term that is not a live term of {release}"
    return None
