"""Value binning equals scGPT's wherever scGPT is not random, and is deterministic where it is."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasprep.tokenize import bin_values


def _scgpt_row(row: np.ndarray, n_bins: int, rng: np.random.Generator) -> np.ndarray:
    """scGPT's preprocess binning of one cell, step by step (its _digitize with side="both")."""
    if row.max() == 0:
        return np.zeros_like(row, dtype=np.int64)
    nonzero = row.nonzero()
    values = row[nonzero]
    bins = np.quantile(values, np.linspace(0, 1, n_bins - 1))
    left = np.digitize(values, bins)
    right = np.digitize(values, bins, right=True)
    digits = np.ceil(rng.random(len(values)) * (right - left) + left).astype(np.int64)
    out = np.zeros_like(row, dtype=np.int64)
    out[nonzero] = digits
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n_bins=st.sampled_from([3, 11, 51]), scale=st.sampled_from([2, 20, 1000]))
def test_equals_scgpt_where_scgpt_is_not_random(seed, n_bins, scale):
    rng = np.random.default_rng(seed)
    dense = rng.integers(0, scale, (30, 80)) * (rng.random((30, 80)) < 0.4)
    got = bin_values(sp.csr_matrix(dense.astype(np.float32)), n_bins).toarray()
    draws = np.stack(
        [
            [_scgpt_row(r.astype(np.float64), n_bins, np.random.default_rng(s)) for r in dense]
            for s in range(12)
        ]
    )
    fixed = (draws == draws[0]).all(axis=0)  # positions where scGPT's draw never varied
    assert np.array_equal(got[fixed], draws[0][fixed])
    low, high = draws.min(axis=0), draws.max(axis=0)
    assert ((got >= low) & (got <= high)).all()  # elsewhere: inside scGPT's range
    assert ((got == 0) == (dense == 0)).all()
    assert got.max() <= n_bins - 1


def test_distinct_values_bin_exactly_and_monotone_transforms_do_not_matter():
    rng = np.random.default_rng(3)
    dense = rng.permutation(np.arange(1, 201)).reshape(4, 50).astype(np.float64)
    dense[:, ::7] = 0
    want = np.stack([_scgpt_row(r, 51, np.random.default_rng(0)) for r in dense])
    assert np.array_equal(bin_values(sp.csr_matrix(dense)).toarray(), want)
    logged = np.log1p(dense / dense.sum(axis=1, keepdims=True) * 1e4)
    assert np.array_equal(bin_values(sp.csr_matrix(logged)).toarray(), want)


def test_empty_cells_and_bad_bins():
    X = sp.csr_matrix(np.array([[0, 0, 0], [0, 5, 0]], dtype=np.float32))
    # one value equals all 4 edges: scGPT draws from 1..4, atlasprep takes the middle
    assert bin_values(X, 5).toarray().tolist() == [[0, 0, 0], [0, 2, 0]]
    from atlasprep.errors import UsageError

    with pytest.raises(UsageError):
        bin_values(X, 2)


def test_cap_genes_keeps_a_seeded_subset_whatever_the_batching_and_the_column_order():
    from atlasprep.tokenize.binning import cap_genes, cell_keys

    rng = np.random.default_rng(5)
    dense = rng.integers(0, 9, (40, 300)) * (rng.random((40, 300)) < 0.5)
    binned = bin_values(sp.csr_matrix(dense.astype(np.float32)))
    keys = cell_keys(np.array([f"cell{i}" for i in range(40)]))
    tokens = np.arange(1000, 1300)

    def cap(m, rows=slice(None), seed=7, cols=tokens):
        return cap_genes(m, 50, seed=seed, row_keys=keys[rows], column_keys=cols)

    whole = cap(binned)
    halves = sp.vstack([cap(binned[:13], slice(0, 13)), cap(binned[13:], slice(13, None))])
    assert (whole != halves).nnz == 0
    # the same cells in another order, and their genes in another column order: same genes kept
    rows, cols = rng.permutation(40), rng.permutation(300)
    moved = cap_genes(
        binned[rows][:, cols], 50, seed=7, row_keys=keys[rows], column_keys=tokens[cols]
    ).toarray()
    assert np.array_equal(moved[np.argsort(rows)][:, np.argsort(cols)], whole.toarray())
    # the key is the cell's id: same cells, same id keys, whatever their place
    assert np.array_equal(cell_keys(np.array(["a", "b"])), cell_keys(np.array(["a", "b"], dtype=object)))
    lengths = np.diff(whole.indptr)
    assert np.array_equal(lengths, np.minimum(np.diff(binned.indptr), 50))
    full = binned.toarray()
    kept = whole.toarray()
    assert ((kept == 0) | (kept == full)).all()  # a subset of each cell's genes, bins unchanged
    assert (cap(binned, seed=8) != whole).nnz > 0
    # uniform: every column is kept about as often (each cell keeps 50 of ~150 genes)
    picks = np.zeros(300)
    for seed in range(30):
        picks += (cap(binned, seed=seed).toarray() > 0).sum(axis=0)
    share = picks / (30 * (full > 0).sum(axis=0))
    assert share.min() > 0.2
    assert share.max() < 0.5


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), dtype=st.sampled_from([np.float32, np.float64, np.int32]))
def test_binning_a_batch_in_place_gives_the_bins_of_the_copying_api(seed, dtype):
    """A tokenizer's batch is binned without copies (float32 stays float32): the same digits
    as bin_values, whose float64 copy they were, for float32 with duplicate entries too."""
    from atlasprep.tokenize.binning import bin_owned

    rng = np.random.default_rng(seed)
    # a scale of 2 or more: with 1, int32 truncated every value to 0 and left nothing to duplicate
    dense = (rng.random((40, 60)) * rng.integers(2, 1000)) * (rng.random((40, 60)) < 0.5)
    X = sp.csr_matrix(dense.astype(dtype))
    coo = X.tocoo()
    twice = slice(0, max(1, coo.nnz // 3))  # a third of the entries stored twice: scipy sums them
    rows = np.r_[coo.row, coo.row[twice]]
    order = np.argsort(rows, kind="stable")
    indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=X.shape[0]))]
    data, columns = np.r_[coo.data, coo.data[twice]][order], np.r_[coo.col, coo.col[twice]][order]
    duplicated = sp.csr_matrix((data, columns, indptr), shape=X.shape)
    assert not duplicated.has_canonical_format
    for matrix in (X, duplicated):
        want = bin_values(matrix, 51)
        got = bin_owned(matrix.copy(), 51)
        assert got.data.dtype == np.int32
        assert want.data.dtype == np.int64
        assert np.array_equal(got.toarray(), want.toarray())
