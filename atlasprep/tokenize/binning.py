"""scGPT's per-cell value binning over CSR batches, deterministic, without a per-cell loop.

scGPT (``scgpt.preprocess``): for each cell, the edges are
``np.quantile(nonzero, np.linspace(0, 1, n_bins - 1))``. Each nonzero value gets a digit
between ``right = np.digitize(x, edges, right=True)`` and ``left = np.digitize(x, edges)``,
drawn at random in between, and zeros stay in bin 0. ``left`` and ``right`` differ only where
``x`` equals an edge. Where it equals exactly one edge, scGPT's draw always gives ``left``.
Where several edges coincide (many tied values), scGPT draws uniformly from
``right + 1 … left``; atlasprep takes the middle of that range, ``(left + right + 1) // 2``.
So atlasprep equals scGPT wherever scGPT is not random.

Bins depend only on the order of a cell's values: the quantile edges interpolate between
neighbouring values, so any per-cell monotone transform (normalize, log1p) gives the same bins.
Binning raw counts is therefore binning scGPT's normalized, log1p'd values.

Cells with the same number of nonzero values are stacked, and numpy computes their edges in
one ``np.quantile(axis=1)`` call: the same formula per row as a 1-D call. The digits come
from a compiled binary search: comparisons only, no arithmetic, so they are exact.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

from atlasprep.errors import UsageError
from atlasprep.tokenize._groups import length_groups

__all__ = ["bin_values"]


def bin_values(counts: sp.csr_matrix, n_bins: int = 51) -> sp.csr_matrix:
    """Per-cell quantile bins of the nonzero values: same sparsity, ``data`` in 1…n_bins-1."""
    if n_bins < 3:
        raise UsageError("--n-bins must be at least 3 (bin 0 holds zeros)")
    X = sp.csr_matrix(counts, dtype=np.float64, copy=True)
    X.sum_duplicates()
    X.eliminate_zeros()
    lengths = np.diff(X.indptr)
    digits = np.zeros(X.nnz, dtype=np.int64)
    quantiles = np.linspace(0, 1, n_bins - 1)
    for m, rows in length_groups(lengths):  # one quantile call per distinct number of values
        starts = X.indptr[rows]
        values = X.data[starts[:, None] + np.arange(m)]
        edges = np.quantile(values, quantiles, axis=1).T  # (cells, n_bins - 1), numpy's own edges
        _digitize_rows(values, edges, starts, digits)
    return sp.csr_matrix((digits, X.indices.copy(), X.indptr.copy()), shape=X.shape)


@numba.njit(cache=True, nogil=True)
def _digitize_rows(values, edges, starts, digits):  # type: ignore[no-untyped-def]  # pragma: no cover
    n_edges = edges.shape[1]
    for r in range(values.shape[0]):
        for j in range(values.shape[1]):
            x = values[r, j]
            # left: edges <= x (np.digitize); right: edges < x (np.digitize(right=True))
            lo, hi = 0, n_edges
            while lo < hi:
                mid = (lo + hi) // 2
                if edges[r, mid] <= x:
                    lo = mid + 1
                else:
                    hi = mid
            left = lo
            lo, hi = 0, n_edges
            while lo < hi:
                mid = (lo + hi) // 2
                if edges[r, mid] < x:
                    lo = mid + 1
                else:
                    hi = mid
            right = lo
            digits[starts[r] + j] = (left + right + 1) // 2
