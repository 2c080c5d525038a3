"""Streaming Seurat v3 highly variable genes equal scanpy's selection."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from atlasprep.errors import UsageError
from atlasprep.tokenize.hvg import GeneMoments

sc = pytest.importorskip("scanpy")
pytest.importorskip("skmisc")


def _streamed(X: sp.csr_matrix, n_top: int, batch: int) -> np.ndarray:
    first = GeneMoments(n_genes=X.shape[1])
    for start in range(0, X.shape[0], batch):
        first.add(X[start : start + batch])
    second = first.clipped()
    for start in range(0, X.shape[0], batch):
        second.add(X[start : start + batch])
    return second.top(n_top)


@pytest.mark.parametrize(("n_top", "batch"), [(50, 64), (200, 1000), (17, 7)])
def test_equals_scanpy_seurat_v3(n_top, batch):
    rng = np.random.default_rng(n_top)
    n_cells, n_genes = 600, 400
    means = rng.lognormal(-1, 1.5, n_genes)
    dispersion = rng.uniform(0.1, 3, n_genes)  # negative binomial: genes differ in overdispersion
    counts = rng.negative_binomial(1 / dispersion, 1 / (1 + means * dispersion), (n_cells, n_genes))
    X = sp.csr_matrix(counts.astype(np.float32))
    adata = ad.AnnData(X=X.copy())
    adata.var_names = [f"g{i}" for i in range(n_genes)]
    sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=n_top)
    want = np.flatnonzero(adata.var["highly_variable"].to_numpy())
    assert np.array_equal(_streamed(X, n_top, batch), want)


def test_mean_and_variance_match_numpy():
    rng = np.random.default_rng(1)
    dense = rng.poisson(2.0, (50, 30)).astype(np.float64)
    moments = GeneMoments(n_genes=30)
    moments.add(sp.csr_matrix(dense[:20]))
    moments.add(sp.csr_matrix(dense[20:]))
    mean, var = moments.mean_var()
    np.testing.assert_allclose(mean, dense.mean(axis=0))
    np.testing.assert_allclose(var, dense.var(axis=0, ddof=1))


def test_too_few_cells_or_genes_is_a_usage_error():
    one = GeneMoments(n_genes=5)
    one.add(sp.csr_matrix(np.ones((1, 5))))
    with pytest.raises(UsageError, match="at least 2 cells"):
        one.clipped()
    flat = GeneMoments(n_genes=5)
    flat.add(sp.csr_matrix(np.ones((4, 5))))
    with pytest.raises(UsageError, match="genes that vary"):
        flat.clipped()
