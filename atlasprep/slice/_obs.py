"""obs written from the slice's Arrow spill, one column at a time, strings a slice at a time.

The spill is mapped again for each column, so the pages one column touched leave the process
with its map. A string column becomes a categorical with sorted categories (the same cells give
the same file whatever order batches came in), sorted and coded in Arrow (in the system
allocator, which returns what it frees), and its categories,
like the cell IDs, are written :data:`STRING_SLICE` values at a time: a column of per-cell
values (the Census ``observation_joinid``) never becomes a million Python strings, which
anndata's ``write_elem`` needs at once (about 250 bytes a cell for the cell IDs and one such
column: +247 MB at 1,000,000 cells). The arrays and their encoding attributes are the ones
anndata writes (``string-array`` 0.2.0, ``categorical`` 0.2.0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from anndata.io import write_elem

__all__ = ["STRING_SLICE", "sorted_dictionary", "write_obs", "write_strings"]

STRING_SLICE = 65_536  # string values turned into Python objects at a time


def write_obs(root: Any, spill: Path | None, id_column: str) -> None:
    """The ``obs`` dataframe group of ``root`` (h5py file or zarr group) from ``spill`` (None:
    no cells), indexed by ``id_column``."""
    group = root.create_group("obs")
    names = [id_column]
    if spill is not None:
        with pa.memory_map(str(spill), "r") as source:
            names = pa.ipc.open_file(source).schema.names
    group.attrs.update(
        {
            "encoding-type": "dataframe",
            "encoding-version": "0.2.0",
            "_index": id_column,
            "column-order": [n for n in names if n != id_column],
        }
    )
    if spill is None:
        write_strings(group, id_column, pa.array([], type=pa.large_string()))
        return
    for name in names:
        with pa.memory_map(str(spill), "r") as source:
            reader = pa.ipc.open_file(source)
            column = pa.chunked_array(
                [reader.get_batch(i).column(name) for i in range(reader.num_record_batches)],
                type=reader.schema.field(name).type,
            )
            _write_column(group, name, column, index=name == id_column)
            del column, reader


def _write_column(group: Any, name: str, column: pa.ChunkedArray, *, index: bool) -> None:
    kind = column.type
    if index:  # the cell IDs: strings as they are
        write_strings(group, name, column)
    elif pa.types.is_large_string(kind) or pa.types.is_string(kind):
        _write_categorical(group, name, column)
    elif pa.types.is_null(kind):  # no value at all (a categorical without categories): as anndata
        _write_categorical(group, name, column.cast(pa.large_string()))
    elif (pa.types.is_boolean(kind) or pa.types.is_integer(kind)) and column.null_count:
        write_elem(group, name, _nullable(column))  # missing values kept: anndata's nullable arrays
    elif pa.types.is_boolean(kind):
        write_elem(group, name, column.to_numpy().astype(bool))
    else:
        write_elem(group, name, column.to_numpy())


def _nullable(column: pa.ChunkedArray) -> Any:
    """A boolean or integer column with missing values as the pandas array anndata writes as
    ``nullable-boolean`` / ``nullable-integer`` (numpy would make them False, or floats)."""
    mask = column.is_null().to_numpy(zero_copy_only=False)
    values = pc.fill_null(column, False if pa.types.is_boolean(column.type) else 0).to_numpy()
    if pa.types.is_boolean(column.type):
        return pd.arrays.BooleanArray(values.astype(bool), mask)
    return pd.arrays.IntegerArray(values, mask)


def sorted_dictionary(column: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(the distinct values, sorted; each value's position among them, -1 for null). UTF-8 byte
    order is code point order: the categories are in Python's ``sorted`` order. Computed in the
    system allocator: Arrow's default (mimalloc) kept the hash tables' memory, 80 MB of RSS
    for a column of a million distinct values, where the system's returns it."""
    pool = pa.system_memory_pool()
    dictionary = pc.drop_null(pc.unique(column, memory_pool=pool), memory_pool=pool)
    dictionary = pc.take(dictionary, pc.sort_indices(dictionary, memory_pool=pool), memory_pool=pool)
    codes = pc.index_in(column, value_set=dictionary, memory_pool=pool)
    codes = pc.coalesce(codes, pa.scalar(-1, codes.type), memory_pool=pool)
    return dictionary, codes.to_numpy()


def _write_categorical(group: Any, name: str, column: pa.ChunkedArray) -> None:
    """What ``write_elem`` writes for a ``pd.Categorical`` of these values (unordered, sorted
    categories, codes in the integer type pandas gives that many categories)."""
    dictionary, codes = sorted_dictionary(column)
    # pandas picks the codes' type from the number of categories (int8 below 127, ...)
    code_type = pd.Categorical.from_codes([], categories=pd.RangeIndex(len(dictionary))).codes.dtype
    sub = group.require_group(name)
    sub.attrs["ordered"] = False
    write_elem(sub, "codes", codes.astype(code_type))
    del codes
    write_strings(sub, "categories", dictionary)
    sub.attrs.update({"encoding-type": "categorical", "encoding-version": "0.2.0"})


def write_strings(group: Any, name: str, values: pa.ChunkedArray | pa.Array) -> None:
    """A ``string-array`` as ``write_elem`` makes it for an object array of these strings (h5py
    variable-length strings; zarr's variable-length UTF-8), written a slice at a time."""
    n = len(values)
    if isinstance(group, h5py.Group):
        array: Any = group.create_dataset(name, shape=(n,), dtype=h5py.special_dtype(vlen=str))
        step = STRING_SLICE
    else:
        from zarr.core.dtype import VariableLengthUTF8

        array = group.create_array(
            name, shape=(n,), dtype=VariableLengthUTF8(), filters=None, fill_value=None
        )
        chunk = int(array.chunks[0]) if n else 1
        # whole chunks (zarr encodes a chunk at once; its own size, 250,000 strings at a
        # million): none is decoded and written again
        step = max(1, STRING_SLICE // chunk) * chunk
    for start in range(0, n, step):
        part = values.slice(start, step).to_numpy(zero_copy_only=False)
        array[start : start + len(part)] = part.astype(object, copy=False)
    array.attrs.update({"encoding-type": "string-array", "encoding-version": "0.2.0"})
