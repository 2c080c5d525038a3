"""HRA ASCT+B tables: which cell types each anatomical structure holds, and the cells a slice
annotates outside them.

An ASCT+B table (HuBMAP / HRA, e.g. ``ASCT-B_VH_Heart.csv``) starts with metadata rows (title,
authors, ``Version Number:`` …), then a header row ``AS/1, AS/1/LABEL, AS/1/ID, AS/2 …, CT/1 …,
BG/1 …, REF/1 …``. Each row is one path through the partonomy: AS/1 (the organ) contains AS/2,
which contains AS/3, …, and the row's cell types (``CT/n/ID``, CL terms) sit in its deepest
structure. Structure IDs are UBERON or FMA (``FMAID:3823``); only UBERON ones can be placed in the
ontology.

Coverage rules used by :func:`check_cell_types`:

* A row's cell types belong to every structure on its path, not only the deepest: the table
  nests each structure in the previous one, and this keeps the cell types of FMA-only leaves.
* A tissue covers itself and its UBERON descendants (is_a and part_of) that the table names; so
  "heart" takes every cell type of the heart table, "heart left ventricle" those of its
  myocardium and vessels.
* A listed cell type covers itself and its CL descendants: "fibroblast" admits "cardiac
  ventricle fibroblast", but a coarser annotation ("endothelial cell" where the table lists
  "blood vessel endothelial cell") is reported, with the finer types named. A listed term that the
  pinned CL release deprecates counts as its replacement.
* Tissues that are not UBERON terms (cell cultures, cell lines) and cell types that are not CL
  terms (or "unknown") are skipped: the table says nothing about them, and :mod:`validate`
  reports invalid terms on its own.

Findings are warnings — a table is a reference, not a rule — each with its cell count.
"""

from __future__ import annotations

import csv
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from atlasprep.errors import InputFormatError, SourceError
from atlasprep.harmonize._report import N_EXAMPLES, Problem
from atlasprep.ontology import get_parser

__all__ = ["AsctbTable", "check_cell_types", "load_asctb"]

_AS_ID = re.compile(r"^AS/(\d+)/ID$")
_CT_ID = re.compile(r"^CT/(\d+)/ID$")


@dataclass(frozen=True, slots=True, kw_only=True)
class AsctbTable:
    """One ASCT+B table: anatomical structure ID -> the cell type IDs it holds."""

    title: str
    version: str
    cell_types: Mapping[str, frozenset[str]]  # every structure the table names, possibly with no cell types
    labels: Mapping[str, str]  # structure and cell type IDs -> the table's labels

    @property
    def name(self) -> str:
        return f"{self.title} ({self.version})" if self.version not in self.title else self.title


def load_asctb(path: Path) -> AsctbTable:
    """Parse an ASCT+B CSV: metadata rows, then the ``AS/1 …`` header, then one row per path."""
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise SourceError(f"ASCT+B table {path}: cannot read it ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputFormatError(f"ASCT+B table {path}: not a CSV file ({exc})") from None
    start = next((i for i, row in enumerate(rows) if row and row[0].strip() == "AS/1"), None)
    if start is None:
        raise InputFormatError(f"ASCT+B table {path}: no header row starting with 'AS/1'")
    header = [cell.strip() for cell in rows[start]]
    as_columns = _numbered(header, _AS_ID)
    ct_columns = _numbered(header, _CT_ID)
    if not as_columns or not ct_columns:
        raise InputFormatError(f"ASCT+B table {path}: the header has no AS/n/ID or no CT/n/ID columns")
    body = pd.DataFrame([_padded(row, len(header)) for row in rows[start + 1 :]], columns=header)
    cell_types: dict[str, set[str]] = {}
    for structures, types in zip(_ids(body, as_columns), _ids(body, ct_columns), strict=True):
        for structure in structures:
            cell_types.setdefault(structure, set()).update(types)
    return AsctbTable(
        title=_metadata(rows[:start], None) or Path(path).stem,
        version=_metadata(rows[:start], "Version Number:"),
        cell_types={k: frozenset(v) for k, v in cell_types.items()},
        labels=_labels(body, header, as_columns + ct_columns),
    )


def _numbered(header: list[str], pattern: re.Pattern[str]) -> list[str]:
    found = [(int(m.group(1)), name) for name in header if (m := pattern.match(name))]
    return [name for _, name in sorted(found)]


def _padded(row: list[str], width: int) -> list[str]:
    return [cell.strip() for cell in row[:width]] + [""] * (width - len(row))


def _ids(body: pd.DataFrame, columns: list[str]) -> list[list[str]]:
    """Per row, the non-empty IDs of ``columns`` in column order."""
    return [[v for v in values if v] for values in body[columns].itertuples(index=False, name=None)]


def _metadata(rows: list[list[str]], key: str | None) -> str:
    """The value next to ``key`` in the metadata rows (``None``: the first row's title)."""
    for row in rows:
        cells = [c.strip() for c in row if c.strip()]
        if key is None and cells:
            return cells[0]
        if key is not None and len(cells) > 1 and cells[0] == key:
            return cells[1]
    return ""


def _labels(body: pd.DataFrame, header: list[str], id_columns: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for column in id_columns:
        base = column.removesuffix("/ID")
        source = f"{base}/LABEL" if f"{base}/LABEL" in header else base
        for term, label in body[[column, source]].drop_duplicates().itertuples(index=False, name=None):
            if term and label:
                labels.setdefault(term, label)
    return labels


def check_cell_types(
    table: AsctbTable, tissue_ids: Iterable[Any], cell_type_ids: Iterable[Any]
) -> list[Problem]:
    """Warnings for (tissue, cell type) pairs the table does not list, with their cell counts.

    ``tissue_ids`` and ``cell_type_ids`` run per cell, in the same order (obs columns). Each
    distinct pair is checked once; see the module docstring for what covers what.
    """
    pairs = pd.DataFrame({"tissue": list(tissue_ids), "cell_type": list(cell_type_ids)}).astype(str)
    counts = pairs.value_counts(sort=False)
    missing_tissue: dict[str, int] = {}
    listed_by_tissue: dict[str, frozenset[str] | None] = {}
    found: list[Problem] = []
    for (tissue, cell_type), n in counts.items():
        if not (_is_live(tissue, "UBERON:") and _is_live(cell_type, "CL:")):
            continue
        if tissue not in listed_by_tissue:
            listed_by_tissue[tissue] = _listed_for(table, tissue)
        listed = listed_by_tissue[tissue]
        if listed is None:
            missing_tissue[tissue] = missing_tissue.get(tissue, 0) + int(n)
        elif not ({cell_type} | _ancestors(cell_type)) & listed:
            found.append(
                Problem(
                    "cell_type_ontology_term_id",
                    _unlisted(table, tissue, cell_type, listed),
                    int(n),
                    (cell_type,),
                )
            )
    for tissue, n in missing_tissue.items():
        what = f"{_named(table, tissue)} has no anatomical structure at or below it in {table.name}"
        found.append(Problem("tissue_ontology_term_id", what, n, (tissue,)))
    return found


def _unlisted(table: AsctbTable, tissue: str, cell_type: str, listed: frozenset[str]) -> str:
    where = f"{_named(table, tissue)} or its parts in {table.name}"
    finer = sorted(t for t in listed if cell_type in _ancestors(t))
    if finer:
        shown = ", ".join(_named(table, t) for t in finer[:N_EXAMPLES])
        return f"{_named(table, cell_type)} is coarser than the types listed for {where}: {shown}"
    return f"{_named(table, cell_type)} is not listed for {where}"


def _listed_for(table: AsctbTable, tissue: str) -> frozenset[str] | None:
    """The (live) cell types of the structures at or below ``tissue``; None if the table names none."""
    structures = [s for s in table.cell_types if s == tissue or tissue in _ancestors(s)]
    if not structures:
        return None
    return frozenset(_live(t) for s in structures for t in table.cell_types[s])


@functools.cache
def _ancestors(term: str) -> frozenset[str]:
    """is_a / part_of ancestors in the pinned release; empty for FMA and other unshipped IDs."""
    try:
        return frozenset(get_parser().get_term_ancestors(term))
    except (ValueError, KeyError):
        return frozenset()


@functools.cache
def _live(term: str) -> str:
    """A deprecated term's replacement where the pinned release names one, else the term."""
    try:
        parser = get_parser()
        if parser.is_term_deprecated(term):
            return parser.get_term_replacement(term) or term
    except (ValueError, KeyError):
        pass
    return term


@functools.cache
def _is_live(term: str, prefix: str) -> bool:
    if not term.startswith(prefix):
        return False
    parser = get_parser()
    return bool(parser.is_valid_term_id(term)) and not parser.is_term_deprecated(term)


def _named(table: AsctbTable, term: str) -> str:
    try:
        label = str(get_parser().get_term_label(term))
    except (ValueError, KeyError):
        label = table.labels.get(term, "")
    return f"{term} ({label})" if label else term
