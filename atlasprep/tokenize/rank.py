"""Geneformer's rank value encoding over CSR batches, with a compiled per-row kernel.

Per cell: counts / cell total (over all genes) × 10,000 / the gene's normalization factor (its
nonzero median over a reference corpus), genes ranked by that value (highest first), their
tokens truncated to the model's input size; V2 models add ``<cls>`` first and ``<eos>`` last.

Geneformer sorts each cell with ``np.argsort(-values)`` (numpy's default, unstable sort). Where
a cell's values hold no ties the order is unique, and the compiled kernel's stable sort gives
exactly it. Where they tie, numpy's order depends on its algorithm, so those cells (the kernel
flags them; they are rare) are re-ranked with the very same ``np.argsort`` call on the very
same vector. Either way the ``input_ids`` equal Geneformer's own tokenizer's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp

from atlasprep.errors import InputFormatError

__all__ = ["RankEncoder", "RankedCells"]


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
    token_ids: np.ndarray  # int32, one per (collapsed) gene
    medians: np.ndarray  # float64, one per (collapsed) gene
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
        position = {g: i for i, g in enumerate(order)}
        collapse = None
        if len(usable) != len(gene_ids) or len(order) != len(usable):
            rows = np.array([col for col, _ in usable], dtype=np.int64)
            cols = np.array([position[g] for _, g in usable], dtype=np.int64)
            collapse = sp.csr_matrix(
                (np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(len(gene_ids), len(order))
            )
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
            token_ids=np.array([token_dictionary[g] for g in order], dtype=np.int32),
            medians=np.array([gene_medians[g] for g in order], dtype=np.float64),
            max_len=max_len,
            cls_id=cls_id,
            eos_id=eos_id,
        )

    @property
    def n_genes(self) -> int:
        return len(self.token_ids)

    def encode(self, counts: sp.csr_matrix, n_counts: np.ndarray | None = None) -> RankedCells:
        """Rank-encode the cells (rows) of ``counts``, whose columns are the input's var.

        ``n_counts`` is each cell's total over all genes (Geneformer's ``obs["n_counts"]``);
        by default the row sums of ``counts``.
        """
        counts = sp.csr_matrix(counts)
        if n_counts is None:
            n_counts = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
        X = counts if self.collapse is None else sp.csr_matrix(counts @ self.collapse)
        X.sort_indices()
        special = self.cls_id is not None
        keep = self.max_len - 2 if special else self.max_len
        ids, offsets, tied = _rank_rows(
            X.indptr.astype(np.int64),
            X.indices.astype(np.int64),
            X.data.astype(np.float64),
            np.asarray(n_counts, dtype=np.float64),
            self.medians,
            self.token_ids,
            self.target_sum,
            keep,
        )
        if tied.any():
            ids, offsets = _rerank_tied(
                X, np.asarray(n_counts, dtype=np.float64), self, keep, ids, offsets, tied
            )
        if self.cls_id is not None and self.eos_id is not None:
            ids, offsets = _add_special(ids, offsets, np.int32(self.cls_id), np.int32(self.eos_id))
        return RankedCells(input_ids=ids, offsets=offsets)


@numba.njit(cache=True, nogil=True)
def _rank_rows(indptr, indices, data, n_counts, medians, tokens, target_sum, keep):  # type: ignore[no-untyped-def]  # pragma: no cover
    n_rows = len(indptr) - 1
    lengths = np.zeros(n_rows, dtype=np.int64)
    for i in range(n_rows):
        nz = 0
        for p in range(indptr[i], indptr[i + 1]):
            if data[p] != 0:
                nz += 1
        lengths[i] = min(nz, keep)
    offsets = np.zeros(n_rows + 1, dtype=np.int64)
    for i in range(n_rows):
        offsets[i + 1] = offsets[i] + lengths[i]
    out = np.empty(offsets[-1], dtype=np.int32)
    tied = np.zeros(n_rows, dtype=np.bool_)
    for i in range(n_rows):
        start, stop = indptr[i], indptr[i + 1]
        values = np.empty(stop - start, dtype=np.float64)
        toks = np.empty(stop - start, dtype=np.int32)
        k = 0
        for p in range(start, stop):
            if data[p] != 0:
                # the same float64 operations, in the same order, as Geneformer
                values[k] = data[p] / n_counts[i] * target_sum / medians[indices[p]]
                toks[k] = tokens[indices[p]]
                k += 1
        order = np.argsort(-values[:k], kind="mergesort")
        m = lengths[i]
        for j in range(m):
            out[offsets[i] + j] = toks[order[j]]
        # a tie anywhere in the kept prefix (or at its edge) makes numpy's order the reference
        for j in range(min(m + 1, k) - 1):
            if values[order[j]] == values[order[j + 1]]:
                tied[i] = True
                break
    return out, offsets, tied


def _rerank_tied(
    X: sp.csr_matrix,
    n_counts: np.ndarray,
    encoder: RankEncoder,
    keep: int,
    ids: np.ndarray,
    offsets: np.ndarray,
    tied: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank the flagged rows with Geneformer's own call, ``np.argsort(-values)``."""
    ids = ids.copy()
    for i in np.flatnonzero(tied):  # rare: only cells whose values tie
        start, stop = X.indptr[i], X.indptr[i + 1]
        cols = X.indices[start:stop]
        data = X.data[start:stop].astype(np.float64)
        nonzero = data != 0
        values = data[nonzero] / n_counts[i] * encoder.target_sum / encoder.medians[cols[nonzero]]
        tokens = encoder.token_ids[cols[nonzero]]
        ranked = tokens[np.argsort(-values)][:keep]
        ids[offsets[i] : offsets[i + 1]] = ranked
    return ids, offsets


def _add_special(
    ids: np.ndarray, offsets: np.ndarray, cls_id: np.int32, eos_id: np.int32
) -> tuple[np.ndarray, np.ndarray]:
    n = len(offsets) - 1
    lengths = np.diff(offsets) + 2
    new_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    out = np.empty(new_offsets[-1], dtype=np.int32)
    out[new_offsets[:-1]] = cls_id
    out[new_offsets[1:] - 1] = eos_id
    body = np.ones(len(out), dtype=bool)
    body[new_offsets[:-1]] = False
    body[new_offsets[1:] - 1] = False
    out[body] = ids
    return out, new_offsets
