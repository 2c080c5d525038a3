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

import itertools
from dataclasses import dataclass, field

import numba
import numpy as np
import scipy.sparse as sp

__all__ = ["MedianSketch"]

_LOW, _HIGH = -3.0, 7.0  # log10 range of counts per 10k
_VALUES_A_BLOCK = 1 << 20  # add() converts about this many values at a time
_GENES_A_BLOCK = 512  # medians() works on this many genes' bins at a time (8 MB of running counts)


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
        """Count a batch's values, a block of rows at a time (about a million values: the
        temporaries of a whole batch of 8 million values were about 300 MB)."""
        X = sp.csr_matrix(X)
        totals = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
        indptr, n_rows = X.indptr, X.shape[0]
        # rows cut where the values pass each multiple of the block (a longer row is one block)
        passed = np.arange(_VALUES_A_BLOCK, indptr[-1], _VALUES_A_BLOCK)
        cuts = np.unique(np.searchsorted(indptr, passed, "right"))
        for lo, hi in itertools.pairwise([0, *(int(c) for c in cuts if 0 < c < n_rows), n_rows]):
            s, e = int(indptr[lo]), int(indptr[hi])
            rows = np.repeat(np.arange(lo, hi), np.diff(indptr[lo : hi + 1]))
            data = X.data[s:e]
            keep = data > 0
            values = data[keep] / totals[rows[keep]] * self.target_sum
            bins = np.floor((np.log10(values) - _LOW) * self.bins_per_decade).astype(np.int64)
            np.clip(bins, 0, self.n_bins - 1, out=bins)
            _tally(self.counts, X.indices[s:e][keep], bins)

    def merge(self, partial: sp.csr_matrix) -> None:
        """Add another sketch's counts (a sparse copy of its ``counts``: integers, exact)."""
        partial = sp.csr_matrix(partial)
        rows = np.repeat(np.arange(partial.shape[0], dtype=np.int64), np.diff(partial.indptr))
        keys = rows * self.n_bins + partial.indices
        self.counts.reshape(-1)[keys] += partial.data.astype(np.int32)

    def medians(self) -> tuple[np.ndarray, np.ndarray]:
        """(median per gene, NaN where never expressed; nonzero cells per gene). The running
        counts are made for a block of genes at a time: for every gene at once they were twice
        the sketch (350 MB for 21k genes), whatever the corpus."""
        n_nonzero = self.counts.sum(axis=1, dtype=np.int64)
        middle = (n_nonzero + 1) // 2  # the lower middle value's rank
        expressed = n_nonzero > 0
        where = np.zeros(self.n_genes, dtype=np.int64)
        for lo in range(0, self.n_genes, _GENES_A_BLOCK):
            hi = lo + _GENES_A_BLOCK
            cumulative = np.cumsum(self.counts[lo:hi], axis=1, dtype=np.int64)
            where[lo:hi] = np.argmax(cumulative >= middle[lo:hi, None], axis=1)
        centre = 10 ** (_LOW + (where + 0.5) / self.bins_per_decade)
        return np.where(expressed, centre, np.nan), n_nonzero


@numba.njit(cache=True, nogil=True)
def _tally(counts, genes, bins):  # type: ignore[no-untyped-def]  # pragma: no cover
    """One more value in ``counts[gene, bin]`` for each (gene, bin) pair."""
    for i in range(len(genes)):
        counts[genes[i], bins[i]] += 1
