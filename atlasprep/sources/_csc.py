"""A CSC matrix's rows: the file's matrix copied once, as CSR, to a temporary directory.

Rows of a CSC matrix are spread over every column, so they cannot be read in batches as stored.
The copy streams the matrix twice, in steps of a few million values: the first pass counts each
row's values (the row pointers, made when the file is opened, as a CSR's are read), the second,
made when rows are first read, writes each value to its place in memory-mapped ``data`` and
``indices`` files (a compiled loop over the columns in order, so each row's values come in
column order, as ``tocsr`` orders them; stored zeros are kept). Memory holds one step and the
row pointers; the disk holds the copy (the size of the matrix) until the source closes.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

import numba
import numpy as np
import scipy.sparse as sp

from atlasprep.errors import InputFormatError

__all__ = ["CsrCopy"]

log = logging.getLogger("atlasprep.sources")

_STEP = 1 << 22  # values read at a time


class CsrCopy:
    """Rows of the CSC matrix ``elem`` (an AnnData sparse group, h5py or zarr), read as CSR."""

    def __init__(self, elem: Any, name: str) -> None:
        self._elem = elem
        self._name = name
        n_rows, n_cols = (int(n) for n in elem.attrs["shape"])
        self.shape = (n_rows, n_cols)
        self.dtype = np.dtype(elem["data"].dtype)
        self._columns = np.asarray(elem["indptr"][:], dtype=np.int64)
        nnz = int(self._columns[-1])
        counts = np.zeros(n_rows, dtype=np.int64)
        indices = elem["indices"]
        for a in range(0, nnz, _STEP):
            step = np.asarray(indices[a : min(nnz, a + _STEP)])
            if len(step) and (int(step.min()) < 0 or int(step.max()) >= n_rows):
                raise InputFormatError(f"{name}: a row index outside its {n_rows:,} rows; is it damaged?")
            counts += np.bincount(step, minlength=n_rows)
        self.indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(counts, out=self.indptr[1:])
        self._lock = threading.Lock()
        self._csr: sp.csr_matrix | None = None
        self._cleanup: weakref.finalize | None = None

    def rows(self, rows: np.ndarray) -> sp.csr_matrix:
        """These rows, as a CSR matrix of their own (copied out of the files)."""
        return sp.csr_matrix(self._copy()[rows])

    def close(self) -> None:
        """Remove the copy (the source is closing)."""
        with self._lock:
            self._csr = None
            if self._cleanup is not None:
                self._cleanup()

    def _copy(self) -> sp.csr_matrix:
        with self._lock:
            if self._csr is None:
                self._csr = self._write()
            return self._csr

    def _write(self) -> sp.csr_matrix:
        n_cols = self.shape[1]
        nnz = int(self.indptr[-1])
        where = Path(tempfile.mkdtemp(prefix="atlasprep-csr-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, where, True)
        log.info("%s is stored CSC: copying its %d values as CSR rows to %s", self._name, nnz, where)
        index_dtype = np.int32 if n_cols < 2**31 else np.int64
        data = np.lib.format.open_memmap(where / "data.npy", mode="w+", dtype=self.dtype, shape=(nnz,))
        indices = np.lib.format.open_memmap(where / "indices.npy", mode="w+", dtype=index_dtype, shape=(nnz,))
        fill = self.indptr[:-1].copy()
        first = 0
        while first < n_cols:  # columns a step of values at a time (a longer column alone)
            end = int(np.searchsorted(self._columns, self._columns[first] + _STEP, "right")) - 1
            last = min(max(first + 1, end), n_cols)
            a, b = int(self._columns[first]), int(self._columns[last])
            _place_columns(
                first,
                self._columns[first : last + 1] - a,
                np.asarray(self._elem["indices"][a:b]),
                np.asarray(self._elem["data"][a:b]),
                fill,
                indices,
                data,
            )
            first = last
        return sp.csr_matrix((data, indices, self.indptr), shape=self.shape)


@numba.njit(cache=True, nogil=True)
def _place_columns(first, pointers, rows, values, fill, out_indices, out_data):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Columns ``first`` on (``pointers`` into ``rows``/``values``): each value to the next free
    place of its row."""
    for c in range(len(pointers) - 1):
        column = first + c
        for e in range(pointers[c], pointers[c + 1]):
            row = rows[e]
            at = fill[row]
            out_indices[at] = column
            out_data[at] = values[e]
            fill[row] = at + 1
