"""Shards of tokenized cells, shuffled across the whole corpus, with bounded memory.

Every cell's place is fixed before any token is made: within its split, a seeded permutation
gives it a slot. Tokenized batches arrive in source order and are spilled sorted by (split,
slot), one Arrow file per batch, with each row's key and size. Shards are runs of consecutive
slots: ``cells_per_shard`` of them, or as many as fit in ``bytes_per_shard`` (the cells'
uncompressed Arrow bytes, so the cut depends on the data only, never on batching). Each shard
gathers one run of rows from every spill (memory-mapped, so only that shard is in memory; the token
lists are copied once, straight into the shard's buffers), is written under a temporary name
and renamed, while the next one is gathered. The same inputs and seed give the same bytes.

Shards are Arrow IPC *stream* files, the format HuggingFace ``datasets`` reads with
``Dataset.from_file``; ``pyarrow.ipc.open_stream`` reads them too.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import shutil
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import zarr

from atlasprep._io import atomic_output
from atlasprep.errors import UsageError

__all__ = [
    "ShardFormat",
    "ShardInfo",
    "ShardLayout",
    "ShardWriter",
    "Spill",
    "ragged",
    "sha256_of",
    "size_of",
    "write_spill",
    "write_zarr_shard",
]

ShardFormat = Literal["arrow", "zarr"]
_WRITERS = 2  # shards written at once


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardInfo:
    path: str  # relative to the store
    split: str
    n_cells: int
    n_tokens: int
    n_bytes: int
    sha256: str

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "split": self.split,
            "n_cells": self.n_cells,
            "n_tokens": self.n_tokens,
            "n_bytes": self.n_bytes,
            "sha256": self.sha256,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardLayout:
    """Where every cell goes: its split and its slot in that split's shuffled order."""

    names: tuple[str, ...]  # the splits that have cells, sorted
    codes: np.ndarray  # per cell (source order): its split, as an index into ``names`` (1 byte)
    slots: np.ndarray  # int64 slot per cell within its split
    n_per_split: Mapping[str, int]
    cells_per_shard: int | None = None
    bytes_per_shard: int | None = None  # instead of cells_per_shard: cut by size

    @classmethod
    def plan(
        cls,
        splits: np.ndarray,
        *,
        cells_per_shard: int | None = None,
        bytes_per_shard: int | None = None,
        seed: int,
        shuffle: bool = True,
    ) -> ShardLayout:
        """The layout of cells given their split names (one per cell)."""
        names, codes = np.unique(np.asarray(splits, dtype=str), return_inverse=True)
        return cls.plan_codes(
            codes,
            [str(n) for n in names],
            cells_per_shard=cells_per_shard,
            bytes_per_shard=bytes_per_shard,
            seed=seed,
            shuffle=shuffle,
        )

    @classmethod
    def plan_codes(
        cls,
        codes: np.ndarray,
        names: Sequence[str],
        *,
        cells_per_shard: int | None = None,
        bytes_per_shard: int | None = None,
        seed: int,
        shuffle: bool = True,
    ) -> ShardLayout:
        """The layout of cells given their splits as indices into ``names`` (in any order; names
        without cells are dropped): a byte a cell, where names would take one string each."""
        if (cells_per_shard is None) == (bytes_per_shard is None):
            raise ValueError("give exactly one of cells_per_shard and bytes_per_shard")
        if (cells_per_shard or bytes_per_shard or 0) < 1:
            raise UsageError("shard size must be at least 1")
        codes = np.asarray(codes)
        counts = np.bincount(codes, minlength=len(names)) if len(codes) else np.zeros(len(names), int)
        present = sorted((str(names[i]), i) for i in range(len(names)) if counts[i])
        if len(present) > 255:
            raise UsageError(f"{len(present)} splits: at most 255 are supported")
        renumber = np.zeros(len(names), dtype=np.uint8)
        for index, (_, old) in enumerate(present):
            renumber[old] = index
        compact = renumber[codes]
        slots = np.empty(len(compact), dtype=np.int64)
        n_per_split: dict[str, int] = {}
        for index, (name, old) in enumerate(present):
            members = np.flatnonzero(compact == index)
            n_per_split[name] = int(counts[old])
            if shuffle:
                # one stream per split, so adding a split never reshuffles another
                slots[members] = np.random.default_rng([seed, index]).permutation(len(members))
            else:
                slots[members] = np.arange(len(members))
        return cls(
            names=tuple(name for name, _ in present),
            codes=compact,
            slots=slots,
            n_per_split=n_per_split,
            cells_per_shard=cells_per_shard,
            bytes_per_shard=bytes_per_shard,
        )

    def boundaries(self, split: str, row_bytes: np.ndarray) -> np.ndarray:
        """First slot of each shard of ``split``, then its cell count; ``row_bytes`` by slot."""
        n = self.n_per_split.get(split, 0)
        if self.cells_per_shard is not None:
            return np.r_[np.arange(0, n, self.cells_per_shard), n].astype(np.int64)
        assert self.bytes_per_shard is not None
        cuts = [0]
        total = 0
        ends = np.cumsum(row_bytes)
        while cuts[-1] < n:  # at least one cell per shard; a shard ends before it would overflow
            start = cuts[-1]
            stop = int(np.searchsorted(ends, total + self.bytes_per_shard, side="right"))
            stop = max(stop, start + 1)
            cuts.append(min(stop, n))
            total = int(ends[cuts[-1] - 1])
        return np.array(cuts, dtype=np.int64)

    def shard_name(self, split: str, shard: int, ext: str = "arrow") -> str:
        return f"{split}-{shard:05d}.{ext}"


class ShardWriter:
    """Collect tokenized batches (``add``) and assemble the shards (``finish``)."""

    def __init__(self, store: Path, layout: ShardLayout, *, fmt: ShardFormat = "arrow") -> None:
        self.store = store
        self.layout = layout
        self.fmt = fmt
        self.spill_dir = store / ".work" / "spill"
        shutil.rmtree(self.spill_dir, ignore_errors=True)  # a crashed run's spill is redone
        self.spill_dir.mkdir(parents=True)
        (store / "shards").mkdir(exist_ok=True)
        self._spills: list[tuple[Path, np.ndarray]] = []  # spill file, (split, slot) key per row
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
        self._spills.append((spill.path, spill.keys))

    def finish(self, token_column: str = "input_ids") -> list[ShardInfo]:
        assert self._schema is not None, "no cells were added"
        jobs = []
        for code, split in enumerate(self._names):
            cuts = self.layout.boundaries(split, self._row_bytes[split])
            for first, stop in itertools.pairwise(cuts.tolist()):
                jobs.append((split, _key(np.array(code), np.array(first)), stop - first))
        # A shard is assembled while the two before it are written and hashed (copying,
        # hashing and writing release the GIL); at most three shards are in memory. Slots whose
        # cell was left out (an empty cell, dropped) are skipped; shards are numbered as written.
        shards: list[ShardInfo] = []
        numbers: collections.Counter[str] = collections.Counter()
        with ThreadPoolExecutor(max_workers=_WRITERS, thread_name_prefix="atlasprep-shard") as pool:
            pending: collections.deque[Future[ShardInfo]] = collections.deque()
            for split, low, n in jobs:
                table = _assemble(self._spills, self._schema, int(low), n)
                if table is None:
                    continue
                if len(pending) == _WRITERS:
                    shards.append(pending.popleft().result())
                pending.append(pool.submit(self._write, split, numbers[split], table, token_column))
                numbers[split] += 1
            shards.extend(future.result() for future in pending)
        shutil.rmtree(self.spill_dir.parent, ignore_errors=True)
        return shards

    def _write(self, split: str, shard: int, table: pa.Table, token_column: str) -> ShardInfo:
        name = self.layout.shard_name(split, shard, "arrow" if self.fmt == "arrow" else "zarr")
        final = self.store / "shards" / name
        with atomic_output(final, hidden=True) as tmp:  # a crashed run's shard is replaced
            if self.fmt == "arrow":
                with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
                    writer.write_table(table)
                with open(tmp, "rb") as written:  # read back from the page cache, a block at a time
                    digest = hashlib.file_digest(written, "sha256").hexdigest()
            else:
                write_zarr_shard(tmp, table, token_column)
                digest = sha256_of(tmp)
        n_tokens = int(pc.sum(pc.list_value_length(table[token_column])).as_py() or 0)
        return ShardInfo(
            path=f"shards/{name}",
            split=split,
            n_cells=table.num_rows,
            n_tokens=n_tokens,
            n_bytes=size_of(final),
            sha256=digest,
        )


def sha256_of(path: Path) -> str:
    """A file's sha256, or a directory's: over its sorted relative paths and their bytes."""
    digest = hashlib.sha256()
    if path.is_file():
        digest.update(path.read_bytes())
        return digest.hexdigest()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\x00")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def size_of(path: Path) -> int:
    """A file's bytes, or the sum of a directory's files' bytes."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_zarr_shard(path: Path, table: pa.Table, token_column: str) -> None:
    """One Zarr v3 group: flat ragged arrays plus ``offsets``, and one array per column."""
    group: Any = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.attrs.update(
        {"encoding-type": "atlasprep-token-shard", "encoding-version": "0.1.0", "n_cells": table.num_rows}
    )
    group.attrs["ragged"] = [n for n in table.column_names if pa.types.is_list(table.schema.field(n).type)]
    group.attrs["columns"] = list(table.column_names)
    lists = table[token_column].combine_chunks()
    offsets = lists.offsets.to_numpy().astype(np.int64)
    group.create_array("offsets", data=offsets, chunks=(min(len(offsets), 1 << 20),))
    for name in table.column_names:
        column = table[name].combine_chunks()
        if pa.types.is_list(column.type):
            data = column.flatten().to_numpy(zero_copy_only=False)
        elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            data = np.array(column.to_pylist(), dtype=np.dtypes.StringDType())
        else:
            data = column.to_numpy(zero_copy_only=False)
        group.create_array(name, data=data, chunks=(max(1, min(len(data), 1 << 20)),))


@dataclass(frozen=True, slots=True, kw_only=True)
class Spill:
    """One spilled batch: its file, the sorted (split, slot) key of each row, its schema and
    (cutting by size) each row's bytes by split."""

    path: Path
    keys: np.ndarray
    schema: pa.Schema
    sizes: tuple[tuple[int, np.ndarray, np.ndarray], ...] = ()  # (split code, slots, bytes)


def write_spill(
    path: Path, table: pa.Table, split_codes: np.ndarray, slots: np.ndarray, by_size: bool
) -> Spill:
    """Write a batch's rows sorted by (split, slot): ``split_codes``/``slots`` are its cells'.
    A shard then reads one contiguous run of rows from each spill."""
    sizes: list[tuple[int, np.ndarray, np.ndarray]] = []
    if by_size:
        row_bytes = row_nbytes(table).astype(np.int32)
        for code in np.unique(split_codes).tolist():
            mine = split_codes == code
            sizes.append((int(code), slots[mine], row_bytes[mine]))
    order = np.lexsort((slots, split_codes))  # by split, then slot
    table = table.combine_chunks()
    compact = _compact_schema(table)
    rows = _take(compact, [(table, order, np.arange(len(order)))], len(order))
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, compact) as writer:
        writer.write_table(rows)
    keys = _key(split_codes[order], slots[order])
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


def _assemble(spills: list[tuple[Path, np.ndarray]], schema: pa.Schema, low: int, n: int) -> pa.Table | None:
    """The cells with keys in ``low … low + n - 1``, gathered in key order from the spills
    (each a file and its sorted keys); None when no spill holds one. Each spill's run of rows is
    copied out while it alone is open (memory-mapped): a corpus of thousands of spills neither
    runs out of file handles nor keeps every spill's touched pages mapped."""
    picks = []  # (spill, its run of rows, their keys' offsets from low)
    for path, keys in spills:
        a, b = np.searchsorted(keys, [low, low + n], "left")
        if b > a:
            picks.append((path, int(a), keys[a:b] - low))
    if not picks:
        return None
    found = np.concatenate([where for _, _, where in picks])
    if len(found) < n:  # some keys were never spilled: close the gaps, keeping the order
        place = np.empty(len(found), dtype=np.int64)
        place[np.argsort(found, kind="stable")] = np.arange(len(found))
        cuts = np.cumsum([len(where) for _, _, where in picks])[:-1]
        picks = [(path, first, at) for (path, first, _), at in zip(picks, np.split(place, cuts), strict=True)]
        n = len(found)
    parts = []
    for path, first, where in picks:
        with pa.memory_map(str(path)) as source:
            run = pa.ipc.open_file(source).read_all().slice(first, len(where)).combine_chunks()
            copied = pa.table([pa.concat_arrays([c.chunk(0)]) for c in run.columns], schema=run.schema)
        parts.append((copied, np.arange(len(where)), where))
    return _take(schema, parts, n)


def _take(schema: pa.Schema, parts: list[tuple[pa.Table, np.ndarray, np.ndarray]], n: int) -> pa.Table:
    """A table of ``n`` rows: ``rows`` of each part's table put at ``where`` (together, every
    place once). List columns are copied once, straight into the new buffers."""
    parts = [(table.combine_chunks(), rows, where) for table, rows, where in parts]
    columns = {
        f.name: _gather_lists([(t[f.name].chunk(0), rows, where) for t, rows, where in parts], n, f.type)
        for f in schema
        if pa.types.is_list(f.type)
    }
    small = [f.name for f in schema if not pa.types.is_list(f.type)]
    if small:
        places = np.concatenate([where for _, _, where in parts])
        picked = pa.concat_tables([t.select(small).take(rows) for t, rows, _ in parts])
        flat = picked.take(np.argsort(places)).combine_chunks()
        columns.update({name: flat[name] for name in small})
    return pa.table([columns[f.name] for f in schema], schema=schema)


def _gather_lists(
    parts: list[tuple[pa.ListArray, np.ndarray, np.ndarray]], n: int, type_: pa.DataType
) -> pa.Array:
    """A list array of ``n`` rows: ``rows`` of each part's array put at ``where``."""
    lengths = np.zeros(n, dtype=np.int64)
    sources = []
    for array, rows, where in parts:
        offsets = array.offsets.to_numpy().astype(np.int64)
        starts = offsets[rows]
        lengths[where] = offsets[rows + 1] - starts
        sources.append((array.values.to_numpy(zero_copy_only=False), starts, where))
    out_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=out_offsets[1:])
    dtype = type_.value_type.to_pandas_dtype()
    values = np.empty(int(out_offsets[-1]), dtype=dtype)
    for src, starts, where in sources:
        _copy_rows(src, starts, lengths[where], values, out_offsets[where])
    return pa.ListArray.from_arrays(
        pa.array(out_offsets.astype(np.int32)), pa.array(values, type=type_.value_type), type=type_
    )


@numba.njit(cache=True, nogil=True)
def _copy_rows(src, starts, lengths, out, out_starts):  # type: ignore[no-untyped-def]  # pragma: no cover
    for r in range(len(starts)):
        n = lengths[r]
        row, to = src[starts[r] : starts[r] + n], out[out_starts[r] : out_starts[r] + n]
        for j in range(n):  # over two views: a loop LLVM vectorizes (6x the indexed copy)
            to[j] = row[j]


def _key(split_code: np.ndarray, slot: np.ndarray) -> np.ndarray:
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


def ragged(values: np.ndarray, offsets: np.ndarray, type_: pa.DataType) -> pa.Array:
    """A list array from flat values and offsets, without copying per cell."""
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values, type=type_))
