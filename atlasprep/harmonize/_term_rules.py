"""Ontology-term rules: what each ``*_ontology_term_id`` column accepts (a :class:`TermRule` per
column, organism and ``tissue_type``) and why a value breaks one, judged against the ontology
releases that cellxgene-ontology-guide pins to the schema. Also the derived lookups that need the
ontologies: the suspension types an assay allows, the label an ID should carry, and the accepted
species a taxon is or descends from.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from atlasprep.harmonize._schema_rules import (
    ANATOMY,
    BEAD_SPATIAL,
    CELL_LINE,
    CURIE,
    FORBIDDEN_CELL_TYPES,
    FORBIDDEN_TAXA,
    HUMAN,
    ORGANISMS,
    OTHER_STAGES,
    RAW_ALSO,
    RAW_EXEMPT,
    STAGES,
    SUSPENSION_BY_ASSAY,
    TISSUE_TYPES,
    VISIUM,
    WITH_DESCENDANTS,
)
from atlasprep.ontology import SCHEMA_VERSION, get_parser
from atlasprep.ontology._taxa import taxa_below

log = logging.getLogger("atlasprep.harmonize")


@dataclass(frozen=True, slots=True)
class TermRule:
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
    whole: tuple[str, ...] = ()  # ontologies (as prefixes) whose every live term is allowed
    strip: str = ""  # a prefix a term may carry ("anti-" before a UniProt term), checked without it
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
        if self.whole:
            kinds.append(
                f"any {'/'.join(self.whole)} term" + (f" (also {self.strip}…)" if self.strip else "")
            )
        text = " or ".join(kinds)
        if self.forbidden:
            text += f" except {', '.join(self.forbidden)}"
        if self.multi:
            text += f" (several {'/'.join(self.multi_ontologies or self.ontologies)} terms: sorted, ' || ')"
        text = " or ".join([t for t in (text, *(repr(e) for e in self.exceptions)) if t])
        return f"{text} ({self.context})" if self.context else text


@functools.cache
def _ontology_of(prefix: str) -> str | None:
    """The shipped ontology holding terms with this prefix (AfPO terms live in HANCESTRO; UniProt
    IDs are written ``uniprot:…``)."""
    schema = get_parser().cxg_schema
    if prefix in schema.supported_ontologies:
        return prefix
    if prefix == "uniprot":
        return "UniProt"
    found = schema.imported_ontologies.get(prefix)
    return str(found) if found else None


def term_meta(term: str) -> tuple[str, Mapping[str, Any] | None]:
    """(the ontology with its release, the term's metadata or None if the release lacks it)."""
    ontology = _ontology_of(_prefix(term))
    if ontology is None:
        return "no shipped ontology", None
    info = get_parser().cxg_schema
    release = f"{ontology} {info.supported_ontologies[ontology]['version']}"
    return release, info.ontology(ontology).get(term)


@functools.cache
def verdict(value: str, rule: TermRule) -> str | None:
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


def _curie_meta(value: str) -> Mapping[str, Any] | None:
    """The term's metadata; None when ``value`` is no CURIE or its ontology release lacks it."""
    return term_meta(value)[1] if CURIE.match(value) else None


def _prefix(term: str) -> str:
    match = CURIE.match(term)
    return match.group(1) if match else ""


def _term_verdict(term: str, rule: TermRule) -> str | None:
    if rule.strip and term.startswith(rule.strip):
        term = term.removeprefix(rule.strip)
    if not CURIE.match(term):
        return f"not an ontology term ID nor an allowed value; allowed: {rule.describe}"
    if _prefix(term) not in rule.ontologies:
        return f"a term of the wrong ontology; allowed: {rule.describe}"
    release, meta = term_meta(term)
    if meta is None:
        return f"not a term of {release}"
    if meta.get("deprecated"):
        return f"deprecated in {release}; use a live term"
    ancestors = meta.get("ancestors") or {}
    if term in rule.forbidden or any(a == term or a in ancestors for a in rule.forbidden_under):
        return f"a term the schema forbids here; allowed: {rule.describe}"
    if _prefix(term) in rule.whole:
        return None
    if (rule.exact or rule.under) and term not in rule.exact and not any(a in ancestors for a in rule.under):
        return f"outside the allowed branch; allowed: {rule.describe}"
    return None


def organism_note(species: str | None) -> str:
    return f"organism {species}, {ORGANISMS.get(species, species)}" if species else "an unknown organism"


def _cell_ontologies(species: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(ontologies, roots) of cell types: CL, plus the species' own anatomy ontology for fish, fly, worm."""
    anatomy = ANATOMY.get(species or "")
    return (("CL", anatomy[0]), ("CL:0000000", anatomy[1])) if anatomy else (("CL",), ("CL:0000000",))


@functools.cache
def _cell_type_rule(tissue_type: str, species: str | None) -> TermRule:
    ontologies, under = _cell_ontologies(species)
    exceptions = ("unknown", "na") if tissue_type == CELL_LINE else ("unknown",)
    return TermRule(ontologies, ("CL:0000000",), under, FORBIDDEN_CELL_TYPES, exceptions=exceptions)


@functools.cache
def _tissue_rule(tissue_type: str, species: str | None) -> TermRule:
    if tissue_type == CELL_LINE:
        return TermRule(("CVCL",), context="tissue_type 'cell line'")
    if tissue_type == "primary cell culture":
        cells, roots = _cell_ontologies(species)
        return TermRule(
            cells, (), roots, FORBIDDEN_CELL_TYPES, exceptions=("unknown",), context=f"{tissue_type=}"
        )
    anatomy = ANATOMY.get(species or "")
    ontologies: tuple[str, ...] = ("UBERON", anatomy[0]) if anatomy else ("UBERON",)
    under: tuple[str, ...] = ("UBERON:0001062", anatomy[2]) if anatomy else ("UBERON:0001062",)
    not_under: tuple[str, ...] = (anatomy[1],) if anatomy else ()
    forbidden = ("UBERON:0000922",) if tissue_type == "organoid" else ()
    context = (
        f"{tissue_type=}"
        if tissue_type in TISSUE_TYPES
        else f"tissue_type {tissue_type!r} is no schema value, checked as 'tissue'"
    )
    return TermRule(ontologies, (), under, forbidden, not_under, context=context)


# stage, ethnicity and sex of a cell line: "na" only
_CELL_LINE_RULE = TermRule((), exceptions=("na",), context="tissue_type 'cell line'")


@functools.cache
def _stage_rule(tissue_type: str, species: str | None) -> TermRule:
    if tissue_type == CELL_LINE:
        return _CELL_LINE_RULE
    ontology, under, exact, forbidden = STAGES.get(species or "", OTHER_STAGES)
    return TermRule(
        (ontology,), exact, under, forbidden, exceptions=("unknown",), context=organism_note(species)
    )


@functools.cache
def _ethnicity_rule(tissue_type: str, species: str | None) -> TermRule:
    if tissue_type == CELL_LINE:
        return _CELL_LINE_RULE
    if species != HUMAN:
        return TermRule((), exceptions=("na",), context=organism_note(species))
    return TermRule(
        ("HANCESTRO", "AfPO"),
        under=("HANCESTRO:0601", "HANCESTRO:0602"),
        exceptions=("unknown",),
        multi=True,
        context=organism_note(species),
    )


@functools.cache
def _sex_rule(tissue_type: str, species: str | None) -> TermRule:
    if tissue_type == CELL_LINE:
        return _CELL_LINE_RULE
    worm = species == "NCBITaxon:6239"
    exact = ("PATO:0000384", "PATO:0001340") if worm else ("PATO:0000383", "PATO:0000384", "PATO:0001340")
    return TermRule(("PATO",), exact, exceptions=("unknown",))


_ASSAY_RULE = TermRule(("EFO",), under=("EFO:0002772", "EFO:0010183"))
_DISEASE_RULE = TermRule(
    ("MONDO", "PATO"),
    ("PATO:0000461", "MONDO:0021178"),
    ("MONDO:0000001", "MONDO:0021178"),
    multi=True,
    multi_ontologies=("MONDO",),
)
TERM_RULES: Mapping[str, Callable[[str, str | None], TermRule]] = MappingProxyType(
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


@functools.cache
def suspension_for(assay: str) -> tuple[str, ...] | None:
    """The suspension types the schema's table allows for ``assay`` (None: the table has no row)."""
    meta = _curie_meta(assay)
    if meta is None:
        return None
    lineage = {assay, *(meta.get("ancestors") or {})}
    for values, below, exact in SUSPENSION_BY_ASSAY:
        if assay in exact or lineage.intersection(below):
            return values
    return None


@functools.cache
def expected_label(value: str) -> str | None:
    if value in ("unknown", "na"):
        return value
    labels = []
    for term in value.split(" || "):
        meta = _curie_meta(term)
        if meta is None:
            return None  # an unknown term: reported as such, no label to compare
        labels.append(str(meta.get("label")))
    return " || ".join(labels)


def organism_verdict(term: str) -> str | None:
    if term in FORBIDDEN_TAXA or accepted_species(term) is None:
        return f"not an organism schema {SCHEMA_VERSION} accepts ({', '.join(ORGANISMS)}, or their strains)"
    return None


@functools.cache
def accepted_species(term: str) -> str | None:
    """The accepted taxon ``term`` is, or descends from (a strain or subspecies); None if none."""
    if term in ORGANISMS:
        return term
    if not term.startswith("NCBITaxon:") or term in FORBIDDEN_TAXA:
        return None
    return taxa_below(WITH_DESCENDANTS).get(term)


@functools.cache
def is_spatial_assay(assay: str) -> bool:
    """A descendant of Visium (not the generic term itself) or of bead-based spatial transcriptomics."""
    meta = _curie_meta(assay)
    ancestors = (meta or {}).get("ancestors") or {}
    return VISIUM in ancestors or BEAD_SPATIAL in ancestors


@functools.cache
def below(term: str, ancestor: str) -> bool:
    """``term`` lies strictly below ``ancestor`` (is_a / part_of)."""
    meta = _curie_meta(term)
    return ancestor in ((meta or {}).get("ancestors") or {})


def raw_rules_apply(assays: Iterable[str]) -> bool:
    """Whether the schema's raw-count rules hold for a dataset of these assays: none is ATAC-seq or
    methylation profiling (or below them), or one is below both scATAC-seq and scRNA-seq."""
    lineages = [_lineage(a) for a in assays]
    if not any(lineage.intersection(RAW_EXEMPT) for lineage in lineages):
        return True
    return any(lineage.issuperset(RAW_ALSO) for lineage in lineages)


@functools.cache
def _lineage(term: str) -> frozenset[str]:
    """The term and its ancestors (empty for what is no term of a shipped release)."""
    meta = _curie_meta(term)
    return frozenset() if meta is None else frozenset({term, *(meta.get("ancestors") or {})})
