"""Geneformer's rank value encoding over CSR batches, exactly, without a per-cell loop.

Per cell: counts / cell total (over all genes) × 10,000 / the gene's normalization factor (its
nonzero median over a reference corpus), genes ranked by that value (highest first), their
tokens truncated to the model's input size; V2 models add ``<cls>`` first and ``<eos>`` last.

Geneformer sorts each cell with ``np.argsort(-values)``: numpy's default, unstable sort, whose
order among tied values depends on its algorithm (and on the CPU's SIMD sort). Ties are common
(genes with the same count and the same median), so no other sort can promise the same tokens.
What can: numpy sorts each row of a 2-D array with the same 1-D routine, so all cells of a
batch with the same number of expressed genes are stacked and sorted in one ``argsort`` call,
each row getting exactly the order its own ``np.argsort`` would give. A batch costs one
vectorized pass for the values and one sort call per distinct cell length.

That order is numpy's, so it is the CPU's too: a store ranked with it holds Geneformer's
tokens only on a CPU whose sort breaks ties as the model's did. The ``stable`` tie order
(:mod:`atlasprep.tokenize._rank_sort`) breaks ties by ascending token id instead, one order on
every CPU, computed by a radix-sort kernel over the whole batch.

Ties also depend on the last bits of the values, so they are computed with the very floating-point
operations Geneformer's ``X / n_counts * 10_000 / medians`` performs, which depend on its input:
on a dense matrix numpy divides; on a sparse one scipy (>= 1.11) multiplies by ``1 / v``; and the
first two steps run in float32 when both X and ``n_counts`` are float32 (:class:`Arithmetic`).

Geneformer's vector is a sparse row's stored entries, so a stored zero of a vocabulary gene is
ranked too (value 0, after the expressed genes), and moves numpy's order among ties; it is
ranked here the same way, but not in a cell whose total is 0 (where it would be 0 / 0), and not
in the stable order, whose tokens do not depend on how X is stored.
"""

from __future__ import annotations

import functools
import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import scipy.sparse as sp

from atlasprep.errors import InputFormatError
from atlasprep.tokenize._groups import length_groups
from atlasprep.tokenize._rank_kernels import gather, ranked_lengths, scatter
from atlasprep.tokenize._rank_sort import rank_stable_rows
from atlasprep.tokenize.config import TieOrder

__all__ = ["STABLE_ARITHMETIC", "Arithmetic", "RankEncoder", "RankedCells", "geneformer_arithmetic"]

# threads for the kernels and numpy's sort: numba's count (NUMBA_NUM_THREADS, else the CPUs), at most 4
_THREADS = max(1, min(4, int(numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True, kw_only=True)
class RankedCells:
    """Ragged token lists of a batch: cell ``i`` is ``input_ids[offsets[i]:offsets[i + 1]]``."""

    input_ids: np.ndarray  # int32
    offsets: np.ndarray  # int64, n_cells + 1
    available: np.ndarray | None = None  # int64 per cell: its expressed genes, before max_len

    def cell(self, i: int) -> np.ndarray:
        return self.input_ids[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass(frozen=True, slots=True, kw_only=True)
class RankEncoder:
    """Rank value encoding for a fixed gene order (the columns of the batches it encodes).

    ``collapse`` (n_var × n_genes, 0/1) sums input columns that name the same vocabulary gene;
    ``token_ids`` and ``medians`` describe those ``n_genes`` columns. ``tie_order``: how genes
    of equal value are ordered (:class:`~atlasprep.tokenize.config.TieOrder`).
    """

    collapse: sp.csr_matrix | None
    token_ids: np.ndarray  # int32 per matrix column (after collapsing); -1: not in the vocabulary
    medians: np.ndarray  # float64 per matrix column (after collapsing); NaN: not in the vocabulary
    max_len: int
    cls_id: int | None = None
    eos_id: int | None = None
    target_sum: float = 10_000.0
    tie_order: TieOrder = TieOrder.numpy

    @classmethod
    def from_dictionaries(
        cls,
        gene_ids: Sequence[str],
        *,
        token_dictionary: Mapping[str, int],
        gene_medians: Mapping[str, float],
        gene_mapping: Mapping[str, str] | None = None,
        max_len: int = 4096,
        special_tokens: bool = True,
        require_genes: bool = True,
        tie_order: TieOrder | str = TieOrder.numpy,
    ) -> RankEncoder:
        """Match ``gene_ids`` (the input's var, in column order) to Geneformer's dictionaries.

        As Geneformer's ``sum_ensembl_ids`` does: each input ID is upper-cased and mapped through
        ``gene_mapping`` (kept only where the target is in the vocabulary; without one, the
        vocabulary maps to itself). Genes that map to nothing are dropped. If two *different*
        input IDs map to one gene, every gene named more than once is summed into one column
        placed after the others (in order of first appearance); otherwise the columns keep their
        order, repeated IDs included. The column order decides how numpy orders tied values
        (the ``stable`` tie order does not depend on it).
        With ``require_genes`` (the default), no input gene in the vocabulary is an error.
        """
        source = gene_mapping if gene_mapping is not None else {g: g for g in token_dictionary}
        mapping = {k: v for k, v in source.items() if v in token_dictionary}
        ids = [str(g) for g in gene_ids]
        named = [g for g in ids if g in mapping]  # as Geneformer checks it: before upper-casing
        mapped = [mapping.get(g.upper()) for g in ids]
        usable = [(col, g) for col, g in enumerate(mapped) if g is not None and g in gene_medians]
        if not usable and require_genes:
            raise InputFormatError(
                "no input gene is in the token dictionary; check that var holds Ensembl IDs "
                "(or pass a gene mapping)"
            )
        collapse = None
        if len(set(named)) == len({mapping[g] for g in named}):  # no two IDs name one gene
            genes: list[str | None] = [None] * len(gene_ids)
            for col, g in usable:
                genes[col] = g
        else:  # sum the columns of each gene named more than once; those go last
            times = Counter(g for g in mapped if g is not None)
            once = [g for _, g in usable if times[g] == 1]
            order = once + [g for g, n in times.items() if n > 1 and g in gene_medians]
            position = {g: i for i, g in enumerate(order)}
            rows = np.array([col for col, _ in usable], dtype=np.int64)
            cols = np.array([position[g] for _, g in usable], dtype=np.int64)
            collapse = sp.csr_matrix(
                (np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(len(gene_ids), len(order))
            )
            genes = list(order)
        cls_id, eos_id = _special_ids(token_dictionary) if special_tokens else (None, None)
        return cls(
            collapse=collapse,
            token_ids=np.array([-1 if g is None else token_dictionary[g] for g in genes], dtype=np.int32),
            medians=np.array([np.nan if g is None else gene_medians[g] for g in genes], dtype=np.float64),
            max_len=max_len,
            cls_id=cls_id,
            eos_id=eos_id,
            tie_order=TieOrder(tie_order),
        )

    @property
    def n_genes(self) -> int:
        """Input genes that reach the vocabulary (after collapsing)."""
        return int((self.token_ids >= 0).sum())

    def encode(
        self,
        counts: sp.csr_matrix,
        n_counts: np.ndarray | None = None,
        *,
        x_dtype: np.dtype[Any] | None = None,
        dense: bool = False,
    ) -> RankedCells:
        """Rank-encode the cells (rows) of ``counts``, whose columns are the input's var.

        ``n_counts`` is each cell's total (Geneformer's ``obs["n_counts"]``, in its own dtype);
        by default the row sums of ``counts``, as ``X.sum(axis=1)`` gives them. ``x_dtype`` (the
        input's own X dtype, by default ``counts.dtype``) and ``dense`` (whether the input stores
        X dense) decide Geneformer's arithmetic (:func:`geneformer_arithmetic`). The ``stable``
        tie order has one arithmetic for every input (:data:`STABLE_ARITHMETIC`, the totals
        summed in float64), so a cell's tokens do not depend on how its input stores X.
        """
        counts = sp.csr_matrix(counts)
        stable = self.tie_order == TieOrder.stable
        x_dtype = np.dtype(x_dtype if x_dtype is not None else counts.dtype)
        if n_counts is None and stable:
            n_counts = np.asarray(counts.sum(axis=1, dtype=np.float64)).ravel()
        elif n_counts is None:  # in the dtype X.sum(axis=1) gives the input's own X
            total_dtype = np.ones((1, 1), x_dtype).sum(axis=1).dtype
            n_counts = np.asarray(counts.sum(axis=1)).ravel().astype(total_dtype)
        n_counts = np.asarray(n_counts).ravel()
        arithmetic = (
            geneformer_arithmetic(x_dtype, n_counts.dtype, dense=dense) if not stable else STABLE_ARITHMETIC
        )
        X = counts if self.collapse is None else _collapsed(counts, self.collapse)
        if not X.has_canonical_format:  # sorted columns: each row in Geneformer's gene order
            X.sum_duplicates()
        # Geneformer ranks a sparse X's stored zeros (value 0, after the expressed genes), except
        # in a cell whose total is 0, where they would be 0 / 0; the stable order ranks no zero
        with np.errstate(invalid="ignore"):
            zeros = np.asarray(n_counts != 0, dtype=np.bool_) & (not stable)
        ids, offsets = _rank_rows(X, arithmetic.scales(n_counts), zeros, arithmetic, self)
        return RankedCells(input_ids=ids, offsets=offsets, available=np.diff(X.indptr).astype(np.int64))


@dataclass(frozen=True, slots=True)
class Arithmetic:
    """The floating-point operations of Geneformer's ``X / n_counts * 10_000 / medians``.

    ``reciprocal``: each ``/ v`` is ``* (1 / v)``, as scipy (>= 1.11) divides a sparse matrix by
    a dense array; otherwise a true division, as numpy divides a dense one. ``single``: the first
    two steps round to float32 (numpy's type promotion when X and ``n_counts`` are float32,
    after which the division by the float64 medians is in float64).
    """

    reciprocal: bool
    single: bool

    def scales(self, n_counts: np.ndarray) -> np.ndarray:
        """Per cell, the exact operand of the first step (``1 / n`` or ``n``), as float64."""
        with np.errstate(divide="ignore"):  # a cell without counts has no value to scale
            operand = np.divide(1, n_counts) if self.reciprocal else n_counts
        return operand.astype(np.float32 if self.single else np.float64).astype(np.float64)

    def norms(self, medians: np.ndarray) -> np.ndarray:
        """Per gene, the operand of the last step (``1 / median`` or the median)."""
        return np.divide(1, medians) if self.reciprocal else medians


# The stable order's values: float64 true divisions, count / total * 10_000 / median, whatever
# the input's X dtype or layout (each step rounded once, the same bits on every CPU).
STABLE_ARITHMETIC = Arithmetic(reciprocal=False, single=False)


def geneformer_arithmetic(x_dtype: np.dtype[Any], n_dtype: np.dtype[Any], *, dense: bool) -> Arithmetic:
    """How Geneformer normalizes an input whose X has ``x_dtype`` (stored dense or sparse) and
    whose ``n_counts`` has ``n_dtype``, in this environment: the dtypes of the intermediate
    results come from numpy's own promotion rules, applied to one-element arrays."""
    reciprocal = not dense and _scipy_divides_by_reciprocal()
    x, n = np.ones(1, dtype=x_dtype), np.ones(1, dtype=n_dtype)
    scaled = (x * np.divide(1, n) if reciprocal else x / n) * 10_000
    return Arithmetic(reciprocal=reciprocal, single=scaled.dtype == np.float32)


def _collapsed(counts: sp.csr_matrix, collapse: sp.csr_matrix) -> sp.csr_matrix:
    """``counts @ collapse``, keeping the stored zeros of the genes named once, as Geneformer's
    ``sum_ensembl_ids`` keeps them (it selects those columns; the genes it sums are dense sums,
    where a zero is not stored, as a product of sparse matrices stores none)."""
    X = sp.csr_matrix(counts @ collapse)
    zero = counts.data == 0
    if not zero.any():
        return X
    n_var, n_out = collapse.shape
    target = np.full(n_var, -1, dtype=np.int64)  # each input column's output column
    fed = np.diff(collapse.indptr) > 0
    target[fed] = collapse.indices[collapse.indptr[:-1][fed]]
    once = np.bincount(collapse.indices, minlength=n_out) == 1  # output columns of one input column
    rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))[zero]
    cols = target[counts.indices[zero]]
    kept = cols >= 0
    kept[kept] = once[cols[kept]]
    if not kept.any():
        return X
    coo = X.tocoo()
    merged = sp.coo_matrix(
        (
            np.concatenate([coo.data, np.zeros(int(kept.sum()), dtype=X.dtype)]),
            (np.concatenate([coo.row, rows[kept]]), np.concatenate([coo.col, cols[kept]])),
        ),
        shape=X.shape,
    ).tocsr()
    merged.sum_duplicates()  # (a column stored twice in one row, zero and count, is one entry)
    return merged


def _special_ids(token_dictionary: Mapping[str, int]) -> tuple[int, int]:
    """The ``<cls>`` and ``<eos>`` token IDs (V2 dictionaries; V1 has none)."""
    missing = [t for t in ("<cls>", "<eos>") if t not in token_dictionary]
    if missing:
        raise InputFormatError(
            f"special tokens {', '.join(missing)} are not in the token dictionary "
            "(V1 dictionaries have none: tokenize without special tokens)"
        )
    return int(token_dictionary["<cls>"]), int(token_dictionary["<eos>"])


@functools.cache
def _scipy_divides_by_reciprocal() -> bool:
    """Whether this scipy computes ``sparse / dense`` as ``sparse * (1 / dense)``: 3 / 10 is
    0.3, while 3 * (1 / 10) is 0.30000000000000004."""
    quotient = sp.csr_matrix(np.array([[3.0]])) / np.array([[10.0]])
    value = quotient.toarray()[0, 0] if sp.issparse(quotient) else np.asarray(quotient)[0, 0]
    return bool(value != 0.3)


def _rank_rows(
    X: sp.csr_matrix, scales: np.ndarray, zeros: np.ndarray, arithmetic: Arithmetic, encoder: RankEncoder
) -> tuple[np.ndarray, np.ndarray]:
    special = encoder.cls_id is not None and encoder.eos_id is not None
    keep = encoder.max_len - 2 if special else encoder.max_len  # gene tokens per cell
    first = 1 if special else 0
    norms = arithmetic.norms(encoder.medians)

    def rank_groups(share: list[tuple[int, np.ndarray]]) -> None:
        for k, rows in share:
            negated, tokens = gather(
                rows, k, X.indptr, X.indices, X.data, scales, zeros, norms, encoder.token_ids,
                encoder.target_sum, arithmetic.reciprocal, arithmetic.single,
            )  # fmt: skip
            order = np.argsort(negated, axis=1)  # numpy's own sort, row by row: Geneformer's argsort(-v)
            scatter(rows, order, tokens, offsets, out, min(k, keep), first)

    # The kernels and numpy's sort release the GIL: both passes run on all threads.
    with ThreadPoolExecutor(max_workers=_THREADS) as pool:
        # Each row's ranked vocabulary genes, in column order, form Geneformer's vector.
        lengths = np.empty(X.shape[0], dtype=np.int64)
        halves = np.linspace(0, X.shape[0], _THREADS + 1).astype(np.int64)
        csr = (X.indptr, X.indices, X.data)
        for future in [
            pool.submit(ranked_lengths, *csr, zeros, encoder.token_ids, lo, hi, lengths)
            for lo, hi in itertools.pairwise(halves)
        ]:
            future.result()
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(np.minimum(lengths, keep) + (2 if special else 0), out=offsets[1:])
        out = np.empty(offsets[-1], dtype=np.int32)
        if special:  # <cls> first and <eos> last in every cell, genes or not
            out[offsets[:-1]] = encoder.cls_id
            out[offsets[1:] - 1] = encoder.eos_id
        if encoder.tie_order == TieOrder.stable:
            _rank_stable(pool, X, scales, norms, encoder, offsets[:-1] + first, out, keep)
            return out, offsets
        # One sort call per distinct length; each thread takes every n-th group (they come
        # shortest first, so the shares are even) and writes its own rows of ``out``.
        groups = list(length_groups(lengths))
        for future in [pool.submit(rank_groups, groups[t::_THREADS]) for t in range(_THREADS)]:
            future.result()
    return out, offsets


def _rank_stable(
    pool: ThreadPoolExecutor,
    X: sp.csr_matrix,
    scales: np.ndarray,
    norms: np.ndarray,
    encoder: RankEncoder,
    starts: np.ndarray,
    out: np.ndarray,
    keep: int,
) -> None:
    """The stable tie order (values by :data:`STABLE_ARITHMETIC`): each thread ranks a run of
    rows holding an even share of the stored values. Every cell is sorted alone, so the split
    decides the time, never the tokens."""
    n_rows = X.shape[0]
    bounds = np.searchsorted(X.indptr, np.linspace(0, X.nnz, _THREADS + 1)).clip(0, n_rows)
    bounds[0], bounds[-1] = 0, n_rows
    csr = (X.indptr, X.indices, X.data)
    rest = (scales, norms, encoder.token_ids, encoder.target_sum, starts, out, keep)
    shares = [(int(lo), int(hi)) for lo, hi in itertools.pairwise(bounds) if hi > lo]
    for future in [pool.submit(rank_stable_rows, lo, hi, *csr, *rest) for lo, hi in shares]:
        future.result()
