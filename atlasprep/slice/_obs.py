"""obs written from the slice's Arrow spill, one column at a time, strings a slice at a time.

The spill is mapped again for each column, so the pages one column touched leave the process
with its map. How text columns are typed is the writer's choice (:data:`ObsTypes`):

- ``"source"``: a column the source gives as categories (an Arrow dictionary: a SOMA
  enumeration, a pandas categorical) stays a categorical with the source's categories, in its
  order, ordered or not as it was; plain text stays text, unless it has missing values (a
  column one of several files lacks): that becomes a categorical of its values, sorted. This is what
  ``cellxgene_census.get_anndata`` returns for the same cells (every category of the
  enumeration, ``observation_joinid`` as strings).
- ``"used"``: as ``"source"``, without the categories no cell of the slice holds, the rest in
  their order: what anndata's subsetting gives (``anndata.settings.remove_unused_categories``).
- ``"sorted"``: every text column a categorical of the values the cells hold, sorted
  (``harmonize``: the CELLxGENE schema wants its text columns categorical).

Codes are computed in Arrow (in the system allocator, which returns what it frees), and
categories, like the cell IDs, are written :data:`STRING_SLICE` values at a time: a column of per-cell
values (the Census ``observation_joinid``) never becomes a million Python strings, which
anndata's ``write_elem`` needs at once (about 250 bytes a cell for the cell IDs and one such
column: +247 MB at 1,000,000 cells). The arrays and their encoding attributes are the ones
anndata writes (``string-array`` 0.2.0, ``categorical`` 0.2.0).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from anndata.io import write_elem

from atlasprep.sources.base import SourceInfo

__all__ = [
    "STRING_SLICE",
    "Categories",
    "ObsTypes",
    "merge_categories",
    "obs_types_of",
    "sorted_dictionary",
    "write_obs",
    "write_strings",
]

STRING_SLICE = 65_536  # string values turned into Python objects at a time

ObsTypes = Literal["source", "used", "sorted"]
# a column's categories as the source gave them: (the values, in order; ordered)
Categories = tuple[pa.Array, bool]


def obs_types_of(info: SourceInfo) -> ObsTypes:
    """obs as the reference reader gives the same cells: ``get_anndata``'s categories (every
    one the enumeration holds) for SOMA, anndata's subsetting's for AnnData files (without the
    unused ones, where anndata's setting says so)."""
    import anndata as ad

    if info.kind == "anndata" and ad.settings.remove_unused_categories:
        return "used"
    return "source"


def merge_categories(known: Categories | None, column: pa.ChunkedArray) -> Categories | None:
    """The categories of a column after one more batch of it: ``known`` (None: the first batch)
    and each chunk's dictionary, the new values after the known in the order they come, and
    unordered once two batches disagree. None when the column is not categorical in this
    batch, or its categories cannot be joined (values of two types): it is written as values."""
    if not pa.types.is_dictionary(column.type):
        return None
    kind = column.type
    seen = [_plain(chunk.dictionary) for chunk in column.chunks] or [pa.array([], kind.value_type)]
    merged = known if known is not None else (seen[0], bool(kind.ordered))
    for dictionary in seen:
        if merged[0].equals(dictionary):
            continue
        values = [merged[0], dictionary]
        if pa.types.is_null(values[0].type):
            values[0] = values[0].cast(values[1].type)
        elif pa.types.is_null(values[1].type):
            values[1] = values[1].cast(values[0].type)
        if values[0].type != values[1].type:
            return None
        merged = (pc.unique(pa.concat_arrays(values)), False)
    return merged


def _plain(dictionary: pa.Array) -> pa.Array:
    """A dictionary's values as the spill holds them (text as large_string), nulls dropped."""
    if pa.types.is_string(dictionary.type):
        dictionary = dictionary.cast(pa.large_string())
    return pc.drop_null(dictionary)


def write_obs(
    root: Any,
    spill: Path | None,
    id_column: str,
    *,
    types: ObsTypes = "sorted",
    categories: Mapping[str, Categories | None] | None = None,
    index_name: str | None = None,
) -> None:
    """The ``obs`` dataframe group of ``root`` (h5py file or zarr group) from ``spill`` (None:
    no cells), indexed by ``id_column``; text typed by ``types``, with ``categories`` the
    source's categories of each column (None or absent: not categorical in the source).
    ``index_name``: the index's name, kept as anndata keeps one (the key it is stored under),
    unless a column has that name or it is not a plain key (then unnamed)."""
    group = root.create_group("obs")
    names = [id_column]
    if spill is not None:
        with pa.memory_map(str(spill), "r") as source:
            names = pa.ipc.open_file(source).schema.names
    columns = [n for n in names if n != id_column]
    key, shared = id_column, False
    if index_name and "/" not in index_name:
        if index_name not in columns:
            key = index_name
        elif spill is not None and _same_text(spill, id_column, index_name):
            key, shared = index_name, True  # one array, the index and that column (as anndata)
    group.attrs.update(
        {
            "encoding-type": "dataframe",
            "encoding-version": "0.2.0",
            "_index": key,
            "column-order": columns,
        }
    )
    if spill is None:
        write_strings(group, key, pa.array([], type=pa.large_string()))
        return
    for name in names:
        if shared and name == key:
            continue
        with pa.memory_map(str(spill), "r") as source:
            column = _spilled(source, name)
            found = None if types == "sorted" or categories is None else categories.get(name)
            if name == id_column:
                _write_column(group, key, column, index=True, text_as=types)
            elif found is not None:
                _write_source_categorical(group, name, column, found, drop_unused=types == "used")
            else:
                _write_column(group, name, column, index=False, text_as=types)
            del column


def _spilled(source: pa.MemoryMappedFile, name: str) -> pa.ChunkedArray:
    reader = pa.ipc.open_file(source)
    return pa.chunked_array(
        [reader.get_batch(i).column(name) for i in range(reader.num_record_batches)],
        type=reader.schema.field(name).type,
    )


def _same_text(spill: Path, a: str, b: str) -> bool:
    """Whether the spilled columns ``a`` and ``b`` hold the same text, row by row (no nulls)."""
    with pa.memory_map(str(spill), "r") as source:
        left, right = _spilled(source, a), _spilled(source, b)
        if pa.types.is_dictionary(right.type):
            right = right.cast(right.type.value_type)
        if not (pa.types.is_string(right.type) or pa.types.is_large_string(right.type)) or right.null_count:
            return False
        return bool(left.cast(pa.large_string()).equals(right.cast(pa.large_string())))


def _write_column(group: Any, name: str, column: pa.ChunkedArray, *, index: bool, text_as: ObsTypes) -> None:
    kind = column.type
    if index:  # the cell IDs: strings as they are
        write_strings(group, name, column)
    elif pa.types.is_large_string(kind) or pa.types.is_string(kind):
        # text with missing values: a categorical (code -1), as anndata writes such a column;
        # a string array has no missing value (h5py refuses None, zarr would store "None")
        if text_as == "sorted" or column.null_count:
            _write_categorical(group, name, column)
        else:
            write_strings(group, name, column)
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
    categories)."""
    dictionary, codes = sorted_dictionary(column)
    _write_codes(group, name, codes, dictionary, ordered=False)


def _write_source_categorical(
    group: Any, name: str, column: pa.ChunkedArray, found: Categories, *, drop_unused: bool
) -> None:
    """What ``write_elem`` writes for a ``pd.Categorical`` of these values with the source's
    categories (those no cell holds dropped where ``drop_unused``)."""
    dictionary, ordered = found
    pool = pa.system_memory_pool()
    if len(dictionary) == 0 or pa.types.is_null(column.type):
        codes = np.full(len(column), -1, dtype=np.int64)
    else:
        found_at = pc.index_in(column, value_set=dictionary.cast(column.type), memory_pool=pool)
        codes = pc.coalesce(found_at, pa.scalar(-1, found_at.type), memory_pool=pool).to_numpy()
    if drop_unused:
        used = np.zeros(len(dictionary), dtype=bool)
        used[codes[codes >= 0]] = True
        if not used.all():
            new_code = np.cumsum(used) - 1
            codes = np.where(codes >= 0, new_code[np.maximum(codes, 0)], -1)
            dictionary = dictionary.filter(pa.array(used))
    _write_codes(group, name, codes, dictionary, ordered=ordered)


def _write_codes(group: Any, name: str, codes: np.ndarray, dictionary: pa.Array, *, ordered: bool) -> None:
    """A ``categorical`` element: ``codes`` in the integer type pandas gives that many categories
    (int8 below 127, ...), and the categories (text a slice at a time, else as numbers)."""
    code_type = pd.Categorical.from_codes([], categories=pd.RangeIndex(len(dictionary))).codes.dtype
    sub = group.require_group(name)
    sub.attrs["ordered"] = bool(ordered)
    write_elem(sub, "codes", codes.astype(code_type))
    if (
        pa.types.is_null(dictionary.type)
        or pa.types.is_string(dictionary.type)
        or pa.types.is_large_string(dictionary.type)
    ):
        write_strings(sub, "categories", dictionary.cast(pa.large_string()))
    else:
        write_elem(sub, "categories", dictionary.to_numpy(zero_copy_only=False))
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
