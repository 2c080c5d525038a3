"""Arrow shards: one Arrow IPC *stream* file a shard, the format HuggingFace ``datasets`` reads
with ``Dataset.from_file``; ``pyarrow.ipc.open_stream`` reads it too. A shard is memory-mapped
to read it: slices are zero-copy (a ragged column's flat values and offsets are numpy views of
the file)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from atlasprep.shard.format import NA, ShardFormatName

__all__ = ["ArrowFormat", "ArrowReader"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ArrowFormat:
    name: ShardFormatName = ShardFormatName.arrow
    suffix: str = ".arrow"

    def write(self, path: Path, table: pa.Table, token_column: str) -> None:
        del token_column  # each list column keeps its own offsets
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)

    def open(self, path: Path) -> ArrowReader:
        return ArrowReader(path)


class ArrowReader:
    """An Arrow IPC stream shard, memory-mapped: reads are zero-copy slices."""

    def __init__(self, path: Path) -> None:
        with pa.memory_map(str(path)) as source:  # the table's buffers keep the mapping
            self.table = pa.ipc.open_stream(source).read_all()

    @property
    def n_cells(self) -> int:
        return int(self.table.num_rows)  # the record batches' lengths: metadata only

    def columns(self) -> list[str]:
        return list(self.table.column_names)

    def strings(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        column = self.table.column(name).slice(start, None if stop is None else stop - start)
        if column.null_count:
            column = pc.fill_null(column.cast(pa.string()), NA)
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=object)

    def ragged(self, name: str, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        chunked = self.table.column(name).slice(start, stop - start)
        if chunked.num_chunks == 1:
            array = chunked.chunk(0)
        else:  # across record batches (or none): one array, copied
            array = pa.concat_arrays(chunked.chunks) if chunked.num_chunks else pa.array([], chunked.type)
        return array.values.to_numpy(zero_copy_only=False), array.offsets.to_numpy().astype(np.int64)

    def read_table(self) -> pa.Table:
        return self.table
