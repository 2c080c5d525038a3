"""Spills: tokenized batches on disk, sorted by (split, slot), and shards gathered back from them.

Tokenized batches arrive in source order and are spilled sorted by (split, slot), one Arrow file
per batch, with each row's key and (cutting by size) its bytes. A shard gathers one run of rows
from every spill (memory-mapped, one spill open at a time, so only that shard is in memory; the
token lists are copied once, straight into the shard's buffers).

A build in one process may keep its first spills in memory instead (:class:`SpillMemory`: up
to :data:`SPILL_MEMORY` bytes of sorted rows, ``ATLASPREP_SPILL_MEMORY`` to change it, 0 for
none): writing them through the page cache and mapping them back cost a 50,000-cell build
about a tenth of its time. The shards are the same bytes either way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "SPILL_MEMORY",
    "Runs",
    "Spill",
    "SpillMemory",
    "assemble",
    "find_runs",
    "gather_runs",
    "row_nbytes",
    "spill_key",
    "write_spill",
]

SPILL_MEMORY = 256 * 1024**2  # bytes of spilled rows a build in one process keeps in memory


@dataclass(frozen=True, slots=True, kw_only=True)
class Spill:
    """One spilled batch: its file, the sorted (split, slot) key of each row, its schema and
    (cutting by size) each row's bytes by split."""

    path: Path
    keys: np.ndarray
    schema: pa.Schema
    sizes: tuple[tuple[int, np.ndarray, np.ndarray], ...] = ()  # (split code, slots, bytes)
    rows: pa.Table | None = None  # kept in memory (SpillMemory): no file at ``path``

    @property
    def source(self) -> SpillSource:
        """Where its rows are: in memory, or the file."""
        return self.rows if self.rows is not None else self.path


SpillSource: TypeAlias = Path | pa.Table  # a spill's file, or its rows kept in memory


@dataclass(slots=True)
class SpillMemory:
    """The bytes of sorted rows a build may still keep in memory rather than write: its spills
    are taken in order while they fit (``ATLASPREP_SPILL_MEMORY`` bytes, else
    :data:`SPILL_MEMORY`), the rest are files. Only one process's spills can be kept: a
    worker's are read by others."""

    left: int

    @classmethod
    def from_environment(cls) -> SpillMemory:
        text = os.environ.get("ATLASPREP_SPILL_MEMORY", "").strip()
        return cls(left=int(text) if text.isdigit() else SPILL_MEMORY)

    def take(self, n_bytes: int) -> bool:
        if n_bytes > self.left:
            return False
        self.left -= n_bytes
        return True


def write_spill(
    path: Path,
    table: pa.Table,
    split_codes: np.ndarray,
    slots: np.ndarray,
    by_size: bool,
    memory: SpillMemory | None = None,
) -> Spill:
    """Write a batch's rows sorted by (split, slot): ``split_codes``/``slots`` are its cells'.
    A shard then reads one contiguous run of rows from each spill. Where ``memory`` has room
    for them, the rows are kept (:attr:`Spill.rows`) and nothing is written."""
    sizes: list[tuple[int, np.ndarray, np.ndarray]] = []
    if by_size:
        row_bytes = row_nbytes(table).astype(np.int32)
        for code in np.unique(split_codes).tolist():
            mine = split_codes == code
            sizes.append((int(code), slots[mine], row_bytes[mine]))
    order = np.lexsort((slots, split_codes))  # by split, then slot
    table = table.combine_chunks()
    compact = _compact_schema(table)
    rows = _take(compact, table, order)
    keys = spill_key(split_codes[order], slots[order])
    if memory is not None and memory.take(rows.nbytes):
        return Spill(path=path, keys=keys, schema=table.schema, sizes=tuple(sizes), rows=rows)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, compact) as writer:
        writer.write_table(rows)
    return Spill(path=path, keys=keys, schema=table.schema, sizes=tuple(sizes))


def _compact_schema(table: pa.Table) -> pa.Schema:
    """The table's schema, with integer lists whose values all fit stored as ``uint16`` (token
    ids of vocabularies under 65,536): half the bytes to spill and read back. Shards get the
    declared types again."""
    fields = []
    for field in table.schema:
        type_ = field.type
        if (
            pa.types.is_list(type_)
            and pa.types.is_integer(type_.value_type)
            and type_.value_type.bit_width > 16
        ):
            values = (
                table[field.name].chunk(0).values.to_numpy(zero_copy_only=False) if table.num_rows else None
            )
            if (
                values is None
                or len(values) == 0
                or (values.min() >= 0 and values.max() <= np.iinfo(np.uint16).max)
            ):
                field = field.with_type(pa.list_(pa.uint16()))
        fields.append(field)
    return pa.schema(fields, metadata=table.schema.metadata)


def assemble(
    spills: list[tuple[SpillSource, np.ndarray]], schema: pa.Schema, low: int, n: int
) -> pa.Table | None:
    """The cells with keys in ``low … low + n - 1``, gathered in key order from the spills
    (each a file, or its rows in memory, and its sorted keys); None when no spill holds one.
    Each spill file's run of rows is copied out while it alone is open (memory-mapped): a corpus
    of thousands of spills neither runs out of file handles nor keeps every spill's touched
    pages mapped."""
    runs = find_runs(spills, low, n)
    return None if runs is None else gather_runs(schema, *runs)


Runs = list[tuple[SpillSource, int, np.ndarray]]  # per spill: where, first row, the rows' places


def find_runs(spills: list[tuple[SpillSource, np.ndarray]], low: int, n: int) -> tuple[Runs, int] | None:
    """Where the cells with keys in ``low … low + n - 1`` are: each spill's run of rows and
    their places in the shard, and the shard's rows (keys never spilled left out); None when
    no spill holds one. Planned where the keys are, gathered (:func:`gather_runs`) elsewhere."""
    picks = []  # (spill, its run of rows, their keys' offsets from low)
    for spilled, keys in spills:
        a, b = np.searchsorted(keys, [low, low + n], "left")
        if b > a:
            picks.append((spilled, int(a), keys[a:b] - low))
    if not picks:
        return None
    found = np.concatenate([where for _, _, where in picks])
    if len(found) < n:  # some keys were never spilled: close the gaps, keeping the order
        place = np.empty(len(found), dtype=np.int64)
        place[np.argsort(found, kind="stable")] = np.arange(len(found))
        cuts = np.cumsum([len(where) for _, _, where in picks])[:-1]
        picks = [(path, first, at) for (path, first, _), at in zip(picks, np.split(place, cuts), strict=True)]
        n = len(found)
    return picks, n


def gather_runs(schema: pa.Schema, picks: Runs, n: int) -> pa.Table:
    """The shard's ``n`` rows gathered from the spills' runs (:func:`find_runs`), each spill
    memory-mapped while it alone is open: its token lists are copied once, straight from the
    mapped spill into the shard's buffers."""
    return _gather(schema, lambda: _runs(picks), n)


# a table (a chunk a column), the rows of it to take, their places in the result
Part = tuple[pa.Table, np.ndarray, np.ndarray]


def _runs(picks: Runs) -> Iterator[Part]:
    """Each spill's run of rows (of its rows in memory, or a view of the mapped file, valid
    until the next is opened)."""
    for spilled, first, where in picks:
        if isinstance(spilled, pa.Table):  # kept in memory
            yield spilled.slice(first, len(where)), np.arange(len(where)), where
            continue
        with pa.memory_map(str(spilled)) as source:
            run = pa.ipc.open_file(source).read_all().slice(first, len(where))
            if any(column.num_chunks > 1 for column in run.columns):  # several record batches
                run = run.combine_chunks()
            yield run, np.arange(len(where)), where


def _take(schema: pa.Schema, table: pa.Table, rows: np.ndarray) -> pa.Table:
    """``rows`` of ``table`` (a chunk a column), in that order, as ``schema``."""
    return _gather(schema, lambda: iter([(table, rows, np.arange(len(rows)))]), len(rows))


def _gather(schema: pa.Schema, parts: Callable[[], Iterator[Part]], n: int) -> pa.Table:
    """A table of ``n`` rows: the rows of each part put at their places (together, every place
    once). Two passes over ``parts()``, each needing a part's table only while it is visited:
    the rows' lengths and small columns first, then each list column's values copied once,
    straight into the new buffers."""
    lists = [f for f in schema if pa.types.is_list(f.type)]
    small = [f.name for f in schema if not pa.types.is_list(f.type)]
    lengths = {f.name: np.zeros(n, dtype=np.int64) for f in lists}
    picked, places = [], []
    for table, rows, where in parts():
        for f in lists:
            offsets = table[f.name].chunk(0).offsets.to_numpy().astype(np.int64)
            lengths[f.name][where] = offsets[rows + 1] - offsets[rows]
        if small:
            picked.append(table.select(small).take(rows))  # copied (out of a mapped spill)
            places.append(where)
    starts = {name: np.zeros(n + 1, dtype=np.int64) for name in lengths}
    values = {}
    for f in lists:
        np.cumsum(lengths[f.name], out=starts[f.name][1:])
        values[f.name] = np.empty(int(starts[f.name][-1]), dtype=f.type.value_type.to_pandas_dtype())
    for table, rows, where in parts() if lists else ():
        for f in lists:
            array = table[f.name].chunk(0)
            offsets = array.offsets.to_numpy().astype(np.int64)
            src = array.values.to_numpy(zero_copy_only=False)
            _copy_rows(src, offsets[rows], lengths[f.name][where], values[f.name], starts[f.name][where])
    columns = {
        f.name: pa.ListArray.from_arrays(
            pa.array(starts[f.name].astype(np.int32)),
            pa.array(values[f.name], type=f.type.value_type),
            type=f.type,
        )
        for f in lists
    }
    if small:
        flat = pa.concat_tables(picked).take(np.argsort(np.concatenate(places))).combine_chunks()
        columns.update({name: flat[name] for name in small})
    return pa.table([columns[f.name] for f in schema], schema=schema)


@numba.njit(cache=True, nogil=True)
def _copy_rows(src, starts, lengths, out, out_starts):  # type: ignore[no-untyped-def]  # pragma: no cover
    for r in range(len(starts)):
        n = lengths[r]
        row, to = src[starts[r] : starts[r] + n], out[out_starts[r] : out_starts[r] + n]
        for j in range(n):  # over two views: a loop LLVM vectorizes (6x the indexed copy)
            to[j] = row[j]


def spill_key(split_code: np.ndarray, slot: np.ndarray) -> np.ndarray:
    return np.asarray(split_code, dtype=np.int64) * (1 << 40) + np.asarray(slot, dtype=np.int64)


def row_nbytes(table: pa.Table) -> np.ndarray:
    """Each row's uncompressed Arrow bytes: values plus offsets, validity bitmaps left out."""
    sizes = np.zeros(table.num_rows, dtype=np.int64)
    for name in table.column_names:
        column = table[name]
        type_ = column.type
        if pa.types.is_list(type_) or pa.types.is_large_list(type_):
            width = type_.value_type.bit_width // 8
            sizes += pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64) * width + 4
        elif pa.types.is_dictionary(type_):
            sizes += type_.index_type.bit_width // 8
        elif pa.types.is_boolean(type_):
            sizes += 1
        elif pa.types.is_primitive(type_):
            sizes += type_.bit_width // 8
        else:  # strings and binaries (any width)
            lengths = pc.binary_length(column.cast(pa.large_string())).fill_null(0)
            sizes += lengths.to_numpy(zero_copy_only=False).astype(np.int64) + 4
    return sizes
