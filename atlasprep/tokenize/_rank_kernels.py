"""The compiled loops of the default (numpy, Geneformer's) tie order, over a CSR batch: each
row's number of ranked vocabulary genes, their values stacked by length for numpy's ``argsort``,
and the sorted tokens written back to each cell (:mod:`atlasprep.tokenize.rank`)."""

from __future__ import annotations

import numba
import numpy as np

from atlasprep.tokenize._rank_sort import normalized

__all__ = ["gather", "ranked", "ranked_lengths", "scatter"]


@numba.njit(cache=True, nogil=True, inline="always")
def ranked(stored, zeros):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Whether a stored entry of a vocabulary gene is ranked: a count, or a stored zero where
    its cell's zeros are ranked (``zeros``: Geneformer's order, in a cell whose total is not 0)."""
    return stored != 0 or zeros


@numba.njit(cache=True, nogil=True)
def ranked_lengths(indptr, indices, data, zeros, token_ids, lo, hi, lengths):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Per row in ``lo:hi``: how many entries name a vocabulary gene and are ranked (:func:`ranked`)."""
    for row in range(lo, hi):
        a, b = indptr[row], indptr[row + 1]
        stored, columns = data[a:b], indices[a:b]
        ranks_zeros = zeros[row]
        n = 0
        for e in range(b - a):  # branch-free: counted, not tested
            n += ((stored[e] != 0) | ranks_zeros) & (token_ids[columns[e]] >= 0)
        lengths[row] = n


@numba.njit(cache=True, nogil=True)
def gather(  # type: ignore[no-untyped-def]  # pragma: no cover
    rows, k, indptr, indices, data, scales, zeros, norms, token_ids, target_sum, reciprocal, single
):
    """The rows' negated values (stacked, one row per cell) and tokens of their ``k`` ranked
    vocabulary genes, in column order, computed with Geneformer's arithmetic (:class:`Arithmetic`)."""
    values = np.empty((len(rows), k), dtype=np.float64)
    tokens = np.empty((len(rows), k), dtype=np.int32)
    ts32 = np.float32(target_sum)
    for r in range(len(rows)):
        row = rows[r]
        scale = scales[row]
        scale32 = np.float32(scale)
        out_values, out_tokens = values[r], tokens[r]
        a, b = indptr[row], indptr[row + 1]
        stored, columns = data[a:b], indices[a:b]
        ranks_zeros = zeros[row]
        j = 0
        for e in range(b - a):
            col = columns[e]
            token = token_ids[col]
            if token < 0 or not ranked(stored[e], ranks_zeros):
                continue
            value = normalized(stored[e], col, scale, scale32, norms, target_sum, ts32, reciprocal, single)
            out_values[j] = -value
            out_tokens[j] = token
            j += 1
    return values, tokens


@numba.njit(cache=True, nogil=True)
def scatter(rows, order, tokens, offsets, out, width, first):  # type: ignore[no-untyped-def]  # pragma: no cover
    for r in range(len(rows)):
        base = offsets[rows[r]] + first
        cell, ranked, row_tokens = out[base : base + width], order[r], tokens[r]
        for j in range(width):
            cell[j] = row_tokens[ranked[j]]
