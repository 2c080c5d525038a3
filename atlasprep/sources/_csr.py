"""COO -> CSR for one batch of SOMA X coordinates, in compiled passes without the GIL.

TileDB returns a batch's values in tile order, not row order, so they need regrouping by row.
scipy's ``csr_matrix((data, (rows, cols)))`` validates, converts and canonicalizes in several
passes holding the GIL; here a counting pass and a scatter pass, compiled with numba
(``nogil``: reader threads convert in parallel), read TileDB's Arrow buffers in place, map
soma_joinids to batch rows and X columns to output columns on the way, and never concatenate
the tables. Within a row, values arrive in column-tile order with columns sorted inside each
tile, so the result is usually canonical already; the kernel says when it is not, and scipy
then sorts and sums.

Memory: TileDB's tables take 20 bytes a value (two int64 coordinates and a float32), the CSR
8, so the tables of an incomplete read are converted and released one at a time. When each
row's number of values is known (the Census ``nnz`` column), the scatter writes straight into
the batch's arrays (:func:`sized_tables_to_csr`); otherwise each table becomes a CSR piece and
the pieces are merged by row at the end (:func:`tables_to_csr`)."""

from __future__ import annotations

from collections.abc import Iterable

import numba
import numpy as np
import pyarrow as pa
import scipy.sparse as sp
import tiledbsoma as soma

__all__ = ["RowMap", "sized_tables_to_csr", "tables_to_csr"]

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
    """Each value to the next free place of its row: 1 when the rows stay canonical, 0 when
    not, -1 when a row has more values than its room (``indptr``) and the pass stopped."""
    canonical = True
    n = len(ids)
    i = 0
    while i < n:
        row_id = ids[i]
        r = row_id - offset
        if len(lut):
            r = lut[r]
        p = fill[r]
        end = indptr[r + 1]
        last = indices[p - 1] if p > indptr[r] else -1
        while i < n and ids[i] == row_id:
            c = cols[i]
            if len(col_lut):
                c = col_lut[c]
            if c >= 0:
                if p == end:
                    return -1
                if c <= last:
                    canonical = False  # out of order, or a duplicate: scipy fixes it below
                indices[p] = c
                values[p] = data[i]
                p += 1
                last = c
            i += 1
        fill[r] = p
    return 1 if canonical else 0


@numba.njit(cache=True, nogil=True)
def _compact(indptr, fill, indices, values):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Rows filled short of their room moved together, in place; the new indptr."""
    out = np.zeros(len(indptr), dtype=np.int64)
    q = 0
    for r in range(len(indptr) - 1):
        for p in range(indptr[r], fill[r]):
            indices[q] = indices[p]
            values[q] = values[p]
            q += 1
        out[r + 1] = q
    return out


@numba.njit(cache=True, nogil=True)
def _merge(src_indptr, src_indices, src_values, indptr, fill, indices, values):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Append each row of one converted table (a CSR piece) to that row's values so far."""
    canonical = True
    for r in range(len(src_indptr) - 1):
        s, e = src_indptr[r], src_indptr[r + 1]
        if s == e:
            continue
        p = fill[r]
        if p > indptr[r] and src_indices[s] <= indices[p - 1]:
            canonical = False
        indices[p : p + e - s] = src_indices[s:e]
        values[p : p + e - s] = src_values[s:e]
        fill[r] = p + e - s
    return canonical


def _parts(table: pa.Table, rows: RowMap) -> list[tuple[np.ndarray, int, np.ndarray, np.ndarray, np.ndarray]]:
    """(ids, offset, lut, cols, data) of each record batch, TileDB's buffers read in place."""
    parts = []
    for batch in table.to_batches():
        ids, offset, lut = rows.prepared(batch.column(0).to_numpy())
        parts.append((ids, offset, lut, batch.column(1).to_numpy(), batch.column(2).to_numpy()))
    return parts


def _piece(
    table: pa.Table, rows: RowMap, n_rows: int, cmap: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """One table's values as CSR arrays (indptr, indices, values) and whether they are canonical."""
    parts = _parts(table, rows)
    counts = np.zeros(n_rows + 1, dtype=np.int64)
    for ids, offset, lut, cols, _ in parts:
        _count(ids, offset, lut, cols, cmap, counts)
    indptr, fill, indices, values = _empty_csr(counts[1:])  # (_count adds row r's at r + 1)
    canonical = True
    for ids, offset, lut, cols, data in parts:
        canonical &= _scatter(ids, offset, lut, cols, cmap, data, indptr, fill, indices, values) == 1
    return indptr, indices, values, canonical


def _place(
    table: pa.Table,
    rows: RowMap,
    indptr: np.ndarray,
    fill: np.ndarray,
    indices: np.ndarray,
    values: np.ndarray,
) -> int:
    """:func:`_scatter` of one table's record batches (no reference to them outlives the call)."""
    canonical = True
    for ids, offset, lut, cols, data in _parts(table, rows):
        status = _scatter(ids, offset, lut, cols, _EMPTY, data, indptr, fill, indices, values)
        if status < 0:
            return -1
        canonical &= status == 1
    return 1 if canonical else 0


def _empty_csr(row_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays for rows of these sizes: indptr, each row's next free place, and the
    (unfilled) indices and float32 values."""
    indptr = np.zeros(len(row_sizes) + 1, dtype=np.int64)
    np.cumsum(row_sizes, out=indptr[1:])
    return (
        indptr,
        indptr[:-1].copy(),
        np.empty(indptr[-1], dtype=np.int32),
        np.empty(indptr[-1], dtype=np.float32),
    )


def sized_tables_to_csr(
    tables: Iterable[pa.Table], rows: RowMap, n_rows: int, n_cols: int, row_sizes: np.ndarray
) -> sp.csr_matrix | None:
    """:func:`tables_to_csr` of every column, when each row's number of values is known (the
    Census ``nnz`` column): the values go straight to their place in arrays of that size, one
    table at a time, with no per-table copy, so a batch costs its CSR and one read's buffers.
    Rows with fewer values than ``row_sizes`` says are moved together at the end; None when a
    row has more (the sizes are wrong: convert a new read with :func:`tables_to_csr`), or when
    a size is beyond any row's (more than ``n_cols``), before anything is read or allocated."""
    if len(row_sizes) != n_rows or (n_rows and int(np.max(row_sizes)) > n_cols):
        return None
    indptr, fill, indices, values = _empty_csr(row_sizes)
    canonical = True
    for table in tables:
        status = _place(table, rows, indptr, fill, indices, values)
        del table  # released before the iterator reads another (a source may read one ahead)
        if status < 0:
            return None
        canonical &= status == 1
    if not np.array_equal(fill, indptr[1:]):
        indptr = _compact(indptr, fill, indices, values)
        indices, values = indices[: indptr[-1]].copy(), values[: indptr[-1]].copy()
    matrix = sp.csr_matrix((values, indices, indptr), shape=(n_rows, n_cols))
    if not canonical:
        matrix.sum_duplicates()
    return matrix


def tables_to_csr(
    tables: Iterable[pa.Table], rows: RowMap, n_rows: int, n_cols: int, col_lut: np.ndarray | None = None
) -> sp.csr_matrix:
    """A canonical float32 CSR matrix from SOMA X tables (soma_dim_0, soma_dim_1, soma_data).

    ``col_lut`` maps X columns to output columns; a column it maps to -1 is left out (so a
    read of every column can keep only some genes). Each table is converted (8 bytes a value)
    and released before the next is taken from ``tables``, so that a lazy iterator of TileDB's
    incomplete reads holds one read's buffers (20 bytes a value) at a time, not the batch's."""
    cmap = _EMPTY if col_lut is None else col_lut
    pieces = []
    for table in tables:
        pieces.append(_piece(table, rows, n_rows, cmap))
        del table  # released before the iterator reads another (a source may read one ahead)
    if len(pieces) == 1:
        indptr, indices, values, canonical = pieces.pop()
    else:
        indptr, fill, indices, values = _empty_csr(
            sum((np.diff(p[0]) for p in pieces), np.zeros(n_rows, dtype=np.int64))
        )
        canonical = True
        while pieces:  # each piece freed once merged
            src_indptr, src_indices, src_values, ok = pieces.pop(0)
            canonical &= ok & _merge(src_indptr, src_indices, src_values, indptr, fill, indices, values)
    matrix = sp.csr_matrix((values, indices, indptr), shape=(n_rows, n_cols))
    if not canonical:
        matrix.sum_duplicates()  # sorts indices, then sums repeats
    return matrix
