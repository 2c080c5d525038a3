"""Shard formats: one :class:`ShardFormat` per way of storing a shard, one reader protocol.

A shard is one table of cells: ragged token columns (``input_ids``, ``values``: a list per cell)
and per-cell columns (``cell_id``, obs strings). Every format writes such a table to a path and
opens it again as a :class:`ShardReader`; the rest of atlasprep (the writer, the store checks,
the loader) goes through these two protocols and never looks at a file's suffix:
:func:`format_for` is the only place that does. The implementations are
:mod:`atlasprep.shard.arrow` (Arrow IPC stream files) and :mod:`atlasprep.shard.zarr` (Zarr v3
groups); ``tests/test_shard_formats.py`` is the conformance suite that both run.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa

from atlasprep._digests import sha256_file
from atlasprep._names import ShardFormatName
from atlasprep.errors import InputFormatError

__all__ = [
    "FORMATS",
    "NA",
    "ShardFormat",
    "ShardFormatName",
    "ShardReader",
    "format_for",
    "format_named",
    "ragged",
    "sha256_of",
    "size_of",
]


NA = "<NA>"  # what :meth:`ShardReader.strings` gives for a null


class ShardReader(Protocol):
    """One shard, open for reading. Rows are cells, ``0 .. n_cells - 1``."""

    @property
    def n_cells(self) -> int:
        """Cells in the shard, from its metadata alone (no token is read): what store checks use."""
        ...

    def columns(self) -> list[str]:
        """The shard's columns, in the order they were written."""
        ...

    def strings(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Cells ``start .. stop - 1`` of a per-cell column, as an object array of ``str``
        (a null as :data:`NA`)."""
        ...

    def ragged(self, name: str, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Cells ``start .. stop - 1`` of a ragged column: flat values and ``stop - start + 1``
        int64 offsets into them (cell ``start + i`` is ``values[offsets[i]:offsets[i + 1]]``).
        The values may reach past the range: they are views of the stored buffer where possible."""
        ...

    def read_table(self) -> pa.Table:
        """The whole shard as an Arrow table."""
        ...


class ShardFormat(Protocol):
    """A way to store a shard: a name (what configs and manifests say) and a file suffix."""

    @property
    def name(self) -> ShardFormatName: ...

    @property
    def suffix(self) -> str:
        """The shard's name ends in it (``".arrow"``)."""
        ...

    def write(self, path: Path, table: pa.Table, token_column: str) -> None:
        """Write ``table`` as one shard at ``path`` (a temporary path: the caller renames it).
        The same table gives the same bytes. ``token_column`` is the ragged column whose
        offsets a format may store once for all ragged columns (they share them)."""
        ...

    def open(self, path: Path) -> ShardReader: ...


@functools.cache
def _formats() -> dict[ShardFormatName, ShardFormat]:
    from atlasprep.shard.arrow import ArrowFormat
    from atlasprep.shard.zarr import ZarrFormat

    formats: dict[ShardFormatName, ShardFormat] = {
        ShardFormatName.arrow: ArrowFormat(),
        ShardFormatName.zarr: ZarrFormat(),
    }
    assert sorted(formats) == sorted(ShardFormatName)
    return formats


def format_named(name: ShardFormatName | str) -> ShardFormat:
    """The format a config names (``"arrow"``, ``"zarr"``)."""
    if name not in list(ShardFormatName):
        raise InputFormatError(f"unknown shard format {name!r} (known: {', '.join(_formats())})")
    return _formats()[ShardFormatName(name)]


def format_for(path: Path) -> ShardFormat:
    """The format of the shard at ``path``, from its suffix."""
    for fmt in _formats().values():
        if path.suffix == fmt.suffix:
            return fmt
    known = ", ".join(f.suffix for f in _formats().values())
    raise InputFormatError(f"{path}: not a shard (a shard's name ends in one of {known})")


def ragged(values: np.ndarray, offsets: np.ndarray, type_: pa.DataType) -> pa.Array:
    """A list array from flat values and offsets, without copying per cell."""
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values, type=type_))


def sha256_of(path: Path) -> str:
    """A file's sha256, or a directory's: over its sorted relative paths and their bytes."""
    if path.is_file():  # (from the page cache, just written; on a writer thread)
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\x00")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def size_of(path: Path) -> int:
    """A file's bytes, or the sum of a directory's files' bytes."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


if TYPE_CHECKING:
    FORMATS: dict[ShardFormatName, ShardFormat]


def __getattr__(name: str) -> Any:
    """``FORMATS`` (every shard format by name), made on first use: the formats' own modules
    import this one, so making it while this module loads broke ``import atlasprep.shard.zarr``
    as a program's first atlasprep import."""
    if name == "FORMATS":
        return _formats()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
