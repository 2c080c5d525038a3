"""Holdouts: ``COLUMN=VALUE`` rules that send cells (and every component they touch) to test.

A rule on an ontology field is resolved as ``slice`` resolves its filters
(:func:`atlasprep.sources.resolve_filter`): ``tissue=lung`` takes UBERON:0002048 and all its
descendants (is_a and part_of: ``lower lobe of left lung`` too) in ``tissue_ontology_term_id``;
``cell_type``, ``disease`` … likewise. Any ``*_ontology_term_id`` column is resolved against
its field's ontologies (UBERON for ``anatomical_structure_ontology_term_id``, which ``align
ccf`` writes), so a heart region can be held out while its neighbours train. ``exact`` takes
the value only. Other columns (``donor_id``, ``dataset_id``, anything else) match verbatim; so
do IDs of ontologies atlasprep does not ship (the FMA IDs of a few CCF structures), which is
logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from atlasprep.errors import UsageError
from atlasprep.ontology import FIELD_ONTOLOGIES, expand_terms, resolve_term
from atlasprep.shard.manifest import HoldoutEntry as HoldoutRecord
from atlasprep.sources import CellFilter
from atlasprep.sources.filters import FILTER_COLUMNS, resolve_filter

__all__ = [
    "HoldoutRecord",
    "HoldoutRule",
    "holdout_columns",
    "holdout_mask",
    "parse_holdout",
    "resolve_holdouts",
]

log = logging.getLogger("atlasprep.tokenize")

_VERBATIM = frozenset({"dataset_id", "donor_id"})
_SHIPPED_PREFIXES = ("CL:", "UBERON:", "MONDO:", "EFO:", "PATO:", "HsapDv:", "HANCESTRO:", "MmusDv:")
# a column of anatomical terms that no field names (align ccf's): UBERON, as the tissue field
_ONTOLOGY_COLUMNS = {column: field for field, column in FILTER_COLUMNS.items() if field in FIELD_ONTOLOGIES}


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldoutRule:
    query: str
    column: str
    values: tuple[str, ...]
    term: str | None = None
    label: str | None = None

    def record(self, n_cells: int) -> HoldoutRecord:
        return {
            "query": self.query,
            "column": self.column,
            "term": self.term,
            "label": self.label,
            "n_values": len(self.values),
            "n_cells": n_cells,
            "values": sorted(self.values),  # what `validate` checks no train or val cell holds
        }


def parse_holdout(entry: str, split_columns: Sequence[str]) -> tuple[str, str]:
    """``COLUMN=VALUE`` as (column, value); a bare ``VALUE`` is a value of the one split column."""
    key, sep, value = entry.partition("=")
    if sep:
        if not key.strip() or not value.strip():
            raise UsageError(f"holdout = {entry!r}: expected COLUMN=VALUE, e.g. tissue=lung")
        return key.strip(), value.strip()
    if len(split_columns) != 1:
        raise UsageError(f"holdout = {entry!r}: name its column (COLUMN=VALUE), e.g. donor_id={entry}")
    return split_columns[0], entry


def resolve_holdouts(
    entries: Sequence[str], split_columns: Sequence[str], *, exact: bool
) -> list[HoldoutRule]:
    """Each holdout entry as the obs column and the values it takes."""
    return [_resolve(*parse_holdout(entry, split_columns), exact=exact) for entry in entries]


def holdout_columns(entries: Sequence[str], split_columns: Sequence[str]) -> tuple[str, ...]:
    """The obs column each holdout entry reads (a filter field's: ``tissue`` ->
    ``tissue_ontology_term_id``), without resolving its terms."""
    return tuple(_column(parse_holdout(entry, split_columns)[0]) for entry in entries)


def _column(key: str) -> str:
    return FILTER_COLUMNS[key] if key in FILTER_COLUMNS and key not in _VERBATIM else key


def _resolve(key: str, value: str, *, exact: bool) -> HoldoutRule:
    query = f"{key}={value}"
    if key in FILTER_COLUMNS and key not in _VERBATIM:
        column = _column(key)
        resolved = resolve_filter(CellFilter(primary_only=False, exact=exact, **{key: (value,)}))  # type: ignore[arg-type]
        term = resolved.terms[key][0]
        return HoldoutRule(
            query=query, column=column, values=resolved.values[column], term=term.term_id, label=term.label
        )
    if not key.endswith("_ontology_term_id"):
        return HoldoutRule(query=query, column=key, values=(value,))
    if ":" in value and not value.startswith(_SHIPPED_PREFIXES):
        log.info("holdout %s: %s is from no shipped ontology; only that value is held out", query, value)
        return HoldoutRule(query=query, column=key, values=(value,), term=value)
    field = _ONTOLOGY_COLUMNS.get(key, "tissue")
    term = resolve_term(value, FIELD_ONTOLOGIES[field])
    return HoldoutRule(
        query=query,
        column=key,
        values=expand_terms([term.term_id], exact=exact),
        term=term.term_id,
        label=term.label,
    )


def holdout_mask(obs: pd.DataFrame, rules: Sequence[HoldoutRule]) -> tuple[np.ndarray, list[HoldoutRecord]]:
    """Cells any rule takes, and each rule's record; a rule that takes no cell is refused."""
    held = np.zeros(len(obs), dtype=bool)
    records = []
    for rule in rules:
        if rule.column not in obs.columns:
            raise UsageError(f"holdout {rule.query}: the cells have no column {rule.column!r}")
        hit = np.asarray(obs[rule.column].astype("string").isin(rule.values), dtype=bool)
        if not hit.any():
            what = rule.column if rule.term is None else _term_text(rule, rule.column)
            raise UsageError(
                f"holdout {rule.query}: no cell has that {what}; hold out a value the selected cells "
                "have (holdouts apply after the cell filters)"
            )
        held |= hit
        records.append(rule.record(int(hit.sum())))
    return held, records


def _term_text(rule: HoldoutRule, column: str) -> str:
    below = f" or its {len(rule.values) - 1} descendants" if len(rule.values) > 1 else ""
    return f"{column} ({rule.term} {rule.label or ''}{below})".replace(" )", ")")
