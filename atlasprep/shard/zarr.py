"""Zarr shards: one Zarr v3 group a shard, with one ``offsets`` array (``n_cells + 1``, shared by
every ragged column), one flat array per ragged column and one array per per-cell column.

The group's attributes say what it is (``encoding-type``, ``encoding-version``), its ``n_cells``,
its ``columns`` in order and which are ``ragged``; a per-cell column with nulls also gets a
boolean ``<column>.null`` array, listed in the ``nulls`` attribute (its own array holds "" or
False, 0, NaN there).
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from atlasprep.shard.format import NA, ShardFormatName, ragged

__all__ = ["ZarrFormat", "ZarrReader", "read_ahead", "write_zarr_shard"]

_CHUNK = 1 << 20  # elements per chunk


@dataclass(frozen=True, slots=True, kw_only=True)
class ZarrFormat:
    name: ShardFormatName = ShardFormatName.zarr
    suffix: str = ".zarr"

    def write(self, path: Path, table: pa.Table, token_column: str) -> None:
        write_zarr_shard(path, table, token_column)

    def open(self, path: Path) -> ZarrReader:
        return ZarrReader(path)


def write_zarr_shard(path: Path, table: pa.Table, token_column: str) -> None:
    """One Zarr v3 group: flat ragged arrays plus ``offsets``, and one array per column. Every list
    column has the lengths of ``token_column``: they share its offsets."""
    import zarr  # here, not at import: an Arrow build never loads zarr (0.1 s)

    group: Any = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.attrs.update(
        {"encoding-type": "atlasprep-token-shard", "encoding-version": "0.1.0", "n_cells": table.num_rows}
    )
    group.attrs["ragged"] = [n for n in table.column_names if pa.types.is_list(table.schema.field(n).type)]
    group.attrs["columns"] = list(table.column_names)
    offsets = _offsets(table[token_column])
    group.create_array("offsets", data=offsets, chunks=(min(len(offsets), _CHUNK),))
    nulls = []
    for name in table.column_names:
        column = table[name].combine_chunks()
        if pa.types.is_dictionary(column.type):  # categorical: stored as its values
            column = column.cast(column.type.value_type)
        if pa.types.is_list(column.type):
            if not np.array_equal(_offsets(column), offsets):
                raise ValueError(f"{path}: list column {name!r} has other lengths than {token_column!r}")
            data = column.flatten().to_numpy(zero_copy_only=False)
        else:
            if column.null_count:  # the nulls as a mask; the values there filled (numpy has no null)
                nulls.append(name)
                null = column.is_null().to_numpy(zero_copy_only=False)
                group.create_array(f"{name}.null", data=null, chunks=(max(1, min(len(null), _CHUNK)),))
                column = column.fill_null(_filler(column.type))
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                data = np.array(column.to_pylist(), dtype=np.dtypes.StringDType())
            else:
                data = column.to_numpy(zero_copy_only=False)
        group.create_array(name, data=data, chunks=(max(1, min(len(data), _CHUNK)),))
    if nulls:
        group.attrs["nulls"] = nulls


def _filler(type_: pa.DataType) -> pa.Scalar:
    """What a null of a per-cell column is stored as beside its mask: "", False, 0 or NaN."""
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return pa.scalar("", type_)
    if pa.types.is_boolean(type_):
        return pa.scalar(False)
    if pa.types.is_floating(type_):
        return pa.scalar(float("nan"), type_)
    return pa.scalar(0).cast(type_)


def _offsets(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A list column's offsets from 0 (a slice's start elsewhere)."""
    lists = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = lists.offsets.to_numpy().astype(np.int64)
    return offsets - offsets[0]


class ZarrReader:
    """A Zarr v3 group shard.

    Per-cell arrays (``offsets``, strings) are small and stored as one chunk: they are read whole,
    once. A ragged read takes the flat elements between the range's first and last offset,
    widened to whole chunks (zarr decodes whole chunks anyway), and keeps the last chunk, so the
    next range, which starts inside it, does not decode it again.
    """

    def __init__(self, path: Path) -> None:
        import zarr

        self._attach(zarr.open_group(str(path), mode="r"))
        self._folder: Path | None = Path(path)  # a local shard: chunks read as files (_Chunks)

    def _attach(self, group: Any) -> None:
        """Read ``group`` (zarr types its members as a union: Any)."""
        self.group: Any = group
        self._folder = None
        self._cells: dict[str, np.ndarray] = {}
        self._tail: dict[str, tuple[int, np.ndarray]] = {}  # flat array -> (start, its last chunk read)
        self._arrays: dict[str, Any] = {}  # opened once: a lookup in the group reads its metadata
        self._chunks: dict[str, _Chunks | None] = {}

    @property
    def n_cells(self) -> int:
        return int(self.group["offsets"].shape[0]) - 1  # the offsets' shape: metadata only

    def columns(self) -> list[str]:
        return list(self.group.attrs["columns"])

    def _column(self, name: str) -> np.ndarray:
        if name not in self._cells:
            self._cells[name] = np.asarray(self.group[name][:])
        return self._cells[name]

    def _nulls(self, name: str) -> np.ndarray | None:
        return self._column(f"{name}.null") if name in self.group.attrs.get("nulls", ()) else None

    def strings(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        stored = self._column(name)[start:stop]
        null = self._nulls(name)
        if null is not None and stored.dtype.kind not in ("T", "U", "O"):
            # as an Arrow shard gives a column with nulls: its values as text, a null as NA
            text = pa.array(stored, mask=null[start:stop]).cast(pa.string()).fill_null(NA)
            return np.asarray(text.to_numpy(zero_copy_only=False), dtype=object)
        values = np.asarray(stored, dtype=object)
        if null is not None:
            values[null[start:stop]] = NA
        return values

    def ragged(self, name: str, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        offsets = self._column("offsets")[start : stop + 1].astype(np.int64)
        data, first = self._flat(name, int(offsets[0]), int(offsets[-1]))
        return data, offsets - first

    def _flat(self, name: str, a: int, b: int) -> tuple[np.ndarray, int]:
        """Elements ``[low, high) ⊇ [a, b)`` of a flat array, in whole chunks, and ``low``."""
        array = self._arrays.get(name)
        if array is None:
            array = self._arrays[name] = self.group[name]
        if b <= a:
            return np.zeros(0, dtype=array.dtype), a
        size = int(array.chunks[0])
        low, high = a // size * size, min(int(array.shape[0]), -(-b // size) * size)
        tail = self._tail.get(name)
        read = self._reader(name, array)
        if tail is not None and tail[0] == low:
            kept = tail[1]
            data = kept if high <= low + len(kept) else read(low + len(kept), high, kept)
        else:
            data = read(low, high, None)
        last = (high - 1) // size * size
        self._tail[name] = (last, data[last - low :])
        return data, low

    def _reader(self, name: str, array: Any) -> Any:
        """``read(low, high, head)``: ``head`` (what is kept of the last read) then whole chunks
        ``[low, high)`` of a flat array, decoded from their files where the array is a plain local
        one (:class:`_Chunks`), else through zarr."""
        if name not in self._chunks:
            self._chunks[name] = _Chunks.of(self._folder / name, array) if self._folder else None
        chunks = self._chunks[name]
        if chunks is not None:
            return chunks.read

        def read(low: int, high: int, head: np.ndarray | None) -> np.ndarray:
            data = np.asarray(array[low:high])
            return data if head is None else np.concatenate([head, data])

        return read

    def read_table(self) -> pa.Table:
        offsets = self.group["offsets"][:]
        is_ragged = set(self.group.attrs["ragged"])
        columns = {}
        for name in self.columns():
            data = self.group[name][:]
            if name in is_ragged:
                columns[name] = ragged(data, offsets, pa.from_numpy_dtype(data.dtype))
                continue
            if data.dtype.kind in ("T", "U", "O"):
                columns[name] = pa.array(data.astype(object), pa.string(), mask=self._nulls(name))
            else:
                columns[name] = pa.array(data, mask=self._nulls(name))
        return pa.table(columns)


class _Chunks:
    """Whole chunks of a one-dimensional local Zarr v3 array whose codecs are ``bytes`` then
    ``zstd`` (what :func:`write_zarr_shard` writes), each read as its file and decoded with
    numcodecs: zarr-python's reading cost about twice as much for the same chunks (100,000 cells'
    tokens, 560 MB: 0.79-1.05 s against 0.38 s). A chunk with no file holds the fill value (zarr
    writes no chunk that is all fill).

    Reads go forward through a shard (a loader's windows), so once a read ends at chunk ``i``,
    chunk ``i + 1`` is decoded on a background thread (numcodecs releases the GIL) while the
    caller pads its batches: one chunk ahead, per array, in the process that asked for it."""

    def __init__(self, folder: Path, dtype: np.dtype, size: int, length: int, fill: Any) -> None:
        from numcodecs import Zstd  # type: ignore[import-untyped]

        self._folder, self._dtype, self._size, self._length, self._fill = folder, dtype, size, length, fill
        self._codec = Zstd()
        self._ahead: tuple[int, int, Future[np.ndarray]] | None = None  # (pid, chunk, its decoding)

    @classmethod
    def of(cls, folder: Path, array: Any) -> _Chunks | None:
        """The reader of ``array`` stored in ``folder``; None where it is another kind of array
        (more dimensions, other codecs, sharding, other chunk keys), which zarr reads."""
        from zarr.codecs import BytesCodec, ZstdCodec
        from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
        from zarr.core.metadata import ArrayV3Metadata

        meta = array.metadata
        if not isinstance(meta, ArrayV3Metadata) or len(meta.shape) != 1 or meta.storage_transformers:
            return None
        codecs = meta.codecs
        if not (
            len(codecs) == 2
            and isinstance(codecs[0], BytesCodec)
            and codecs[0].endian is not None
            and codecs[0].endian.value == "little"
            and isinstance(codecs[1], ZstdCodec)
            and not codecs[1].checksum
            and isinstance(meta.chunk_key_encoding, DefaultChunkKeyEncoding)
            and meta.chunk_key_encoding.separator == "/"
        ):
            return None
        dtype = np.dtype(array.dtype)
        if dtype.kind not in "biuf":
            return None
        fill = meta.fill_value
        return cls(folder, dtype.newbyteorder("<"), int(array.chunks[0]), int(array.shape[0]), fill)

    def read(self, low: int, high: int, head: np.ndarray | None) -> np.ndarray:
        """``head`` (elements already read) then elements ``[low, high)``, ``low`` on a chunk
        boundary: each chunk decoded straight into its place (a chunk is stored whole, the last
        one too, padded with the fill value)."""
        first, last = low // self._size, (high - 1) // self._size
        start = 0 if head is None else len(head)
        data = np.empty(start + (last - first + 1) * self._size, dtype=self._dtype)
        if head is not None:
            data[:start] = head
        for k, index in enumerate(range(first, last + 1)):
            place = data[start + k * self._size : start + (k + 1) * self._size]
            ahead = self._ahead
            if ahead is not None and ahead[0] == os.getpid() and ahead[1] == index:
                self._ahead = None
                place[:] = ahead[2].result()
            else:
                self._decode(index, place)
        if _READ_AHEAD and (last + 1) * self._size < self._length:
            buffer = np.empty(self._size, dtype=self._dtype)
            decoding = _decoder().submit(self._decode, last + 1, buffer)
            self._ahead = (os.getpid(), last + 1, decoding)
        return data[: start + high - low]

    def _decode(self, index: int, place: np.ndarray) -> np.ndarray:
        """Chunk ``index`` into ``place`` (the fill value where it has no file)."""
        try:
            raw = (self._folder / "c" / str(index)).read_bytes()
        except FileNotFoundError:
            place[:] = self._fill
            return place
        self._codec.decode(raw, out=place)
        return place


_DECODER: tuple[int, ThreadPoolExecutor] | None = None
_READ_AHEAD = True


def read_ahead(enabled: bool) -> None:
    """Whether this process decodes the next chunk of a local Zarr shard on a thread of its own
    (:class:`_Chunks`): on by default; a loader worker turns it off where the workers already
    keep every core busy (2 workers on 2 cores ran 5-14% slower with it, no workers 23% faster)."""
    global _READ_AHEAD
    _READ_AHEAD = enabled


def _decoder() -> ThreadPoolExecutor:
    """This process's decoding thread (a forked loader worker starts its own)."""
    global _DECODER
    if _DECODER is None or _DECODER[0] != os.getpid():
        _DECODER = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="atlasprep-zarr"))
    return _DECODER[1]
