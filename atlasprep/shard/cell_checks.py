"""`validate`'s checks on the cells themselves, a shard at a time: every cell once (no ``cell_id``
twice, in one split or two) and no held-out cell outside test.

Cell ids are kept as 64-bit hashes (8 bytes a cell, whatever the ids' length); a hash seen twice
is confirmed on the ids themselves with a second read of the ``cell_id`` columns, so a collision
is never reported as a duplicate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["CELL_ID", "CellIds", "HoldoutCheck"]

log = logging.getLogger("atlasprep.shard")

CELL_ID = "cell_id"
_EXAMPLES = 3  # repeated ids named in a problem


@dataclass(slots=True)
class CellIds:
    """The hashes of every shard's ``cell_id``, then the ids that more than one row holds."""

    hashes: list[np.ndarray] = field(default_factory=list)

    def add(self, ids: pa.ChunkedArray | pa.Array) -> None:
        self.hashes.append(_hash(ids))

    def repeated(self, read_ids: Callable[[], Iterable[tuple[str, pa.ChunkedArray | pa.Array]]]) -> list[str]:
        """A line for each id held by more than one row (at most a few, then how many more):
        ``read_ids`` yields each shard's split and ids again, in the order they were added."""
        every = np.concatenate(self.hashes) if self.hashes else np.zeros(0, dtype=np.uint64)
        ordered = np.sort(every)
        twice = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
        if not len(twice):
            return []
        where: dict[str, dict[str, int]] = {}  # id -> split -> rows
        for split, ids in read_ids():
            hit = np.isin(_hash(ids), twice)
            if hit.any():
                for cell in pc.filter(ids, pa.array(hit)).to_pylist():
                    per_split = where.setdefault(str(cell), {})
                    per_split[split] = per_split.get(split, 0) + 1
        repeated = sorted(c for c, per_split in where.items() if sum(per_split.values()) > 1)
        lines = [f"{CELL_ID} {c!r} is held by {_rows(where[c])}" for c in repeated[:_EXAMPLES]]
        if len(repeated) > _EXAMPLES:
            lines.append(f"{len(repeated) - _EXAMPLES} more {CELL_ID}s are held by more than one row")
        return lines


def _hash(ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return pd.util.hash_array(np.asarray(ids.to_numpy(zero_copy_only=False), dtype=object), categorize=False)


def _rows(per_split: Mapping[str, int]) -> str:
    parts = [f"{n} {split} row{'s' if n > 1 else ''}" for split, n in sorted(per_split.items())]
    return " and ".join(parts) + (" (two splits)" if len(per_split) > 1 else "")


@dataclass(slots=True)
class HoldoutCheck:
    """Cells outside test whose value a holdout of the manifest takes (``splits.holdout``, whose
    ``values`` list each term taken: stores built before they were recorded are not checked)."""

    records: list[Mapping[str, Any]]
    # record -> split -> value -> cells
    found: dict[int, dict[str, dict[str, int]]] = field(default_factory=dict)
    held_columns: set[str] = field(default_factory=set)

    @property
    def columns(self) -> list[str]:
        return sorted({str(r["column"]) for r in self.checkable})

    @property
    def checkable(self) -> list[Mapping[str, Any]]:
        return [r for r in self.records if isinstance(r.get("values"), list)]

    @property
    def unrecorded(self) -> list[str]:
        """The holdouts whose values the manifest does not list."""
        return [str(r.get("query")) for r in self.records if not isinstance(r.get("values"), list)]

    def add(self, columns: Mapping[str, pa.ChunkedArray | pa.Array], split: str) -> None:
        if split == "test":
            return
        for i, record in enumerate(self.records):
            column = str(record["column"])
            if not isinstance(record.get("values"), list) or column not in columns:
                continue
            self.held_columns.add(column)
            array = columns[column]
            held = pc.is_in(array.cast(pa.string()), value_set=pa.array(record["values"], type=pa.string()))
            taken = pc.filter(array.cast(pa.string()), held)
            if len(taken):
                counted = pc.value_counts(taken)
                per_value = self.found.setdefault(i, {}).setdefault(split, {})
                values, counts = counted.field("values").to_pylist(), counted.field("counts").to_pylist()
                for value, n in zip(values, counts, strict=True):
                    per_value[str(value)] = per_value.get(str(value), 0) + int(n)

    def warn_unchecked(self, store: object) -> None:
        """Log the holdouts left unchecked: the shards hold no column of theirs, or the manifest
        lists no values (a store built before they were recorded)."""
        for record in self.checkable:
            if str(record["column"]) not in self.held_columns:
                log.warning(
                    "%s: the shards hold no column of holdout %s, so it was not checked",
                    store,
                    record["query"],
                )
        if self.unrecorded:
            log.warning(
                "%s: the manifest does not list the values of holdout %s (a store built before they were "
                "recorded), so it was not checked; rebuild the store to have it checked",
                store,
                ", ".join(self.unrecorded),
            )

    def problems(self) -> list[str]:
        lines = []
        for i, per_split in sorted(self.found.items()):
            record = self.records[i]
            for split, per_value in sorted(per_split.items()):
                value, n = max(per_value.items(), key=lambda kv: (kv[1], kv[0]))
                total = sum(per_value.values())
                lines.append(
                    f"holdout {record['query']}: {total:,} {split} cell(s) hold a value it holds out "
                    f"({record['column']} {value!r}: {n:,})"
                )
        return lines
