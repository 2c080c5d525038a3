"""COO -> CSR for one batch of SOMA X coordinates, in two compiled passes without the GIL.

TileDB returns a batch's values in tile order, not row order, so they need regrouping by row.
scipy's ``csr_matrix((data, (rows, cols)))`` validates, converts and canonicalizes in several
passes holding the GIL; here a counting pass and a scatter pass, compiled with numba
(``nogil``: reader threads convert in parallel), read TileDB's Arrow buffers in place, map
soma_joinids to batch rows and X columns to output columns on the way, and never concatenate
the tables. Within a row, values arrive in column-tile order with columns sorted inside each
tile, so the result is usually canonical already; the kernel says when it is not, and scipy
then sorts and sums.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
import pyarrow as pa
import scipy.sparse as sp
import tiledbsoma as soma

__all__ = ["RowMap", "tables_to_csr"]

# A lookup table over the joinid span is used while the span is at most this many times the
# batch (beyond that a hash indexer costs less memory).
_MAX_SPAN_RATIO = 64
_EMPTY = np.zeros(0, dtype=np.int64)


class RowMap:
    """soma_joinid -> row within a sorted, unique ``chunk`` of joinids."""

    def __init__(self, chunk: np.ndarray) -> None:
        self.first = int(chunk[0])
        span = int(chunk[-1]) - self.first + 1
        self.lut = _EMPTY  # contiguous run: the row is an offset
        self.indexer = None
        if span != len(chunk) and span <= _MAX_SPAN_RATIO * len(chunk):
            self.lut = np.full(span, -1, dtype=np.int64)
            self.lut[chunk - self.first] = np.arange(len(chunk))
        elif span != len(chunk):
            self.indexer = soma.IntIndexer(chunk)

    def prepared(self, joinids: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
        """(ids, offset, lut) for the kernels: row = lut[ids - offset], or ids - offset."""
        if self.indexer is not None:
            return np.asarray(self.indexer.get_indexer(joinids), dtype=np.int64), 0, _EMPTY
        return joinids, self.first, self.lut


# TileDB returns each row's values of one column tile together, so the kernels walk runs of
# one row: its output row and fill position are looked up once a run, not once a value.


@numba.njit(cache=True, nogil=True)
def _count(ids, offset, lut, cols, col_lut, counts):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    n = len(ids)
    i = 0
    while i < n:
        row_id = ids[i]
        r = row_id - offset
        if len(lut):
            r = lut[r]
        kept = 0
        while i < n and ids[i] == row_id:
            if not len(col_lut) or col_lut[cols[i]] >= 0:  # else a column the caller does not want
                kept += 1
            i += 1
        counts[r + 1] += kept


@numba.njit(cache=True, nogil=True)
def _scatter(ids, offset, lut, cols, col_lut, data, indptr, fill, indices, values):  # type: ignore[no-untyped-def]  # pragma: no cover
    canonical = True
    n = len(ids)
    i = 0
    while i < n:
        row_id = ids[i]
        r = row_id - offset
        if len(lut):
            r = lut[r]
        p = fill[r]
        last = indices[p - 1] if p > indptr[r] else -1
        while i < n and ids[i] == row_id:
            c = cols[i]
            if len(col_lut):
                c = col_lut[c]
            if c >= 0:
                if c <= last:
                    canonical = False  # out of order, or a duplicate: scipy fixes it below
                indices[p] = c
                values[p] = data[i]
                p += 1
                last = c
            i += 1
        fill[r] = p
    return canonical


def tables_to_csr(
    tables: Sequence[pa.Table], rows: RowMap, n_rows: int, n_cols: int, col_lut: np.ndarray | None = None
) -> sp.csr_matrix:
    """A canonical float32 CSR matrix from SOMA X tables (soma_dim_0, soma_dim_1, soma_data).

    ``col_lut`` maps X columns to output columns; a column it maps to -1 is left out (so a
    read of every column can keep only some genes)."""
    parts = []
    for table in tables:
        for batch in table.to_batches():
            ids, offset, lut = rows.prepared(batch.column(0).to_numpy())
            parts.append((ids, offset, lut, batch.column(1).to_numpy(), batch.column(2).to_numpy()))
    cmap = _EMPTY if col_lut is None else col_lut
    counts = np.zeros(n_rows + 1, dtype=np.int64)
    for ids, offset, lut, cols, _ in parts:
        _count(ids, offset, lut, cols, cmap, counts)
    indptr = np.cumsum(counts)
    fill = indptr[:-1].copy()
    indices = np.empty(indptr[-1], dtype=np.int32)
    values = np.empty(indptr[-1], dtype=np.float32)
    canonical = True
    for ids, offset, lut, cols, data in parts:
        canonical &= _scatter(ids, offset, lut, cols, cmap, data, indptr, fill, indices, values)
    matrix = sp.csr_matrix((values, indices, indptr), shape=(n_rows, n_cols))
    if not canonical:
        matrix.sum_duplicates()  # sorts indices, then sums repeats
    return matrix
