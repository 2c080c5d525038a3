"""The ``raw`` scheme: gene tokens with log1p(counts per 10k) values, highest first."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from atlasprep.sources.counts import check_counts
from atlasprep.tokenize._groups import length_groups

__all__ = ["RawCells", "raw_encode"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RawCells:
    """Ragged tokens and values: cell ``i`` is ``[offsets[i]:offsets[i + 1]]`` of both."""

    input_ids: np.ndarray  # int32
    values: np.ndarray  # float32, log1p(count / cell total * target_sum)
    offsets: np.ndarray  # int64, n_cells + 1
    available: np.ndarray  # int64 per cell: its expressed vocabulary genes, before max_len


def raw_encode(
    counts: sp.csr_matrix, token_ids: np.ndarray, *, max_len: int, target_sum: float = 10_000.0
) -> RawCells:
    """Encode each cell as its expressed vocabulary genes, by value descending.

    ``token_ids`` gives each column's token (-1: not in the vocabulary). The cell total is
    over all columns. Equal values come by ascending token id, so a cell's tokens do not
    depend on the input's column order (a corpus-built vocabulary numbers the genes in the
    corpus's order). Negative or non-finite counts are refused (:class:`InputFormatError`): with
    non-negative, finite counts every value is log1p of a share in (0, 1] of the cell's positive
    total, so no value stored is ever NaN or infinite.
    """
    X = sp.csr_matrix(counts)
    check_counts(X, where="the counts to encode")
    X.sum_duplicates()
    totals = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    keep = (token_ids[X.indices] >= 0) & (X.data != 0)
    where = np.flatnonzero(keep)
    indices, data = X.indices[where], X.data[where].astype(np.float64)
    indptr = np.searchsorted(where, X.indptr)
    lengths = np.diff(indptr)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.minimum(lengths, max_len), out=offsets[1:])
    ids = np.empty(offsets[-1], dtype=np.int32)
    values = np.empty(offsets[-1], dtype=np.float32)
    for k, rows in length_groups(lengths):
        at = indptr[rows][:, None] + np.arange(k)
        logged = np.log1p(data[at] / totals[rows][:, None] * target_sum)
        tokens = token_ids[indices[at]]
        if k > 1 and (np.diff(tokens, axis=1) < 0).any():  # (not in token order already)
            by_token = np.argsort(tokens, axis=1, kind="stable")
            tokens = np.take_along_axis(tokens, by_token, axis=1)
            logged = np.take_along_axis(logged, by_token, axis=1)
        order = np.argsort(-logged, axis=1, kind="stable")[:, :max_len]
        dest = offsets[rows][:, None] + np.arange(min(k, max_len))
        ids[dest] = np.take_along_axis(tokens, order, axis=1)
        values[dest] = np.take_along_axis(logged, order, axis=1)
    return RawCells(input_ids=ids, values=values, offsets=offsets, available=lengths.astype(np.int64))
