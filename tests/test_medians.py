"""The corpus median sketch: the documented histogram and medians, whatever blocks it works in."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from atlasprep.tokenize import medians as sketch_module
from atlasprep.tokenize.medians import MedianSketch


def _counts(seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    n_cells, n_genes = int(rng.integers(50, 900)), int(rng.integers(1, 700))
    X = sp.random(n_cells, n_genes, density=float(rng.uniform(0.01, 0.8)), random_state=seed, format="csr")
    X.data = np.ceil(X.data * rng.choice([3, 60, 5000])).astype(np.float32)
    X.data[:: int(rng.integers(3, 20))] = 0  # stored zeros: not counted
    return X


def _reference(X: sp.csr_matrix, sketch: MedianSketch) -> tuple[np.ndarray, np.ndarray]:
    """The module docstring's histogram, every value at once, and each gene's median bin read
    off its sorted bins: (counts, median per gene with NaN where never expressed)."""
    coo = X.tocoo()
    totals = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    keep = coo.data > 0
    values = coo.data[keep] / totals[coo.row[keep]] * sketch.target_sum
    bins = np.floor((np.log10(values) - -3.0) * sketch.bins_per_decade).astype(np.int64)
    bins = np.clip(bins, 0, sketch.n_bins - 1)
    counts = np.zeros((X.shape[1], sketch.n_bins), dtype=np.int32)
    np.add.at(counts, (coo.col[keep], bins), 1)
    middle = np.zeros(X.shape[1], dtype=np.int64)
    for gene in range(X.shape[1]):
        mine = np.sort(bins[coo.col[keep] == gene])
        if len(mine):
            middle[gene] = mine[(len(mine) + 1) // 2 - 1]  # the lower middle value's bin
    centre = 10 ** (-3.0 + (middle + 0.5) / sketch.bins_per_decade)
    return counts, np.where(counts.sum(axis=1) > 0, centre, np.nan)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("values_a_block", "genes_a_block"), [(1, 1), (97, 5), (1 << 20, 512)])
def test_sketch_counts_and_medians_whatever_the_blocks(monkeypatch, seed, values_a_block, genes_a_block):
    monkeypatch.setattr(sketch_module, "_VALUES_A_BLOCK", values_a_block)
    monkeypatch.setattr(sketch_module, "_GENES_A_BLOCK", genes_a_block)
    X = _counts(seed)
    sketch = MedianSketch(n_genes=X.shape[1])
    for first in range(0, X.shape[0], 113):  # batches, as a pass adds them
        sketch.add(X[first : first + 113])
    counts, medians = _reference(X, sketch)
    np.testing.assert_array_equal(sketch.counts, counts)
    got, n_nonzero = sketch.medians()
    np.testing.assert_array_equal(got, medians)
    np.testing.assert_array_equal(n_nonzero, counts.sum(axis=1))


def test_an_empty_batch_counts_nothing():
    sketch = MedianSketch(n_genes=4)
    sketch.add(sp.csr_matrix((0, 4), dtype=np.float32))
    sketch.add(sp.csr_matrix((3, 4), dtype=np.float32))
    assert sketch.counts.sum() == 0
    assert np.isnan(sketch.medians()[0]).all()
