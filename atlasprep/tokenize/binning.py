"""scGPT's per-cell value binning over CSR batches, deterministic, without a per-cell loop.

scGPT (``scgpt.preprocess``): for each cell, the edges are
``np.quantile(nonzero, np.linspace(0, 1, n_bins - 1))``. Each nonzero value gets a digit
between ``right = np.digitize(x, edges, right=True)`` and ``left = np.digitize(x, edges)``,
drawn at random in between, and zeros stay in bin 0. ``left`` and ``right`` differ only where
``x`` equals an edge. Where it equals exactly one edge, scGPT's draw always gives ``left``.
Where several edges coincide (many tied values), scGPT draws uniformly from
``right + 1 … left``; atlasprep takes the middle of that range, ``(left + right + 1) // 2``.
So atlasprep equals scGPT wherever scGPT is not random.

Bins depend on the order of a cell's values: the quantile edges interpolate between
neighbouring values, so a per-cell monotone transform (normalize, log1p) gives the same bins,
and binning the counts stands for binning scGPT's normalized, log1p'd values. Not to the last
bit: an interpolation ``a + (b - a) * t`` with ``t`` just below 1 can round to ``b`` on the
counts and stay below it on the log values, so a value equal to ``b`` gets the digit above
scGPT's (rare: 28 of 20,000 cells of counts up to 100,000 at 101 bins, none at 51 bins or with
counts up to 1,000), and scanpy normalizes counts of 2^24 or more of a float32 or integer X in
float32, where distinct counts become equal.

The edges come from each cell's values sorted (numpy's sort; ties cannot change a sorted
array), by numpy's own quantile formula ("linear": index ``(n - 1) * q``, then ``a + (b - a) * t``,
or ``b - (b - a) * (1 - t)`` when ``t >= 0.5``), float operation for float operation, so they
equal ``np.quantile``'s bit for bit. Cells are sorted a few hundred at a time, padded with +inf
to a common width, in one numpy call per width; the edges and the digits come from a compiled
kernel, the digits by binary search: comparisons only, so they are exact. Widths spread over
threads: numpy's sort and the kernels release the GIL.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp

from atlasprep.errors import UsageError
from atlasprep.sources.counts import check_counts
from atlasprep.tokenize._groups import length_groups

__all__ = ["bin_values", "cap_genes", "cell_keys"]

_THREADS = max(1, min(4, os.cpu_count() or 1))
_WIDTH_STEP = 64  # cells padded to a multiple of this many values share one sort call


def bin_values(counts: sp.csr_matrix, n_bins: int = 51) -> sp.csr_matrix:
    """Per-cell quantile bins of the nonzero values: same sparsity, ``data`` in 1…n_bins-1.
    Negative or non-finite values are refused (:class:`InputFormatError`): a NaN has no place
    in a cell's order, and a negative count would sort below the zeros of bin 0."""
    return bin_owned(sp.csr_matrix(counts, copy=True), n_bins, digits_dtype=np.int64)


def bin_owned(X: sp.csr_matrix, n_bins: int, *, digits_dtype: type[np.integer] = np.int32) -> sp.csr_matrix:
    """:func:`bin_values` of a matrix the caller gives away (its arrays are reused, and
    changed), with digits of ``digits_dtype``: a tokenizer's batch, binned without copies.
    float32 counts stay float32 (their float64 values are exact, so the edges and the
    comparisons are those of float64); other dtypes, and float32 with duplicate entries
    (summed as float64, as they always were), become float64."""
    if n_bins < 3:
        raise UsageError(f"n_bins = {n_bins}: must be at least 3 (bin 0 holds zeros)")
    if X.dtype != np.float32 or not X.has_canonical_format:
        X = X.astype(np.float64)
    check_counts(X, where="the counts to bin")
    X.sum_duplicates()
    X.eliminate_zeros()
    lengths = np.diff(X.indptr)
    digits = np.zeros(X.nnz, dtype=digits_dtype)
    quantiles = np.linspace(0, 1, n_bins - 1)
    widths = -(-lengths // _WIDTH_STEP) * _WIDTH_STEP
    groups = list(length_groups(widths))

    def digitize(share: list[tuple[int, np.ndarray]]) -> None:
        for width, rows in share:
            values = _padded(rows, width, X.indptr, X.data)
            values.sort(axis=1)  # numpy's sort; +inf padding stays at the end
            _digitize_rows(rows, values, quantiles, X.indptr, X.data, digits)

    with ThreadPoolExecutor(max_workers=_THREADS) as pool:
        for future in [pool.submit(digitize, groups[t::_THREADS]) for t in range(_THREADS)]:
            future.result()
    return sp.csr_matrix((digits, X.indices, X.indptr), shape=X.shape)


@numba.njit(cache=True, nogil=True)
def _padded(rows, width, indptr, data):  # type: ignore[no-untyped-def]  # pragma: no cover
    values = np.full((len(rows), width), np.inf)
    for r in range(len(rows)):
        stored, out = data[indptr[rows[r]] : indptr[rows[r] + 1]], values[r]
        for j in range(len(stored)):  # over two views: contiguous loads (``data[start + j]``,
            out[j] = stored[j]  # a possibly negative index, was read with gathers)
    return values


@numba.njit(cache=True, nogil=True)
def _digitize_rows(rows, ordered, quantiles, indptr, data, digits):  # type: ignore[no-untyped-def]  # pragma: no cover
    n_edges = len(quantiles)
    edges = np.empty(n_edges, dtype=np.float64)
    for r in range(len(rows)):
        start = indptr[rows[r]]
        n = indptr[rows[r] + 1] - start
        for q in range(n_edges):  # np.quantile(method="linear"), operation for operation
            virtual = (n - 1) * quantiles[q]
            if virtual >= n - 1:
                edges[q] = ordered[r, n - 1]
            else:
                below = np.floor(virtual)
                t = virtual - below
                a = ordered[r, np.int64(below)]
                b = ordered[r, np.int64(below) + 1]
                diff = b - a
                edges[q] = b - diff * (1 - t) if t >= 0.5 else a + diff * t
        for j in range(n):
            x = data[start + j]
            # left: edges <= x (np.digitize); right: edges < x (np.digitize(right=True))
            lo, hi = 0, n_edges
            while lo < hi:
                mid = (lo + hi) // 2
                if edges[mid] <= x:
                    lo = mid + 1
                else:
                    hi = mid
            left = lo
            lo, hi = 0, n_edges
            while lo < hi:
                mid = (lo + hi) // 2
                if edges[mid] < x:
                    lo = mid + 1
                else:
                    hi = mid
            digits[start + j] = (left + lo + 1) // 2


def cell_keys(cell_ids: np.ndarray) -> np.ndarray:
    """A stable 64-bit key per cell id (SipHash with pandas' fixed key, vectorized): what
    :func:`cap_genes` draws a cell's genes by, so a cell keeps the same genes wherever it is read
    (a store, a stream, new data at inference) and however its neighbours are batched."""
    return pd.util.hash_array(np.asarray(cell_ids, dtype=object).astype(str).astype(object))


def cap_genes(
    binned: sp.csr_matrix, max_len: int, *, seed: int, row_keys: np.ndarray, column_keys: np.ndarray
) -> sp.csr_matrix:
    """Keep at most ``max_len`` genes per cell: a uniform sample without replacement, as scGPT
    draws one when a cell has more genes than the model's input, but fixed by ``seed``, the
    cell (``row_keys``: :func:`cell_keys` of its id) and each gene (``column_keys``: its token
    id, so the var's column order does not matter), whatever the batching. Kept genes stay in
    column order."""
    lengths = np.diff(binned.indptr)
    if max_len < 1:
        raise UsageError(f"max_len = {max_len}: must be at least 1")
    if (lengths <= max_len).all():
        return binned
    keep = _sample_mask(
        binned.indptr,
        binned.indices,
        max_len,
        np.uint64(seed),
        np.asarray(row_keys, dtype=np.uint64),
        np.asarray(column_keys).astype(np.uint64),
    )
    kept = np.zeros(len(binned.indptr), dtype=np.int64)
    np.cumsum(np.minimum(lengths, max_len), out=kept[1:])
    return sp.csr_matrix((binned.data[keep], binned.indices[keep], kept), shape=binned.shape)


@numba.njit(cache=True, nogil=True)
def _mix(x):  # type: ignore[no-untyped-def]  # pragma: no cover
    """splitmix64's finalizer: a well-mixed 64-bit hash."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@numba.njit(cache=True, nogil=True)
def _sample_mask(indptr, indices, max_len, seed, row_keys, column_keys):  # type: ignore[no-untyped-def]  # pragma: no cover
    keep = np.ones(indptr[-1], dtype=np.bool_)
    for row in range(len(indptr) - 1):
        start, stop = indptr[row], indptr[row + 1]
        if stop - start <= max_len:
            continue
        cell = _mix(seed ^ _mix(row_keys[row] + np.uint64(0x9E3779B97F4A7C15)))
        keys = np.empty(stop - start, dtype=np.uint64)
        for j in range(stop - start):
            keys[j] = _mix(cell ^ column_keys[indices[start + j]])
        order = np.argsort(keys, kind="mergesort")  # stable: equal keys keep column order
        for j in range(max_len, stop - start):
            keep[start + order[j]] = False
    return keep
