"""Free-text metadata values to CELLxGENE ontology terms, each mapping graded by how it was made.

For every distinct value of a source column (never per cell), in this order:

1. ``table``: the user's mapping file (column, value, term_id) — it always wins;
2. ``unknown``: the schema's own "unknown" (or "na") for fields that allow it, for empty values;
3. the ontology resolution `atlasprep terms` uses: ``id`` (a term ID, any case), ``label``,
   ``synonym``, ``alias`` (atlasprep's curated everyday names) or ``normalized`` (case,
   punctuation, plurals, "CD14+" → "CD14-positive").

A value that resolves to no term, or to several, stays unmapped, with the closest labels as
suggestions; it is never guessed. Terms must come from the field's ontologies (cell_type: CL,
tissue: UBERON, disease: MONDO or PATO "normal", …), so a UBERON hit for a cell type is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import pandas as pd

from atlasprep.errors import AmbiguousTermError, InputFormatError, UnknownTermError, UsageError
from atlasprep.harmonize._term_rules import TERM_RULES, TermRule, verdict
from atlasprep.ontology import FIELD_ONTOLOGIES, resolve_term, suggest, term_label
from atlasprep.ontology.resolve import prime_suggestions, suggests

__all__ = [
    "ORGANISM_TERMS",
    "TERM_FIELDS",
    "Grade",
    "LabelMapping",
    "load_mapping_table",
    "map_values",
    "organism_key",
]

Grade = Literal["table", "set", "unknown", "id", "label", "synonym", "alias", "normalized"]

# fields harmonize maps to terms -> their ontologies (development_stage depends on the organism)
TERM_FIELDS: tuple[str, ...] = (
    "cell_type",
    "tissue",
    "disease",
    "assay",
    "development_stage",
    "sex",
    "self_reported_ethnicity",
)
# the schema's value for "not known", where a field allows one
_UNKNOWN: Mapping[str, str] = MappingProxyType(
    {
        "cell_type": "unknown",
        "development_stage": "unknown",
        "sex": "unknown",
        "self_reported_ethnicity": "unknown",
    }
)
_UNKNOWN_SPELLINGS = frozenset({"", "unknown", "nan", "na", "n/a", "none", "unassigned", "not available"})

ORGANISM_TERMS: Mapping[str, str] = MappingProxyType(
    {"homo_sapiens": "NCBITaxon:9606", "mus_musculus": "NCBITaxon:10090"}
)
_ORGANISM_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "homo sapiens": "homo_sapiens",
        "human": "homo_sapiens",
        "ncbitaxon:9606": "homo_sapiens",
        "mus musculus": "mus_musculus",
        "mouse": "mus_musculus",
        "ncbitaxon:10090": "mus_musculus",
    }
)


def organism_key(name: str) -> str:
    """``homo_sapiens`` or ``mus_musculus`` from a name, an NCBITaxon ID or the key itself."""
    key = name.strip().lower().replace("_", " ")
    found = _ORGANISM_NAMES.get(key)
    if found is None:
        raise UsageError(f"organism {name!r}: atlasprep harmonizes Homo sapiens and Mus musculus")
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelMapping:
    """What one distinct source value became."""

    value: str
    term_id: str | None  # None: unmapped
    label: str | None
    how: Grade | None
    n_cells: int
    suggestions: tuple[tuple[str, str], ...] = ()  # (label, term ID) for unmapped values
    reason: str = ""  # why it stayed unmapped

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "n_cells": self.n_cells}
        if self.term_id is not None:
            out |= {"term_id": self.term_id, "label": self.label, "how": self.how}
        else:
            suggestions = [{"label": lb, "term_id": t} for lb, t in self.suggestions]
            out |= {"reason": self.reason, "suggestions": suggestions}
        return out


def field_ontologies(field: str, organism: str, tissue_type: str = "tissue") -> tuple[str, ...]:
    if field == "development_stage":
        return ("HsapDv",) if organism == "homo_sapiens" else ("MmusDv",)
    if field == "tissue" and tissue_type == "primary cell culture":  # the cells' type (schema 7)
        return ("CL",)
    return FIELD_ONTOLOGIES[field]


def load_mapping_table(path: Path) -> dict[tuple[str, str], str]:
    """A TSV with columns column, value, term_id: (source column or field, value) -> term ID."""
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputFormatError(f"mapping {path}: cannot read it as TSV ({exc})") from None
    missing = {"column", "value", "term_id"} - set(table.columns)
    if missing:
        raise InputFormatError(
            f"mapping {path}: needs the columns column, value, term_id (missing {', '.join(sorted(missing))})"
        )
    mapped: dict[tuple[str, str], str] = {}
    for row, r in enumerate(table.itertuples(index=False), start=2):  # (line 1: the header)
        key, term = (r.column, r.value), r.term_id.strip()
        if mapped.setdefault(key, term) != term:
            raise InputFormatError(
                f"mapping {path}: line {row} maps {r.column} {r.value!r} to {term}, an earlier line to "
                f"{mapped[key]}; keep one"
            )
    return mapped


@dataclass(frozen=True, slots=True)
class _Field:
    """What a field's values may become: its ontologies, and the schema's rule for its terms
    (for the dataset's organism and tissue_type)."""

    name: str
    organism: str
    ontologies: tuple[str, ...]
    rule: TermRule


def map_values(
    field: str,
    counts: Mapping[str, int],
    *,
    organism: str,
    table: Mapping[str, str] | None = None,
    tissue_type: str = "tissue",
) -> list[LabelMapping]:
    """Map each distinct value (with its cell count) of a column destined for ``field``; a term
    the CELLxGENE schema does not allow in the field (for ``organism`` and the dataset's
    ``tissue_type``) stays unmapped, saying why."""
    if field not in TERM_FIELDS:
        raise UsageError(f"{field!r} is not a term field; harmonize maps {', '.join(TERM_FIELDS)}")
    ontologies = field_ontologies(field, organism, tissue_type)
    rule = TERM_RULES[f"{field}_ontology_term_id"](tissue_type, ORGANISM_TERMS[organism])
    spec = _Field(field, organism, ontologies, rule)
    table = table or {}
    unmatched = [
        part
        for value in map(str, counts)
        if value not in table
        for part in _parts(value, rule)
        if part.strip().lower() not in _UNKNOWN_SPELLINGS and suggests(part, ontologies)
    ]
    prime_suggestions(unmatched, ontologies)  # their fuzzy matches at once, on every core
    return [_map_value(spec, str(v), n, table) for v, n in counts.items()]


def _parts(value: str, rule: TermRule) -> list[str]:
    """A value of a field that takes several terms (disease, ethnicity: ``A || B``) split."""
    return [p.strip() for p in value.split("||")] if rule.multi and "||" in value else [value]


_GRADES: tuple[str, ...] = ("table", "set", "unknown", "id", "label", "synonym", "alias", "normalized")


def _map_value(spec: _Field, value: str, n_cells: int, table: Mapping[str, str]) -> LabelMapping:
    """One value; several terms (``A || B``) each mapped, then joined sorted as the schema wants."""
    parts = _parts(value, spec.rule)
    if value in table or len(parts) == 1:
        return _map_one(spec, value, n_cells, table)
    mapped = [_map_one(spec, part, n_cells, table) for part in parts]
    failed = next((m for m in mapped if m.term_id is None), None)
    if failed is not None:
        return replace(failed, value=value, reason=f"{failed.value!r}: {failed.reason}")
    terms = sorted({str(m.term_id) for m in mapped})
    how = max((m.how for m in mapped if m.how is not None), key=_GRADES.index)  # the weakest
    return _checked(spec, value, " || ".join(terms), how, n_cells)


def _map_one(spec: _Field, value: str, n_cells: int, table: Mapping[str, str]) -> LabelMapping:
    field, ontologies, organism = spec.name, spec.ontologies, spec.organism
    if value in table:
        return _checked(spec, value, table[value], "table", n_cells)
    if value.strip().lower() in _UNKNOWN_SPELLINGS:
        fallback = _UNKNOWN.get(field)
        if field == "self_reported_ethnicity" and organism != "homo_sapiens":
            fallback = "na"
        if fallback is None:
            return LabelMapping(
                value=value, term_id=None, label=None, how=None, n_cells=n_cells,
                reason=f"{field} has no 'unknown' in the CELLxGENE schema; map it with a mapping table",
            )  # fmt: skip
        return LabelMapping(value=value, term_id=fallback, label=fallback, how="unknown", n_cells=n_cells)
    try:
        resolved = resolve_term(value, ontologies)
    except AmbiguousTermError as exc:
        return LabelMapping(
            value=value, term_id=None, label=None, how=None, n_cells=n_cells,
            suggestions=tuple((term_label(t), t) for t in exc.candidates), reason="ambiguous",
        )  # fmt: skip
    except UnknownTermError as exc:  # (its suggestions are suggest()'s, closest first)
        return LabelMapping(
            value=value, term_id=None, label=None, how=None, n_cells=n_cells,
            suggestions=_labelled(exc.suggestions[:3]), reason=str(exc),
        )  # fmt: skip
    return _checked(spec, value, resolved.term_id, resolved.how, n_cells)


def _labelled(term_ids: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """(label, ID) of each term, as ``suggest`` gives them ("" for an ID no shipped ontology
    names, which a deprecated term's replacement can be)."""
    out = []
    for term_id in term_ids:
        try:
            out.append((term_label(term_id), term_id))
        except UnknownTermError:
            out.append(("", term_id))
    return tuple(out)


def _checked(spec: _Field, value: str, term_id: str, how: Grade, n_cells: int) -> LabelMapping:
    """A term (or several, ``A || B``) that must also be one the schema allows in the field (a
    table entry or a resolved name): its rule's verdict, as ``validate`` gives it."""
    problem, terms = "", []
    for part in term_id.split(" || ") if spec.rule.multi else [term_id]:
        if part in ("unknown", "na"):
            terms.append(part)
            continue
        try:
            terms.append(resolve_term(part, spec.ontologies).term_id)
        except (UnknownTermError, AmbiguousTermError) as exc:
            problem = str(exc)
            break
    if not problem:
        term_id = " || ".join(terms)
        reason = verdict(term_id, spec.rule)
        if reason is not None:
            problem = f"{term_id} ({_label_of(term_id)}) is not allowed in {spec.name}: {reason}"
    if problem:
        return LabelMapping(
            value=value, term_id=None, label=None, how=None, n_cells=n_cells, reason=problem,
            suggestions=tuple(suggest(value, spec.ontologies, n=3)),
        )  # fmt: skip
    return LabelMapping(value=value, term_id=term_id, label=_label_of(term_id), how=how, n_cells=n_cells)


def _label_of(term_id: str) -> str:
    if term_id in ("unknown", "na"):
        return term_id
    return " || ".join(term_label(t) for t in term_id.split(" || "))


def value_counts(values: Iterable[Any]) -> dict[str, int]:
    """Distinct values as strings (missing → ""), with their cell counts, most common first."""
    series = pd.Series(list(values) if not isinstance(values, pd.Series) else values, dtype=object)
    counted = series.astype("string").fillna("").value_counts(sort=True)
    return {str(k): int(v) for k, v in counted.items()}
