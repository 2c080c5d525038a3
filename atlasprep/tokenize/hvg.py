"""Highly variable genes, Seurat v3 style, in two streaming passes over the counts.

scGPT picks its genes with ``scanpy.pp.highly_variable_genes(flavor="seurat_v3")`` on raw
counts; this computes the same selection without holding the matrix:

1. per gene, the count of cells, the sum and the sum of squares → mean and variance (ddof 1);
   a loess fit (``skmisc``, span 0.3, degree 2 — scanpy's own call) of log10 variance on
   log10 mean over the non-constant genes gives each gene's expected standard deviation;
2. per gene, the sum and sum of squares of the counts clipped at ``mean + sqrt(N) * std``;
   from them the standardized variance, and the genes with the N largest are kept (ranked by
   numpy's argsort of the negated variances, as scanpy ranks them).

Only per-gene vectors are held, whatever the number of cells. Each block of a fixed number of
cells (``batch_size``, counted from the first selected cell, however the source cuts its read
batches) is summed on its own in float64 and the blocks' sums are added in block order
(:func:`block_moments`), so ranges of whole blocks summed on other processes merge to the same
bits; the sums may differ from scanpy's in the last bits; the selection differs only
where two genes' standardized variances are that close at the cut-off.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import scipy.sparse as sp

from atlasprep.errors import UsageError

__all__ = ["ClippedMoments", "GeneMoments", "block_moments", "block_sums"]


@dataclass(slots=True, kw_only=True)
class GeneMoments:
    """Pass 1: per-gene sums over cells (mutable accumulator; ``add`` one batch at a time)."""

    n_genes: int
    n_cells: int = 0
    # per gene, the cells whose file measured it (an outer join of files with different genes:
    # unmeasured zeros are not counted); None: every cell measured every gene
    measured: np.ndarray | None = None
    sums: np.ndarray = field(init=False)
    squares: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.sums = np.zeros(self.n_genes, dtype=np.float64)
        self.squares = np.zeros(self.n_genes, dtype=np.float64)

    def add(self, X: sp.csr_matrix) -> None:
        """One block of cells: summed on its own, then added (as :meth:`merge` adds a block)."""
        sums, squares = block_sums(X, None, self.n_genes)
        self.merge(sums, squares, X.shape[0])

    def merge(self, sums: np.ndarray, squares: np.ndarray, n_cells: int) -> None:
        """Add a block's sums (:func:`block_sums`); blocks in batch order give a local run's bits."""
        self.sums += sums
        self.squares += squares
        self.n_cells += n_cells

    def mean_var(self) -> tuple[np.ndarray, np.ndarray]:
        if self.measured is None:
            n = self.n_cells
            mean = self.sums / n
            var = (self.squares - n * mean**2) / (n - 1)
            return mean, np.maximum(var, 0.0)
        n_per_gene = self.measured.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):  # a gene no cell (or one) measured
            mean = np.where(n_per_gene > 0, self.sums / n_per_gene, 0.0)
            var = np.where(n_per_gene > 1, (self.squares - n_per_gene * mean**2) / (n_per_gene - 1), 0.0)
        return mean, np.maximum(var, 0.0)

    def clipped(self, span: float = 0.3) -> ClippedMoments:
        """Pass 1 done: the loess fit of log variance on log mean gives each gene's expected
        std and its clip value, ``mean + sqrt(N) * std``; pass 2 fills what this returns."""
        from skmisc.loess import loess

        if self.n_cells < 2:
            raise UsageError("n_hvg needs at least 2 cells")
        mean, var = self.mean_var()
        not_const = var > 0
        if not_const.sum() < 3:
            raise UsageError("n_hvg needs at least 3 genes that vary across the cells")
        fitted = np.zeros(self.n_genes, dtype=np.float64)
        model = loess(np.log10(mean[not_const]), np.log10(var[not_const]), span=span, degree=2)
        try:
            model.fit()
        except ValueError as exc:  # skmisc's loess: a singular fit (few cells or genes), as in scanpy
            reason = exc.args[0].decode().strip() if exc.args and isinstance(exc.args[0], bytes) else exc
            raise UsageError(
                f"n_hvg: the Seurat v3 loess fit of variance on mean failed on these {self.n_cells:,} "
                f"cells and {int(not_const.sum()):,} varying genes ({reason}); select more cells, or "
                "leave n_hvg out"
            ) from None
        fitted[not_const] = model.outputs.fitted_values
        std = np.sqrt(10**fitted)
        n = self.n_cells if self.measured is None else self.measured.astype(np.float64)
        clip = std * np.sqrt(n) + mean
        return ClippedMoments(mean=mean, std=std, n_cells=self.n_cells, clip=clip, measured=self.measured)


@dataclass(slots=True, kw_only=True)
class ClippedMoments:
    """Pass 2: per-gene sums of the counts clipped at ``clip``; then the top genes."""

    mean: np.ndarray
    std: np.ndarray
    n_cells: int
    clip: np.ndarray
    measured: np.ndarray | None = None  # per gene (see GeneMoments)
    sums: np.ndarray = field(init=False)
    squares: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.sums = np.zeros(len(self.clip), dtype=np.float64)
        self.squares = np.zeros(len(self.clip), dtype=np.float64)

    def add(self, X: sp.csr_matrix) -> None:
        sums, squares = block_sums(X, self.clip, len(self.clip))
        self.merge(sums, squares)

    def merge(self, sums: np.ndarray, squares: np.ndarray) -> None:
        self.sums += sums
        self.squares += squares

    def standardized_variances(self) -> np.ndarray:
        n: Any = self.n_cells if self.measured is None else self.measured.astype(np.float64)
        mean = self.mean
        with np.errstate(divide="ignore", invalid="ignore"):
            out = (1 / ((n - 1) * np.square(self.std))) * (
                (n * np.square(mean)) + self.squares - 2 * self.sums * mean
            )
        return out if self.measured is None else np.where(self.measured > 1, out, -np.inf)

    def top(self, n_top: int) -> np.ndarray:
        """Columns of the ``n_top`` genes with the largest standardized variance, ascending."""
        if n_top < 1:
            raise UsageError(f"n_hvg = {n_top}: must be at least 1")
        ranks = np.argsort(np.argsort(-self.standardized_variances()))
        return np.flatnonzero(ranks < n_top)


def block_sums(X: sp.csr_matrix, clip: np.ndarray | None, n_genes: int) -> tuple[np.ndarray, np.ndarray]:
    """One block's per-gene sums and sums of squares (counts clipped at ``clip``, if given)."""
    X = sp.csr_matrix(X)
    sums = np.zeros(n_genes, dtype=np.float64)
    squares = np.zeros(n_genes, dtype=np.float64)
    _accumulate(X.indices, X.data.astype(np.float64, copy=False), clip, sums, squares)
    return sums, squares


def block_moments(
    batches: Iterable[sp.csr_matrix], clip: np.ndarray | None, n_genes: int, block: int
) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Per block of ``block`` cells (the last one short), its sums, sums of squares and cells:
    each block summed cell by cell on its own, whatever batches its cells came in."""
    sums, squares, filled = np.zeros(n_genes), np.zeros(n_genes), 0
    for X in batches:
        X = sp.csr_matrix(X)
        start = 0
        while start < X.shape[0]:
            take = min(block - filled, X.shape[0] - start)
            part = X[start : start + take]
            _accumulate(part.indices, part.data.astype(np.float64, copy=False), clip, sums, squares)
            filled, start = filled + take, start + take
            if filled == block:
                yield sums, squares, filled
                sums, squares, filled = np.zeros(n_genes), np.zeros(n_genes), 0
    if filled:
        yield sums, squares, filled


@numba.njit(cache=True, nogil=True)
def _accumulate(indices, data, clip, sums, squares):  # type: ignore[no-untyped-def]  # pragma: no cover
    for e in range(len(data)):
        col = indices[e]
        x = data[e]
        if clip is not None and x > clip[col]:
            x = clip[col]
        sums[col] += x
        squares[col] += x * x
