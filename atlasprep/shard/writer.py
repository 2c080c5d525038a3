"""Shards of tokenized cells, shuffled across the whole corpus, with bounded memory.

Every cell's place is fixed before any token is made (:class:`~atlasprep.shard.layout.ShardLayout`).
Tokenized batches are spilled sorted by (split, slot) (:mod:`atlasprep.shard.spill`); each shard
gathers one run of rows from every spill, is written by its format
(:mod:`atlasprep.shard.format`) under a temporary name and renamed, while the next one is
gathered. The same inputs and seed give the same bytes.
"""

from __future__ import annotations

import collections
import itertools
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from atlasprep._io import atomic_output
from atlasprep.shard import format as formats
from atlasprep.shard.format import ShardFormatName, format_named, ragged, sha256_of, size_of
from atlasprep.shard.layout import ShardLayout
from atlasprep.shard.manifest import ShardEntry
from atlasprep.shard.spill import Spill, SpillSource, assemble, row_nbytes, spill_key, write_spill

__all__ = [
    "ShardFormatName",
    "ShardInfo",
    "ShardLayout",
    "ShardWriter",
    "Spill",
    "ragged",
    "row_nbytes",
    "sha256_of",
    "size_of",
    "write_shard",
    "write_spill",
]

_WRITERS = 2  # shards written at once


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardInfo:
    path: str  # relative to the store
    split: str
    n_cells: int
    n_tokens: int
    n_bytes: int
    sha256: str

    def to_json(self) -> ShardEntry:
        return {
            "path": self.path,
            "split": self.split,
            "n_cells": self.n_cells,
            "n_tokens": self.n_tokens,
            "n_bytes": self.n_bytes,
            "sha256": self.sha256,
        }


class ShardWriter:
    """Collect tokenized batches (``add``) and assemble the shards (``finish``)."""

    def __init__(
        self,
        store: Path,
        layout: ShardLayout,
        *,
        fmt: ShardFormatName | str | formats.ShardFormat = ShardFormatName.arrow,
    ) -> None:
        self.store = store
        self.layout = layout
        self.format = format_named(fmt) if isinstance(fmt, str) else fmt
        self.spill_dir = store / ".work" / "spill"
        shutil.rmtree(self.spill_dir, ignore_errors=True)  # a crashed run's spill is redone
        self.spill_dir.mkdir(parents=True)
        (store / "shards").mkdir(exist_ok=True)
        self._spills: list[tuple[SpillSource, np.ndarray]] = []  # spill, (split, slot) key per row
        self._schema: pa.Schema | None = None
        self._names = list(layout.names)
        # each cell's size by slot, for cutting shards by size (4 bytes a cell; nothing otherwise)
        by_size = layout.bytes_per_shard is not None
        self._row_bytes = {
            name: np.zeros(n if by_size else 0, dtype=np.int32) for name, n in layout.n_per_split.items()
        }

    def add(self, first_cell: int, table: pa.Table) -> None:
        """Rows of ``table`` are cells ``first_cell, first_cell + 1, …`` in source order."""
        cells = np.arange(first_cell, first_cell + table.num_rows)
        path = self.spill_dir / f"{len(self._spills):06d}.arrow"
        by_size = self.layout.bytes_per_shard is not None
        self.register(write_spill(path, table, self.layout.codes[cells], self.layout.slots[cells], by_size))

    def register(self, spill: Spill) -> None:
        """Take a spill written elsewhere (another process or machine sharing the store)."""
        if self._schema is None:
            self._schema = spill.schema
        for code, slots, sizes in spill.sizes:
            self._row_bytes[self._names[code]][slots] = sizes
        self._spills.append((spill.source, spill.keys))

    @property
    def spills(self) -> list[tuple[SpillSource, np.ndarray]]:
        """The spills registered: each file (or its rows kept in memory) and its rows' sorted
        (split, slot) keys."""
        return self._spills

    @property
    def schema(self) -> pa.Schema:
        assert self._schema is not None, "no cells were added"
        return self._schema

    def planned(self) -> list[tuple[str, int, int]]:
        """The shards' key ranges, in order: (split, first key, keys); empty ones not yet skipped."""
        jobs = []
        for code, split in enumerate(self._names):
            cuts = self.layout.boundaries(split, self._row_bytes[split])
            for first, stop in itertools.pairwise(cuts.tolist()):
                jobs.append((split, int(spill_key(np.array(code), np.array(first))), stop - first))
        return jobs

    def finish(self, token_column: str = "input_ids") -> list[ShardInfo]:
        assert self._schema is not None, "no cells were added"
        jobs = self.planned()
        # A shard is assembled while the two before it are written and hashed (copying,
        # hashing and writing release the GIL); at most three shards are in memory. Slots whose
        # cell was left out (an empty cell, dropped) are skipped; shards are numbered as written.
        shards: list[ShardInfo] = []
        numbers: collections.Counter[str] = collections.Counter()
        with ThreadPoolExecutor(max_workers=_WRITERS, thread_name_prefix="atlasprep-shard") as pool:
            pending: collections.deque[Future[ShardInfo]] = collections.deque()
            for split, low, n in jobs:
                table = assemble(self._spills, self._schema, int(low), n)
                if table is None:
                    continue
                if len(pending) == _WRITERS:
                    shards.append(pending.popleft().result())
                pending.append(pool.submit(self._write, split, numbers[split], table, token_column))
                numbers[split] += 1
            shards.extend(future.result() for future in pending)
        self.remove_spills()
        return shards

    def _write(self, split: str, shard: int, table: pa.Table, token_column: str) -> ShardInfo:
        name = self.layout.shard_name(split, shard, self.format.suffix)
        return write_shard(self.store, name, split, self.format, table, token_column)

    def remove_spills(self) -> None:
        """The work directory, spills and all (``<store>/.work``, which this writer made)."""
        shutil.rmtree(self.spill_dir.parent, ignore_errors=True)


def write_shard(
    store: Path, name: str, split: str, fmt: formats.ShardFormat, table: pa.Table, token_column: str
) -> ShardInfo:
    """Write a shard's rows to ``shards/<name>`` (under a temporary name, then renamed), in this
    process or on a worker (:mod:`atlasprep.shard.assemble`)."""
    final = store / "shards" / name
    with atomic_output(final, hidden=True) as tmp:  # a crashed run's shard is replaced
        fmt.write(tmp, table, token_column)
        digest = sha256_of(tmp)  # read back from the page cache
    n_tokens = int(pc.sum(pc.list_value_length(table[token_column])).as_py() or 0)
    return ShardInfo(
        path=f"shards/{name}",
        split=split,
        n_cells=table.num_rows,
        n_tokens=n_tokens,
        n_bytes=size_of(final),
        sha256=digest,
    )
