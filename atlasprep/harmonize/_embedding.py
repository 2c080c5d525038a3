"""The embedding ``harmonize --embedding`` adds, so the output has what a CELLxGENE upload needs
(at least one ``X_`` embedding in obsm): PCA of the log-normalized counts, or a UMAP of its
neighbour graph, both by scanpy (``pip install 'atlasprep[embedding]'``).
"""

from __future__ import annotations

import importlib.util
import sys

import anndata as ad
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from atlasprep._names import Embedding
from atlasprep.errors import InputFormatError, UsageError

__all__ = ["Embedding", "cache_umap_kernels", "compute_embedding", "require_scanpy"]

_MAX_COMPONENTS = 50
_NEIGHBOURS = 15


def require_scanpy(field: str = "embedding") -> None:
    if importlib.util.find_spec("scanpy") is None:
        raise UsageError(f"{field}: computing an embedding needs scanpy (pip install 'atlasprep[embedding]')")


def compute_embedding(counts: sp.csr_matrix, kind: Embedding, *, seed: int) -> npt.NDArray[np.float32]:
    """The embedding of these cells' counts: normalized to 10,000 per cell, log1p, PCA (up to 50
    components), and for ``umap`` a 15-neighbour graph of the PCA and its UMAP."""
    import scanpy as sc  # optional: only harmonize --embedding needs it

    n_cells, n_genes = counts.shape
    n_comps = min(_MAX_COMPONENTS, n_cells - 1, n_genes - 1)
    if n_comps < 2:
        raise UsageError(f"embedding = {kind}: needs at least 3 cells and 3 genes, got {n_cells} x {n_genes}")
    adata = ad.AnnData(X=sp.csr_matrix(counts, dtype=np.float32))
    adata.X.eliminate_zeros()
    varied = np.unique(adata.X.indices).size  # genes some cell expresses (the others are constant 0)
    if adata.X.nnz == 0 or varied < 2:
        raise InputFormatError(
            f"embedding = {kind}: the counts hold {adata.X.nnz:,} nonzero values in {varied} genes, so "
            "there is nothing to embed; check that the counts are the raw ones, or do without an embedding"
        )
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.pca(adata, n_comps=n_comps, random_state=seed)
    if kind == Embedding.umap:
        cache_umap_kernels()
        sc.pp.neighbors(adata, n_neighbors=min(_NEIGHBOURS, n_cells - 1), random_state=seed)
        sc.tl.umap(adata, random_state=seed)
    return np.asarray(adata.obsm[kind.key], dtype=np.float32)


def cache_umap_kernels() -> int:
    """Give umap-learn's and pynndescent's numba kernels numba's on-disk cache, as ``cache=True``
    would; the number of kernels given it.

    Most of their kernels are cached already, but a few that every UMAP runs are not (umap-learn
    0.5: ``smooth_knn_dist``, ``compute_membership_strengths``, the layout's epoch): they were
    compiled again in every process, about 7 s of a 200-cell ``harmonize --embedding umap``, 0.5 s
    once cached. numba keeps the cache beside each module's source (else in its user-wide cache
    directory) and recompiles when the source changes; the compiled code, and so the embedding,
    is the same. Nothing changes where numba's dispatchers differ from what this expects."""
    import umap.umap_  # type: ignore[import-untyped]  # noqa: F401 - loads umap's and pynndescent's kernels

    try:
        from numba.core.caching import NullCache
        from numba.core.dispatcher import Dispatcher
    except ImportError:  # numba's internals moved: the kernels compile as before
        return 0

    enabled = 0
    for name, module in list(sys.modules.items()):
        if name.partition(".")[0] not in ("umap", "pynndescent") or module is None:
            continue
        for value in list(vars(module).values()):
            if (
                isinstance(value, Dispatcher)
                and getattr(value.py_func, "__module__", None) == name
                and isinstance(getattr(value, "_cache", None), NullCache)
                and hasattr(value, "enable_caching")
            ):
                value.enable_caching()
                enabled += 1
    return enabled
