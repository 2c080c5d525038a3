"""Stratified group splits: whole components, placed so each split's label composition stays
close to the whole's, and each split's size close to its fraction.

Components go largest first (ties in a seeded order), as scikit-learn's ``StratifiedGroupKFold``
takes its groups: the big ones are hard to place and the small ones fill what is left. Each
goes to the split with the largest *deficit* it would fill: for split ``s`` and the
component's label counts ``x``, ``Σ_l x_l (f_s N_l − C_sl) / N_l`` (cells of each label the
split still lacks, each label weighted by its rarity, so a rare type is spread as carefully as
a common one) plus the size term ``size (f_s N − n_s) / N``. Splits with fraction 0 take
nothing. The result is judged by the Jensen–Shannon divergence (base 2, 0 … 1) of each
split's composition from the whole's, recorded in the manifest.
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np
from scipy.sparse import csr_matrix

__all__ = ["StratifyRecord", "composition_record", "js_divergence", "label_matrix", "stratified_assign"]


class StratifyRecord(TypedDict):
    column: str
    metric: str  # how divergence is measured
    divergence: dict[str, float]  # split -> JS divergence of its composition from the whole's
    composition: dict[str, dict[str, int]]  # split -> label -> cells


def label_matrix(component: np.ndarray, labels: np.ndarray, n_components: int, n_labels: int) -> csr_matrix:
    """Cells per (component, label), sparse: components × labels."""
    ones = np.ones(len(component), dtype=np.int64)
    matrix = csr_matrix((ones, (component, labels)), shape=(n_components, n_labels))
    matrix.sum_duplicates()
    return matrix


def stratified_assign(
    matrix: csr_matrix,
    split_of: np.ndarray,
    fractions: np.ndarray,
    *,
    seed: int,
) -> np.ndarray:
    """``split_of`` (−1 for components still to place, a split index for held-out ones) filled in."""
    split_of = split_of.copy()
    sizes = np.asarray(matrix.sum(axis=1)).ravel()
    totals = np.asarray(matrix.sum(axis=0)).ravel().astype(np.float64)
    n_total = float(totals.sum())
    counts = np.zeros((len(fractions), matrix.shape[1]), dtype=np.float64)
    cells = np.zeros(len(fractions), dtype=np.float64)
    for s in range(len(fractions)):
        placed = split_of == s
        counts[s] = np.asarray(matrix[placed].sum(axis=0)).ravel()
        cells[s] = sizes[placed].sum()
    rest = np.flatnonzero(split_of < 0)
    tie = np.random.default_rng(seed).permutation(len(rest))
    order = rest[np.lexsort((tie, -sizes[rest]))]
    closed = fractions <= 0
    weight = 1.0 / np.maximum(totals, 1.0)
    for g in order:  # once per component, not per cell
        row = slice(matrix.indptr[g], matrix.indptr[g + 1])
        labels, x = matrix.indices[row], matrix.data[row].astype(np.float64)
        lack = fractions[:, None] * totals[labels][None, :] - counts[:, labels]
        score = lack @ (x * weight[labels]) + sizes[g] * (fractions * n_total - cells) / max(n_total, 1.0)
        score[closed] = -np.inf
        s = int(np.argmax(score))  # ties: the earlier split (train first)
        split_of[g] = s
        counts[s, labels] += x
        cells[s] += sizes[g]
    return split_of


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon divergence of two count vectors, base 2 (0: the same composition)."""
    if p.sum() == 0 or q.sum() == 0:
        return 0.0
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return max(0.0, (kl(p) + kl(q)) / 2)


def composition_record(
    column: str, matrix: csr_matrix, split_of: np.ndarray, names: list[str], split_names: tuple[str, ...]
) -> StratifyRecord:
    """Each split's label counts and its divergence from the whole's."""
    whole = np.asarray(matrix.sum(axis=0)).ravel()
    composition: dict[str, dict[str, int]] = {}
    divergence: dict[str, float] = {}
    for s, split in enumerate(split_names):
        counts = np.asarray(matrix[split_of == s].sum(axis=0)).ravel()
        if counts.sum() == 0:
            continue
        composition[split] = {names[i]: int(counts[i]) for i in np.flatnonzero(counts)}
        divergence[split] = round(js_divergence(counts, whole), 6)
    return {
        "column": column,
        "metric": "Jensen-Shannon divergence from the whole (base 2)",
        "divergence": divergence,
        "composition": composition,
    }
