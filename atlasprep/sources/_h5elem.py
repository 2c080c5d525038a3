"""An h5ad's obs and var read with h5py alone, as ``anndata.io.read_elem`` builds them.

Importing anndata takes about 0.45 s (it loads dask and zarr), more than an h5ad ``tokenize`` of
50,000 cells spends reading them. The elements every current writer makes (anndata's on-disk
specification: dataframe 0.2.0, array and string-array 0.2.0, categorical 0.2.0, nullable integer
and boolean 0.1.0) are read here into the same pandas and numpy values that anndata's readers
make; any other element (a zarr store, a pre-0.7 layout, an encoding added later) goes to
anndata's own ``read_elem``, imported then. ``tests/test_h5elem.py`` compares the two element by
element.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np
import pandas as pd

__all__ = ["read_elem"]


def read_elem(elem: Any) -> Any:
    """The element's value, as ``anndata.io.read_elem`` gives it (anndata's old-format warnings
    silenced: atlasprep reads those layouts on purpose)."""
    reader = _READERS.get((type(elem), _spec(elem))) if type(elem) in _TYPES else None
    if reader is not None:
        return reader(elem)
    from anndata import OldFormatWarning
    from anndata.io import read_elem as anndata_read_elem

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OldFormatWarning)
        return anndata_read_elem(elem)


def _attr(elem: Any, name: str, default: Any = None) -> Any:
    """An attribute as anndata reads it: fixed-length byte strings (as Julia's HDF5.jl writes
    them) decoded, anything else as h5py gives it."""
    if name not in elem.attrs:
        return default
    value = elem.attrs[name]
    kind = h5py.check_string_dtype(elem.attrs.get_id(name).dtype)
    if kind is None or kind.length is None:
        return value
    if np.ndim(value) == 0:
        return value.decode("utf-8")
    return [v.decode("utf-8") if isinstance(v, bytes) else v for v in value]


def _spec(elem: Any) -> tuple[str, str] | None:
    kind, version = _attr(elem, "encoding-type", ""), _attr(elem, "encoding-version", "")
    return (kind, version) if isinstance(kind, str) and isinstance(version, str) else None


def _dataframe(elem: h5py.Group) -> pd.DataFrame:
    columns = list(_attr(elem, "column-order"))
    index_key = _attr(elem, "_index")
    frame = pd.DataFrame(
        {k: read_elem(elem[k]) for k in columns},
        index=read_elem(elem[index_key]),
        columns=columns or None,
    )
    if index_key != "_index":
        frame.index.name = index_key
    return frame


def _array(elem: h5py.Dataset) -> np.ndarray:
    return elem[()]


def _string_array(elem: h5py.Dataset) -> np.ndarray:
    return elem.asstr()[()]


def _categorical(elem: h5py.Group) -> pd.Categorical:
    return pd.Categorical.from_codes(
        codes=read_elem(elem["codes"]),
        categories=read_elem(elem["categories"]),
        ordered=bool(_attr(elem, "ordered")),
    )


def _nullable(array_type: Callable[..., Any]) -> Callable[[h5py.Group], Any]:
    def read(elem: h5py.Group) -> Any:
        return array_type(read_elem(elem["values"]), mask=read_elem(elem["mask"]))

    return read


_TYPES = (h5py.Group, h5py.Dataset)  # exactly these: a File (the root) is anndata's to read

# (h5py type, (encoding-type, encoding-version)) -> reader: pairs anndata registers a reader for,
# with the values its readers make
_READERS: dict[tuple[type, tuple[str, str] | None], Callable[[Any], Any]] = {
    (h5py.Group, ("dataframe", "0.2.0")): _dataframe,
    (h5py.Dataset, ("array", "0.2.0")): _array,
    (h5py.Dataset, ("string-array", "0.2.0")): _string_array,
    (h5py.Group, ("categorical", "0.2.0")): _categorical,
    (h5py.Group, ("nullable-integer", "0.1.0")): _nullable(pd.arrays.IntegerArray),
    (h5py.Group, ("nullable-boolean", "0.1.0")): _nullable(pd.arrays.BooleanArray),
}
