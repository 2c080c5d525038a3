"""The fields whose values are schema literals, not terms: ``tissue_type`` (tissue, organoid,
primary cell culture, cell line) and ``suspension_type`` (cell, nucleus, na). Each distinct
value becomes one of them, graded as a term is (``table``, ``set``, ``label`` when exact,
``normalized`` for case and spacing, ``alias`` for a common spelling such as "nuclei"), or
stays unmapped (missing in the output, counted, and an error under ``strict``), saying why.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from atlasprep.harmonize._schema_rules import SUSPENSION_TYPES, TISSUE_TYPES
from atlasprep.harmonize.labels import Grade, LabelMapping

__all__ = ["SCHEMA_VALUES", "map_schema_values"]

SCHEMA_VALUES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"tissue_type": TISSUE_TYPES, "suspension_type": SUSPENSION_TYPES}
)
_ALIASES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "suspension_type": {
            "nuclei": "nucleus",
            "single nucleus": "nucleus",
            "single nuclei": "nucleus",
            "nuc": "nucleus",
            "cells": "cell",
            "single cell": "cell",
            "whole cell": "cell",
            "n/a": "na",
        },
        "tissue_type": {
            "tissues": "tissue",
            "organoids": "organoid",
            "primary culture": "primary cell culture",
        },
    }
)
# values older schemas allowed that now name more than one value
_SPLIT: Mapping[str, str] = MappingProxyType(
    {"cell culture": "schema 5's 'cell culture' is now 'primary cell culture' or 'cell line'; say which"}
)


def map_schema_values(
    field: str, counts: Mapping[str, int], table: Mapping[str, str], *, given: bool
) -> list[LabelMapping]:
    """Each distinct value of a column (or the ``--set`` value: ``given``) for ``field``."""
    allowed = SCHEMA_VALUES[field]
    out = []
    for value, n_cells in counts.items():
        key = " ".join(value.strip().lower().split())
        found: str | None = None
        how: Grade | None = None
        if value in table:
            found, how = table[value], "table"
        elif value in allowed:
            found, how = value, "set" if given else "label"
        elif key in allowed:
            found, how = key, "normalized"
        elif key in _ALIASES[field]:
            found, how = _ALIASES[field][key], "alias"
        if found is not None and found in allowed:
            out.append(LabelMapping(value=value, term_id=found, label=found, how=how, n_cells=n_cells))
            continue
        why = _SPLIT.get(key) or f"not one of {', '.join(allowed)}"
        if found is not None:  # a table entry naming no schema value
            why = f"the mapping table gives {found!r}: {why}"
        out.append(LabelMapping(value=value, term_id=None, label=None, how=None, n_cells=n_cells, reason=why))
    return out
