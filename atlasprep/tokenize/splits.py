"""Group-aware train/val/test splits: whole groups (donors, datasets …), never single cells."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from atlasprep.errors import AtlasprepError, UsageError

__all__ = ["SPLIT_NAMES", "SplitLeakError", "SplitPlan", "assign_splits"]

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


class SplitLeakError(AtlasprepError):
    """A group landed in two splits; the build must not go on."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SplitPlan:
    """Which split each group goes to, and what that gives."""

    column: str
    groups: Mapping[str, str]  # group value -> split name
    n_cells: Mapping[str, int]  # split name -> cells

    def groups_in(self, split: str) -> list[str]:
        return sorted(g for g, s in self.groups.items() if s == split)

    def check(self, labels: pd.Series, splits: np.ndarray) -> None:
        """Refuse any group whose cells were given to more than one split."""
        frame = pd.DataFrame({"group": labels.astype("string").fillna("<NA>").to_numpy(), "split": splits})
        spread = frame.groupby("group", observed=True)["split"].nunique()
        leaked = spread[spread > 1]
        if len(leaked):
            raise SplitLeakError(
                f"{len(leaked)} {self.column} group(s) span two splits (e.g. {leaked.index[0]!r}); "
                "this is a bug in the split assignment"
            )


def assign_splits(
    labels: pd.Series,
    *,
    column: str,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    holdout: Sequence[str] = (),
    seed: int = 0,
) -> SplitPlan:
    """Assign each group of ``labels`` (one label per cell) to train, val or test.

    Groups named in ``holdout`` go to test. The rest are shuffled with ``seed`` (from their
    sorted order, so the same labels and seed give the same plan) and taken in turn by the
    split whose share of cells is furthest below its fraction.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise UsageError(f"split = {tuple(fractions)}: give three fractions that sum to 1")
    counts = labels.astype("string").fillna("<NA>").value_counts()
    unknown = sorted(set(holdout) - set(counts.index))
    if unknown:
        raise UsageError(f"holdout {column}={unknown[0]}: no cell has that {column}")
    total = int(counts.sum())
    plan: dict[str, str] = dict.fromkeys(holdout, "test")
    cells = dict.fromkeys(SPLIT_NAMES, 0)
    cells["test"] = int(sum(counts[g] for g in holdout))
    rest = sorted(g for g in counts.index if g not in plan)
    order = np.random.default_rng(seed).permutation(len(rest))
    targets = np.asarray(fractions, dtype=np.float64) * total
    for i in order:
        group = rest[i]
        deficit = targets - np.array([cells[s] for s in SPLIT_NAMES])
        split = SPLIT_NAMES[int(np.argmax(deficit))]  # ties: the earlier split (train first)
        plan[group] = split
        cells[split] += int(counts[group])
    return SplitPlan(column=column, groups=plan, n_cells=cells)
