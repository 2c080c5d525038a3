"""Seeded subsampling of a cell selection: a cap, or up to N cells per group (balanced)."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["sample_positions"]


def sample_positions(
    positions: np.ndarray,
    *,
    max_cells: int | None = None,
    groups: pd.Series | np.ndarray | None = None,
    per_group: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Choose cells uniformly at random, reproducibly for a given ``seed`` and selection.

    With ``groups`` (one label per position) and ``per_group``, each group keeps up to
    ``per_group`` cells; ``max_cells`` then caps the total. The result is sorted, so reads
    stay in storage order.
    """
    rng = np.random.default_rng(seed)
    chosen = np.asarray(positions, dtype=np.int64)
    if per_group is not None:
        if groups is None or len(groups) != len(chosen):
            raise ValueError("per_group sampling needs one group label per position")
        codes, _ = pd.factorize(pd.Series(groups).astype("string").fillna("<NA>"), sort=True)
        keys = rng.random(len(chosen))
        order = np.lexsort((keys, codes))
        sorted_codes = codes[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_codes)) + 1]
        rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        chosen = chosen[order[rank < per_group]]
    if max_cells is not None and len(chosen) > max_cells:
        chosen = chosen[rng.permutation(len(chosen))[:max_cells]]
    return np.sort(chosen)
