"""`tokenize --dry-run`: what a build would make, from the selection and its split plan alone.

The filter is resolved and the cells selected exactly as the build selects them, and the splits
are planned by the build's own layout function; nothing is read beyond obs, nothing is written.
The token count is an upper bound from the Census's per-cell ``nnz`` column where the source has
it (a cell has at most ``max_len`` tokens, and at most its stored genes plus the frame and
context tokens), else from ``max_len`` alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from atlasprep.sources import CompiledFilter, SourceInfo
from atlasprep.tokenize.api import _layout, _selected
from atlasprep.tokenize.config import TokenizeConfig

__all__ = ["TokenizePlan", "plan_tokenize"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SplitPlanned:
    cells: int
    groups: int | None  # split_by groups (linked components) in the split; None without split_by
    shards: int | None  # None: cut by bytes, known only once encoded

    def to_json(self) -> dict[str, int | None]:
        return {"cells": self.cells, "groups": self.groups, "shards": self.shards}


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenizePlan:
    """What ``tokenize`` would build from a config (see the module docstring)."""

    source: SourceInfo
    compiled: CompiledFilter
    n_matched: int  # cells that pass the filter, before sampling
    n_cells: int  # cells the store would hold
    splits: dict[str, SplitPlanned]
    max_tokens: int  # an upper bound on the tokens of all cells
    tokens_from: str  # what bounds it
    components: dict[str, Any] | None = None  # linked groups over several split columns

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source.to_json(),
            "filter": self.compiled.resolved.to_json(),
            "value_filter": self.compiled.value_filter(),
            "n_matched": self.n_matched,
            "n_cells": self.n_cells,
            "splits": {
                n: {"cells": s.cells, "groups": s.groups, "shards": s.shards} for n, s in self.splits.items()
            },
            "max_tokens": self.max_tokens,
            "tokens_from": self.tokens_from,
            "components": self.components,
        }


def plan_tokenize(config: TokenizeConfig) -> TokenizePlan:
    """The selection, its splits and shards, and a bound on the tokens, without a build."""
    with _selected(config) as (source, positions, selection):
        plan, layout = _layout(config, source, positions)
        per_split = np.bincount(layout.codes, minlength=len(layout.names))
        splits = {}
        order = {name: i for i, name in enumerate(("train", "val", "test"))}
        for k, name in sorted(enumerate(layout.names), key=lambda kn: order.get(kn[1], len(order))):
            cells = int(per_split[k])
            if cells == 0 and name != "train":
                continue
            shards = None if config.shard_bytes else math.ceil(cells / config.shard_cells)
            # one split column: its values; several: the values of all columns (the linked
            # groups are counted for the whole, in ``components``)
            groups = None if plan is None or len(plan.columns) > 1 else len(plan.groups_in(name))
            splits[name] = SplitPlanned(cells=cells, groups=groups, shards=shards)
        max_tokens, tokens_from = _token_bound(config, source, positions)
        return TokenizePlan(
            source=source.info,
            compiled=selection.compiled,
            n_matched=selection.n_matched,
            n_cells=len(positions),
            splits=splits,
            max_tokens=max_tokens,
            tokens_from=tokens_from,
            components=None if plan is None or plan.components is None else dict(plan.components),
        )


def _token_bound(config: TokenizeConfig, source: Any, positions: np.ndarray) -> tuple[int, str]:
    extra = len(config.context) + (2 if config.scheme == "rank" and config.special_tokens else 0)
    if "nnz" in source.obs_columns and config.source.genes is None:
        nnz = source.obs_values(positions, ["nnz"])["nnz"].to_numpy(dtype=np.int64)
        return int(np.minimum(nnz + extra, config.max_len).sum()), "obs nnz (stored genes per cell)"
    return len(positions) * config.max_len, "max_len"
