"""Per-gene nonzero medians of normalized expression, in one streaming pass with bounded memory.

Geneformer divides each gene's normalized value by its nonzero median over a reference corpus.
An exact median needs every value of every gene in memory; this keeps a log-spaced histogram
per gene instead (``bins_per_decade`` bins from 1e-3 to 1e7 counts per 10k), so memory is
``n_genes × bins`` 32-bit counters whatever the corpus size (170 MB for 21k genes at 200 bins
per decade; a bin overflows only past 2³¹ cells). The median is the geometric centre of the
bin holding the middle value: within a factor ``10 ** (1 / (2 * bins_per_decade))`` of the
exact median (±0.58% at the default 200 bins per decade). Genes never expressed get no median.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

__all__ = ["MedianSketch"]

_LOW, _HIGH = -3.0, 7.0  # log10 range of counts per 10k


@dataclass(slots=True, kw_only=True)
class MedianSketch:
    """Accumulates batches (``add``); ``medians()`` reads the per-gene nonzero medians."""

    n_genes: int
    bins_per_decade: int = 200
    target_sum: float = 10_000.0
    counts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.counts = np.zeros((self.n_genes, self.n_bins), dtype=np.int32)

    @property
    def n_bins(self) -> int:
        return int((_HIGH - _LOW) * self.bins_per_decade)

    @property
    def relative_error(self) -> float:
        return float(10 ** (1 / (2 * self.bins_per_decade)) - 1)

    def add(self, X: sp.csr_matrix) -> None:
        X = sp.csr_matrix(X)
        totals = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
        rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
        keep = X.data > 0
        values = X.data[keep] / totals[rows[keep]] * self.target_sum
        bins = np.floor((np.log10(values) - _LOW) * self.bins_per_decade).astype(np.int64)
        np.clip(bins, 0, self.n_bins - 1, out=bins)
        keys = X.indices[keep].astype(np.int64) * self.n_bins + bins
        unique, hits = np.unique(keys, return_counts=True)
        self.counts.reshape(-1)[unique] += hits.astype(np.int32)

    def merge(self, partial: sp.csr_matrix) -> None:
        """Add another sketch's counts (a sparse copy of its ``counts``: integers, exact)."""
        partial = sp.csr_matrix(partial)
        rows = np.repeat(np.arange(partial.shape[0], dtype=np.int64), np.diff(partial.indptr))
        keys = rows * self.n_bins + partial.indices
        self.counts.reshape(-1)[keys] += partial.data.astype(np.int32)

    def medians(self) -> tuple[np.ndarray, np.ndarray]:
        """(median per gene, NaN where never expressed; nonzero cells per gene)."""
        n_nonzero = self.counts.sum(axis=1, dtype=np.int64)
        cumulative = np.cumsum(self.counts, axis=1, dtype=np.int64)
        middle = (n_nonzero + 1) // 2  # the lower middle value's rank
        expressed = n_nonzero > 0
        where = np.argmax(cumulative >= middle[:, None], axis=1)
        centre = 10 ** (_LOW + (where + 0.5) / self.bins_per_decade)
        return np.where(expressed, centre, np.nan), n_nonzero
