"""Group-aware train/val/test splits: whole linked groups (donors, datasets …), never single cells.

``split_by`` names one column or several. Cells sharing a value in any of them are linked, and
each connected component (:mod:`atlasprep.tokenize.split_groups`) goes to one split whole, so no
donor and no dataset sits on two sides. Holdouts (:mod:`atlasprep.tokenize.split_holdout`)
send the components they touch to test. The rest are shuffled with ``seed`` (from their sorted
order) and taken in turn by the split whose share of cells is furthest below its fraction — or,
with ``stratify``, placed to keep each split's label composition close to the whole's
(:mod:`atlasprep.tokenize.split_stratify`). With one column and no stratify this is the
assignment atlasprep has always made: the same labels and seed give the same plan.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from atlasprep.errors import AtlasprepError, UsageError
from atlasprep.shard.manifest import ComponentsEntry as ComponentsRecord
from atlasprep.tokenize.split_groups import NA_LABEL, Components, linked_components, sorted_codes
from atlasprep.tokenize.split_holdout import HoldoutRecord, holdout_mask, resolve_holdouts
from atlasprep.tokenize.split_stratify import (
    StratifyRecord,
    composition_record,
    label_matrix,
    stratified_assign,
)

__all__ = [
    "SPLIT_NAMES",
    "ComponentsRecord",
    "SplitLeakError",
    "SplitPlan",
    "assign_splits",
    "plan_splits",
    "split_cells",
]

if TYPE_CHECKING:
    from atlasprep.sources import CellSource
    from atlasprep.tokenize.config import TokenizeConfig

log = logging.getLogger("atlasprep.tokenize")

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
_TEST = SPLIT_NAMES.index("test")


class SplitLeakError(AtlasprepError):
    """A group landed in two splits; the build must not go on."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SplitPlan:
    """Which split each group goes to, and what that gives."""

    columns: tuple[str, ...]
    groups: Mapping[str, str]  # value (one column) or "column=value" -> split name
    n_cells: Mapping[str, int]  # split name -> cells
    cell_splits: np.ndarray | None = None  # per cell: its split, an index into SPLIT_NAMES
    components: ComponentsRecord | None = None
    holdout: list[HoldoutRecord] = field(default_factory=list)
    stratify: StratifyRecord | None = None
    unmet: list[str] = field(default_factory=list)  # fractions not met (split_fallback)

    @property
    def column(self) -> str:
        return ",".join(self.columns)

    def groups_in(self, split: str) -> list[str]:
        return sorted(g for g, s in self.groups.items() if s == split)

    def check(self, labels: pd.Series | pd.DataFrame, splits: np.ndarray) -> None:
        """Refuse any value of any split column whose cells were given to more than one split."""
        frame = labels.to_frame(self.columns[0]) if isinstance(labels, pd.Series) else labels
        split_codes = pd.factorize(np.asarray(splits))[0]
        for column in self.columns:
            codes, names = sorted_codes(frame[column])
            pairs = np.unique(np.stack([codes, split_codes]), axis=1)
            values, n_splits = np.unique(pairs[0], return_counts=True)
            leaked = values[n_splits > 1]
            if len(leaked):
                raise SplitLeakError(
                    f"{len(leaked)} {column} group(s) span two splits (e.g. {names[leaked[0]]!r}); "
                    "this is a bug in the split assignment"
                )


def split_cells(config: TokenizeConfig, source: CellSource, positions: np.ndarray) -> SplitPlan:
    """The plan of a build: its holdouts resolved, the columns it needs read for its cells."""
    columns = config.split_columns
    rules = resolve_holdouts(config.holdout, columns, exact=config.holdout_exact)
    extra = [rule.column for rule in rules] + ([config.stratify] if config.stratify else [])
    obs = source.obs_values(positions, list(dict.fromkeys([*columns, *extra])))
    held, records = holdout_mask(obs, rules) if rules else (None, [])
    plan = plan_splits(
        obs,
        columns=columns,
        fractions=config.split,
        held=held,
        holdout=records,
        stratify=config.stratify,
        seed=config.seed,
        fallback=config.split_fallback,
    )
    assert plan.cell_splits is not None
    plan.check(obs, plan.cell_splits)
    return plan


def assign_splits(
    labels: pd.Series,
    *,
    column: str,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    holdout: Sequence[str] = (),
    seed: int = 0,
    fallback: bool = False,
) -> SplitPlan:
    """Assign each group of ``labels`` (one label per cell) to train, val or test; the groups
    named in ``holdout`` (values, matched exactly) go to test."""
    values = labels.astype("string").fillna(NA_LABEL)
    unknown = sorted(set(holdout) - set(values.unique()))
    if unknown:
        raise UsageError(f"holdout {column}={unknown[0]}: no cell has that {column}")
    held = np.asarray(values.isin(list(holdout)), dtype=bool)
    return plan_splits(
        labels.to_frame(column),
        columns=(column,),
        fractions=fractions,
        held=held,
        seed=seed,
        fallback=fallback,
    )


def plan_splits(
    obs: pd.DataFrame,
    *,
    columns: Sequence[str],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    held: np.ndarray | None = None,
    holdout: Sequence[HoldoutRecord] = (),
    stratify: str | None = None,
    seed: int = 0,
    fallback: bool = False,
) -> SplitPlan:
    """The plan for the cells of ``obs`` (the split columns, and ``stratify``'s): components of
    ``columns`` whole, those touching a ``held`` cell in test."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise UsageError(f"split = {tuple(fractions)}: give three fractions that sum to 1")
    comps = linked_components(obs, columns)
    split_of = np.full(comps.n, -1, dtype=np.int64)
    if held is not None:
        split_of[np.unique(comps.cell_component[held])] = _TEST
    target = np.asarray(fractions, dtype=np.float64)
    held_groups = split_of == _TEST
    n_held = int(comps.sizes[held_groups].sum())
    _place_too_large(comps, split_of, target, fallback=fallback)
    aim = _aim(target, split_of, comps.sizes)
    stratified = None
    free = split_of < 0
    if stratify is None:
        split_of = _greedy(comps.sizes, split_of, aim * int(comps.sizes.sum()), seed=seed)
    else:
        labels, names = sorted_codes(obs[stratify])
        matrix = label_matrix(comps.cell_component, labels, comps.n, len(names))
        split_of = stratified_assign(matrix, split_of, aim, seed=seed)
    _fill_empty(split_of, free, comps.sizes, target)
    if stratify is not None:
        stratified = composition_record(stratify, matrix, split_of, names, SPLIT_NAMES)
    unmet = _unmet(comps, split_of, target, fallback=fallback, held=(n_held, int(held_groups.sum())))
    cell_splits = split_of[comps.cell_component].astype(np.uint8)
    cells = np.bincount(split_of, weights=comps.sizes, minlength=len(SPLIT_NAMES))
    largest = int(np.argmax(comps.sizes)) if comps.n else 0
    share = float(comps.sizes[largest] / max(1, comps.sizes.sum())) if comps.n else 0.0
    return SplitPlan(
        columns=tuple(columns),
        groups=_groups(comps, split_of),
        n_cells={s: int(n) for s, n in zip(SPLIT_NAMES, cells, strict=True)},
        cell_splits=cell_splits,
        components={
            "n": comps.n,
            "largest_share": round(share, 6),
            "largest": comps.name(largest) if comps.n else [],
        },
        holdout=list(holdout),
        stratify=stratified,
        unmet=unmet,
    )


def _greedy(sizes: np.ndarray, split_of: np.ndarray, targets: np.ndarray, *, seed: int) -> np.ndarray:
    """Components not yet placed, in a seeded order, each to the split furthest below its target."""
    split_of = split_of.copy()
    cells = np.bincount(split_of[split_of >= 0], weights=sizes[split_of >= 0], minlength=len(targets))
    rest = np.flatnonzero(split_of < 0)
    for i in np.random.default_rng(seed).permutation(len(rest)):  # once per component
        deficit = targets - cells
        split = int(np.argmax(deficit))  # ties: the earlier split (train first)
        split_of[rest[i]] = split
        cells[split] += sizes[rest[i]]
    return split_of


def _place_too_large(comps: Components, split_of: np.ndarray, target: np.ndarray, *, fallback: bool) -> None:
    """A component not held out and larger than every split's share fits nowhere: an error
    naming it, unless ``fallback``; then it goes whole to the split with the largest fraction
    (train, as a rule), before the rest are placed around it."""
    total = int(comps.sizes.sum())
    too_large = (split_of < 0) & (comps.sizes > target.max() * total)
    if not too_large.any():
        return
    if not fallback:
        largest = int(np.flatnonzero(too_large)[np.argmax(comps.sizes[too_large])])
        raise UsageError(
            f"{_describe(comps, target, largest)}: too large for any split; split by fewer columns, change "
            "the fractions, or set split_fallback to accept it"
        )
    split_of[too_large] = int(np.argmax(target))


def _aim(target: np.ndarray, split_of: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The shares the components still to place are dealt toward. Where held-out components
    already hold more than a split's share, that split takes no more, and the cells left are
    shared by the other splits in proportion to their fractions (a holdout larger than test's
    share leaves val its part of the rest, not nothing). Otherwise the fractions as given."""
    total = max(float(sizes.sum()), 1.0)
    placed = np.bincount(split_of[split_of >= 0], weights=sizes[split_of >= 0], minlength=len(target))
    full = placed > target * total
    if not full.any() or target[~full].sum() <= 0:
        return target
    aim = placed / total
    aim[~full] = (1.0 - placed[full].sum() / total) * target[~full] / target[~full].sum()
    return aim


def _fill_empty(split_of: np.ndarray, free: np.ndarray, sizes: np.ndarray, target: np.ndarray) -> None:
    """Give a split that asks for cells but got none (the greedy pass can leave one so when a
    few groups are left to place) the smallest placed group of the split furthest over its share
    that keeps another. Plans where every such split has cells are left as they are."""
    total = max(float(sizes.sum()), 1.0)
    for split in np.flatnonzero(target > 0):
        if (split_of == split).any():
            continue
        counts = np.bincount(split_of[free], minlength=len(target))
        cells = np.bincount(split_of, weights=sizes, minlength=len(target))
        donors = [s for s in range(len(target)) if s != split and counts[s] >= 2]
        if not donors:
            return
        donor = max(donors, key=lambda s: (cells[s] / total - target[s], -s))
        movable = np.flatnonzero(free & (split_of == donor))
        split_of[movable[np.argmin(sizes[movable])]] = split


def _unmet(
    comps: Components, split_of: np.ndarray, target: np.ndarray, *, fallback: bool, held: tuple[int, int]
) -> list[str]:
    """The fractions the plan could not meet: none, unless a requested split got no cells or a
    component too large for any split was kept whole (``fallback``: every split's fraction and
    what it got, logged). A requested split left empty without ``fallback`` is an error.
    ``held``: the cells and the components the holdouts sent to test."""
    n_held, n_held_groups = held
    total = max(int(comps.sizes.sum()), 1)
    cells = np.bincount(split_of, weights=comps.sizes, minlength=len(SPLIT_NAMES))
    empty = [name for s, name in enumerate(SPLIT_NAMES) if target[s] > 0 and cells[s] == 0]
    too_large = comps.n > 0 and bool((comps.sizes > target.max() * total).any())
    if comps.n == 0 or not (empty or (too_large and fallback)):
        return []
    n_free = comps.n - n_held_groups
    if empty and not fallback:
        taken = f"the holdout takes {n_held:,} of the {total:,} cells; " if n_held else ""
        left = f"{n_free} linked group(s) of {', '.join(comps.columns)} left to place"
        raise UsageError(
            f"split = {tuple(float(t) for t in target)}: {' and '.join(empty)} would get no cells "
            f"({taken}{left}); hold out less, split by columns with more groups, set that split's "
            "fraction to 0, or set split_fallback to accept it"
        )
    largest = int(np.argmax(comps.sizes))
    unmet = [f"{name} = {target[s]:g}: got {cells[s] / total:.3g}" for s, name in enumerate(SPLIT_NAMES)]
    log.warning("%s; not met: %s", _describe(comps, target, largest), "; ".join(unmet))
    return unmet


def _describe(comps: Components, target: np.ndarray, component: int) -> str:
    total = max(int(comps.sizes.sum()), 1)
    return (
        f"split = {tuple(float(t) for t in target)}: {comps.n} linked group(s) of "
        f"{', '.join(comps.columns)}, the largest holding {comps.sizes[component] / total:.1%} of the cells "
        f"({comps.describe(component)})"
    )


def _groups(comps: Components, split_of: np.ndarray) -> dict[str, str]:
    """Each value of the split columns -> its split (``column=value`` with several columns)."""
    groups: dict[str, str] = {}
    several = len(comps.columns) > 1
    for column, names, nodes in zip(comps.columns, comps.values, comps.node_component, strict=True):
        for name, split in zip(names, split_of[nodes].tolist(), strict=True):
            groups[f"{column}={name}" if several else name] = SPLIT_NAMES[split]
    return groups
