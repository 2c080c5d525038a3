"""One filter, written once (:class:`CellFilter`), resolved through the ontologies once
(:class:`ResolvedFilter`), and compiled per source (:class:`CompiledFilter`): to a SOMA
``value_filter`` string for the Census and SOMA stores, to a boolean mask over obs for AnnData.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from atlasprep.errors import UnknownTermError
from atlasprep.ontology import FIELD_ONTOLOGIES, FieldName, ResolvedTerm, expand_terms, resolve_term
from atlasprep.sources.where import Expr, parse_where, soma_quote, to_value_filter, where_mask

__all__ = [
    "FILTER_COLUMNS",
    "CellFilter",
    "CompiledFilter",
    "FilterField",
    "ResolvedFilter",
    "compile_filter",
    "resolve_filter",
    "soma_quote",
]

log = logging.getLogger("atlasprep.sources")

FilterField = Literal[FieldName, "dataset_id", "donor_id"]  # ontology fields, and free-text ones

# filter field -> the obs column it constrains (Census / CELLxGENE names, verbatim)
FILTER_COLUMNS: Mapping[str, str] = {
    "cell_type": "cell_type_ontology_term_id",
    "tissue": "tissue_ontology_term_id",
    "tissue_general": "tissue_general_ontology_term_id",
    "assay": "assay_ontology_term_id",
    "disease": "disease_ontology_term_id",
    "sex": "sex_ontology_term_id",
    "development_stage": "development_stage_ontology_term_id",
    "self_reported_ethnicity": "self_reported_ethnicity_ontology_term_id",
    "dataset_id": "dataset_id",
    "donor_id": "donor_id",
}
# fields whose values are free text, matched verbatim (no ontology)
_VERBATIM_FIELDS = frozenset({"dataset_id", "donor_id"})
# CELLxGENE joins several terms of one cell with " || " (sorted), e.g. two diseases
_MULTI_SEPARATOR = " || "
_NON_TERMS = frozenset({"unknown", "na"})
# development stages by organism (CELLxGENE schema: HsapDv for human, MmusDv for mouse, else UBERON)
_STAGE_ONTOLOGIES: Mapping[str, tuple[str, ...]] = {
    "homo_sapiens": ("HsapDv", "UBERON"),
    "mus_musculus": ("MmusDv", "UBERON"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class CellFilter:
    """Which cells to take, as the user said it: labels, synonyms or IDs per field.

    Values within a field are ORed; fields are ANDed. A term matches itself and all its
    descendants unless ``exact``. ``primary_only`` keeps ``is_primary_data == True``.
    ``where`` is a filter in the SOMA value-filter grammar (comparisons of obs columns with
    values, ``in``, ``and``/``or``/``not``; see :mod:`atlasprep.sources.where`) ANDed to the
    rest. It is parsed here, so a filter outside the grammar is refused before any source opens;
    nothing in it is ever evaluated.
    """

    cell_type: tuple[str, ...] = ()
    tissue: tuple[str, ...] = ()
    tissue_general: tuple[str, ...] = ()
    assay: tuple[str, ...] = ()
    disease: tuple[str, ...] = ()
    sex: tuple[str, ...] = ()
    development_stage: tuple[str, ...] = ()
    self_reported_ethnicity: tuple[str, ...] = ()
    dataset_id: tuple[str, ...] = ()
    donor_id: tuple[str, ...] = ()
    exact: bool = False
    primary_only: bool = True
    where: str | None = None

    def __post_init__(self) -> None:
        for name in FILTER_COLUMNS:  # CellFilter(tissue="lung") is one term, not four letters
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, (value,))
            elif isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if self.where is not None:
            parse_where(self.where)  # refuse it now; the tree is cached for the sources

    @property
    def where_expr(self) -> Expr | None:
        """``where`` parsed (``None`` without one)."""
        return parse_where(self.where) if self.where is not None else None

    def given(self) -> dict[str, tuple[str, ...]]:
        """The non-empty fields, in declaration order."""
        return {name: getattr(self, name) for name in FILTER_COLUMNS if getattr(self, name)}

    def to_json(self) -> dict[str, Any]:
        return {
            **{k: list(v) for k, v in self.given().items()},
            "exact": self.exact,
            "primary_only": self.primary_only,
            "where": self.where,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedFilter:
    """A :class:`CellFilter` with every name resolved to a term and expanded to descendants."""

    filter: CellFilter
    terms: Mapping[str, tuple[ResolvedTerm, ...]]  # field -> what each query resolved to
    values: Mapping[str, tuple[str, ...]]  # obs column -> accepted term IDs / verbatim values

    def to_json(self) -> dict[str, Any]:
        return {field_name: [t.to_json() for t in terms] for field_name, terms in self.terms.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class CompiledFilter:
    """The filter in a source's own terms: column -> exact values present in the source."""

    resolved: ResolvedFilter
    columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # obs has is_primary_data: without it (a store outside the Census schema) every cell counts
    # as primary, and primary_only adds nothing to the filter
    has_primary: bool = True

    @property
    def is_empty(self) -> bool:
        """True when some constrained column admits no value the source holds."""
        return any(not values for values in self.columns.values())

    def value_filter(self) -> str | None:
        """The SOMA ``value_filter`` expression, or ``None`` when nothing is filtered."""
        clauses: list[str] = []
        if self.is_empty:
            # tiledbsoma refuses an empty ``in []``; this is the same empty set, said legally.
            clauses.append("soma_joinid < 0")
        else:
            for column, values in self.columns.items():
                clauses.append(f"{column} in [{', '.join(soma_quote(v) for v in values)}]")
        if self.resolved.filter.primary_only and self.has_primary:
            clauses.append("is_primary_data == True")
        where = self.resolved.filter.where_expr
        if where is not None:
            clauses.append(f"({to_value_filter(where)})")
        return " and ".join(clauses) if clauses else None

    def mask(self, obs: pd.DataFrame, *, source: str = "obs") -> np.ndarray:
        """Boolean mask over an AnnData obs table (same semantics as :meth:`value_filter`);
        ``source`` names the table in errors."""
        keep = np.ones(len(obs), dtype=bool)
        for column, values in self.columns.items():
            keep &= np.asarray(obs[column].isin(values), dtype=bool)
        flt = self.resolved.filter
        if flt.primary_only and self.has_primary and "is_primary_data" in obs.columns:
            keep &= obs["is_primary_data"].to_numpy(dtype=bool)
        where = flt.where_expr
        if where is not None:
            keep &= where_mask(where, obs, source=source)
        return keep

    def to_json(self) -> dict[str, Any]:
        return {"value_filter": self.value_filter(), "columns": {k: list(v) for k, v in self.columns.items()}}


def resolve_filter(flt: CellFilter, organism: str | None = None) -> ResolvedFilter:
    """Resolve every label/synonym/ID through the pinned ontologies and expand descendants.

    ``organism`` (a Census experiment name such as ``homo_sapiens``) picks the development-stage
    ontology: HsapDv and MmusDv share many labels ("fetal stage"), so without it such names
    are refused as ambiguous.
    """
    terms: dict[str, tuple[ResolvedTerm, ...]] = {}
    values: dict[str, tuple[str, ...]] = {}
    for name, queries in flt.given().items():
        column = FILTER_COLUMNS[name]
        if name in _VERBATIM_FIELDS:
            values[column] = tuple(dict.fromkeys(queries))
            continue
        resolved = tuple(_resolve_one(name, q, organism) for q in queries)
        terms[name] = resolved
        plain = [r.term_id for r in resolved]
        values[column] = expand_terms(plain, exact=flt.exact)
    return ResolvedFilter(filter=flt, terms=terms, values=values)


def _resolve_one(field_name: str, query: str, organism: str | None) -> ResolvedTerm:
    if query.strip().lower() in _NON_TERMS:
        # "unknown" / "na" are schema values, not terms; they match verbatim
        return ResolvedTerm(
            query=query,
            term_id=query.strip().lower(),
            label=query.strip().lower(),
            ontology="",
            how="id",
            n_descendants=0,
        )
    ontologies = FIELD_ONTOLOGIES[field_name]
    if field_name == "development_stage" and organism is not None:
        ontologies = _STAGE_ONTOLOGIES.get(organism, ontologies)
        if len(ontologies) > 1:
            # the organism's own stages first: a label HsapDv and UBERON share ("late adult
            # stage") names the HsapDv term for a human; UBERON only where that finds none
            with contextlib.suppress(UnknownTermError):
                return resolve_term(query, ontologies[:1])
    return resolve_term(query, ontologies)


def compile_filter(
    resolved: ResolvedFilter,
    distinct_values: Callable[[str], Sequence[str] | None],
    *,
    has_primary: bool = True,
) -> CompiledFilter:
    """Compile against the values a source holds (``has_primary``: its obs has
    ``is_primary_data``; without it every cell counts as primary).

    ``distinct_values(column)`` returns the column's distinct values (a SOMA enumeration, the
    categories of an AnnData column) or ``None`` when unknown. Knowing them keeps the compiled
    filter short (only terms that occur) and lets a cell whose column joins several terms
    (``"MONDO:0005002 || MONDO:0100096"``) match when any of its terms does.
    """
    columns: dict[str, tuple[str, ...]] = {}
    for column, accepted in resolved.values.items():
        present = distinct_values(column)
        if present is None:
            columns[column] = accepted
            continue
        wanted = set(accepted)
        columns[column] = tuple(sorted(v for v in present if v in wanted or _any_part_in(v, wanted)))
        if not columns[column]:
            log.info("no value of %s in this source matches %s", column, ", ".join(accepted[:5]))
    if resolved.filter.primary_only and not has_primary:
        log.info("obs has no is_primary_data column: every cell counts as primary")
    return CompiledFilter(resolved=resolved, columns=columns, has_primary=has_primary)


def _any_part_in(value: str, wanted: set[str]) -> bool:
    return _MULTI_SEPARATOR in value and any(p in wanted for p in value.split(_MULTI_SEPARATOR))
