"""How much of a corpus the vocabulary sees: never silent, since a symbol-vs-ID mismatch that
drops most genes ruins a corpus without any error."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numba
import numpy as np
import scipy.sparse as sp

from atlasprep.errors import AtlasprepError

__all__ = ["LowGeneMatchError", "VocabCoverage"]


class LowGeneMatchError(AtlasprepError):
    """Too few of the input genes are in the vocabulary."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VocabCoverage:
    """Genes and counts inside/outside the vocabulary, accumulated batch by batch."""

    n_genes: int
    n_genes_in_vocab: int
    total_counts: float = 0.0
    counts_in_vocab: float = 0.0
    # cells whose context value the tokenizer was not fitted on (new data, a loaded tokenizer)
    unknown_context: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of_genes(cls, token_ids: np.ndarray) -> VocabCoverage:
        """Start from the input's columns (``token_ids`` -1 where a gene has no token)."""
        return cls(n_genes=len(token_ids), n_genes_in_vocab=int((token_ids >= 0).sum()))

    def add(self, counts: sp.csr_matrix, token_ids: np.ndarray) -> VocabCoverage:
        total, inside = _vocab_sums(counts.indices, counts.data, token_ids)
        return replace(
            self,
            total_counts=self.total_counts + total,
            counts_in_vocab=self.counts_in_vocab + inside,
        )

    def add_unknown(self, unknown: tuple[tuple[str, int], ...]) -> VocabCoverage:
        """Count the cells a batch gave a column's ``<unk>`` context token."""
        if not unknown:
            return self
        counts = dict(self.unknown_context)
        for column, n in unknown:
            counts[column] = counts.get(column, 0) + n
        return replace(self, unknown_context=tuple(sorted(counts.items())))

    def merge(self, other: VocabCoverage) -> VocabCoverage:
        """Both ranges' counts (the genes are the same input's)."""
        return replace(
            self,
            total_counts=self.total_counts + other.total_counts,
            counts_in_vocab=self.counts_in_vocab + other.counts_in_vocab,
        ).add_unknown(other.unknown_context)

    @property
    def gene_match(self) -> float:
        return self.n_genes_in_vocab / self.n_genes if self.n_genes else 0.0

    @property
    def count_match(self) -> float:
        return self.counts_in_vocab / self.total_counts if self.total_counts else 0.0

    def require(self, min_gene_match: float) -> None:
        if self.gene_match < min_gene_match:
            raise LowGeneMatchError(
                f"min_gene_match = {min_gene_match:.0%}: only {self.gene_match:.1%} of the input genes "
                f"({self.n_genes_in_vocab} of {self.n_genes}) are in the vocabulary; are var IDs symbols "
                "where the vocabulary has Ensembl IDs? Map them first (atlasprep harmonize), "
                "or set gene_mapping"
            )

    def to_json(self) -> dict[str, float | int | dict[str, int]]:
        record: dict[str, float | int | dict[str, int]] = {
            "n_genes": self.n_genes,
            "n_genes_in_vocab": self.n_genes_in_vocab,
            "genes_outside_vocab_fraction": round(1 - self.gene_match, 6),
            "counts_outside_vocab_fraction": round(1 - self.count_match, 6),
        }
        if self.unknown_context:  # cells per context column given its <unk> token
            record["context_unknown"] = dict(self.unknown_context)
        return record


@numba.njit(cache=True, nogil=True)
def _vocab_sums(indices, data, token_ids):  # type: ignore[no-untyped-def]  # pragma: no cover
    """The sum of all stored counts and of those in vocabulary genes, in one pass."""
    total = 0.0
    inside = 0.0
    for e in range(len(data)):
        value = np.float64(data[e])
        total += value
        if token_ids[indices[e]] >= 0:
            inside += value
    return total, inside
