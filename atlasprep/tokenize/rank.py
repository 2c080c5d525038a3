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
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp

from atlasprep.errors import InputFormatError
from atlasprep.tokenize._groups import length_groups

__all__ = ["RankEncoder", "RankedCells"]

_THREADS = max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True, slots=True, kw_only=True)
class RankedCells:
    """Ragged token lists of a batch: cell ``i`` is ``input_ids[offsets[i]:offsets[i + 1]]``."""

    input_ids: np.ndarray  # int32
    offsets: np.ndarray  # int64, n_cells + 1

    def cell(self, i: int) -> np.ndarray:
        return self.input_ids[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass(frozen=True, slots=True, kw_only=True)
class RankEncoder:
    """Rank value encoding for a fixed gene order (the columns of the batches it encodes).

    ``collapse`` (n_var × n_genes, 0/1) sums input columns that name the same vocabulary gene;
    ``token_ids`` and ``medians`` describe those ``n_genes`` columns.
    """

    collapse: sp.csr_matrix | None
    token_ids: np.ndarray  # int32 per matrix column (after collapsing); -1: not in the vocabulary
    medians: np.ndarray  # float64 per matrix column (after collapsing); NaN: not in the vocabulary
    max_len: int
    cls_id: int | None = None
    eos_id: int | None = None
    target_sum: float = 10_000.0

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
    ) -> RankEncoder:
        """Match ``gene_ids`` (the input's var, in column order) to Geneformer's dictionaries.

        As Geneformer does: with a ``gene_mapping`` (upper-cased ID or symbol -> Ensembl ID,
        kept only where the target is in the vocabulary), each input gene is mapped first and
        genes that map to the same ID are summed; genes outside the vocabulary are dropped.
        """
        if gene_mapping is not None:
            kept = {k: v for k, v in gene_mapping.items() if v in token_dictionary}
            mapped = [kept.get(str(g).upper()) for g in gene_ids]
        else:
            mapped = [g if g in token_dictionary else None for g in gene_ids]
        usable = [(col, g) for col, g in enumerate(mapped) if g is not None and g in gene_medians]
        if not usable:
            raise InputFormatError(
                "no input gene is in the token dictionary; check that var holds Ensembl IDs "
                "(or pass a gene mapping)"
            )
        order = list(dict.fromkeys(g for _, g in usable))  # first appearance
        collapse = None
        if len(order) == len(usable):  # no two columns name one gene: look tokens up per column
            genes: list[str | None] = [None] * len(gene_ids)
            for col, g in usable:
                genes[col] = g
        else:  # sum the columns that name one gene, as Geneformer's gene-ID collapsing does
            position = {g: i for i, g in enumerate(order)}
            rows = np.array([col for col, _ in usable], dtype=np.int64)
            cols = np.array([position[g] for _, g in usable], dtype=np.int64)
            collapse = sp.csr_matrix(
                (np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(len(gene_ids), len(order))
            )
            genes = list(order)
        cls_id = eos_id = None
        if special_tokens:
            missing = [t for t in ("<cls>", "<eos>") if t not in token_dictionary]
            if missing:
                raise InputFormatError(
                    f"special tokens {', '.join(missing)} are not in the token dictionary "
                    "(V1 dictionaries have none: tokenize without special tokens)"
                )
            cls_id, eos_id = int(token_dictionary["<cls>"]), int(token_dictionary["<eos>"])
        return cls(
            collapse=collapse,
            token_ids=np.array([-1 if g is None else token_dictionary[g] for g in genes], dtype=np.int32),
            medians=np.array([np.nan if g is None else gene_medians[g] for g in genes], dtype=np.float64),
            max_len=max_len,
            cls_id=cls_id,
            eos_id=eos_id,
        )

    @property
    def n_genes(self) -> int:
        """Input genes that reach the vocabulary (after collapsing)."""
        return int((self.token_ids >= 0).sum())

    def encode(self, counts: sp.csr_matrix, n_counts: np.ndarray | None = None) -> RankedCells:
        """Rank-encode the cells (rows) of ``counts``, whose columns are the input's var.

        ``n_counts`` is each cell's total over all genes (Geneformer's ``obs["n_counts"]``);
        by default the row sums of ``counts``.
        """
        counts = sp.csr_matrix(counts)
        if n_counts is None:
            n_counts = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
        X = counts if self.collapse is None else sp.csr_matrix(counts @ self.collapse)
        if not X.has_canonical_format:  # sorted columns: each row in Geneformer's gene order
            X.sum_duplicates()
        ids, offsets = _rank_rows(X, np.asarray(n_counts, dtype=np.float64), self)
        return RankedCells(input_ids=ids, offsets=offsets)


def _rank_rows(X: sp.csr_matrix, n_counts: np.ndarray, encoder: RankEncoder) -> tuple[np.ndarray, np.ndarray]:
    special = encoder.cls_id is not None and encoder.eos_id is not None
    keep = encoder.max_len - 2 if special else encoder.max_len  # gene tokens per cell
    # Each row's expressed vocabulary genes, in column order, form Geneformer's vector.
    lengths = _expressed_lengths(X.indptr, X.indices, X.data, encoder.token_ids)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.minimum(lengths, keep) + (2 if special else 0), out=offsets[1:])
    out = np.empty(offsets[-1], dtype=np.int32)
    if special:  # <cls> first and <eos> last in every cell, genes or not
        out[offsets[:-1]] = encoder.cls_id
        out[offsets[1:] - 1] = encoder.eos_id
    first = 1 if special else 0
    groups = list(length_groups(lengths))

    def rank_groups(share: list[tuple[int, np.ndarray]]) -> None:
        for k, rows in share:
            negated, tokens = _gather(
                rows, k, X.indptr, X.indices, X.data, n_counts, encoder.medians, encoder.token_ids,
                encoder.target_sum,
            )  # fmt: skip
            order = np.argsort(negated, axis=1)  # numpy's own sort, row by row: Geneformer's argsort(-v)
            _scatter(rows, order, tokens, offsets, out, min(k, keep), first)

    # One sort call per distinct length. The kernels and numpy's sort release the GIL, so each
    # thread takes every n-th group (they come shortest first, so the shares are even) and
    # writes its own rows of ``out``.
    with ThreadPoolExecutor(max_workers=_THREADS) as pool:
        for future in [pool.submit(rank_groups, groups[t::_THREADS]) for t in range(_THREADS)]:
            future.result()
    return out, offsets


@numba.njit(cache=True, nogil=True)
def _expressed_lengths(indptr, indices, data, token_ids):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Per row: how many entries are nonzero and name a vocabulary gene."""
    lengths = np.zeros(len(indptr) - 1, dtype=np.int64)
    for row in range(len(indptr) - 1):
        n = 0
        for e in range(indptr[row], indptr[row + 1]):
            if data[e] != 0 and token_ids[indices[e]] >= 0:
                n += 1
        lengths[row] = n
    return lengths


@numba.njit(cache=True, nogil=True)
def _gather(rows, k, indptr, indices, data, n_counts, medians, token_ids, target_sum):  # type: ignore[no-untyped-def]  # pragma: no cover
    """The rows' negated values (stacked, one row per cell) and tokens of their ``k`` expressed
    vocabulary genes, in column order."""
    values = np.empty((len(rows), k), dtype=np.float64)
    tokens = np.empty((len(rows), k), dtype=np.int32)
    for r in range(len(rows)):
        row = rows[r]
        n = n_counts[row]
        j = 0
        for e in range(indptr[row], indptr[row + 1]):
            col = indices[e]
            if data[e] == 0 or token_ids[col] < 0:
                continue
            # the same float64 operations, in the same order, as Geneformer's X / n_counts * 10_000 / medians
            values[r, j] = -(np.float64(data[e]) / n * target_sum / medians[col])
            tokens[r, j] = token_ids[col]
            j += 1
    return values, tokens


@numba.njit(cache=True, nogil=True)
def _scatter(rows, order, tokens, offsets, out, width, first):  # type: ignore[no-untyped-def]  # pragma: no cover
    for r in range(len(rows)):
        base = offsets[rows[r]] + first
        for j in range(width):
            out[base + j] = tokens[r, order[r, j]]
