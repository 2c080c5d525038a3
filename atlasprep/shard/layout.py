"""Where every cell of a corpus goes, fixed before any token is made: within its split, a seeded
permutation gives it a slot; shards are runs of consecutive slots, ``cells_per_shard`` of them or
as many as fit in ``bytes_per_shard`` (the cells' uncompressed Arrow bytes, so the cut depends on
the data only, never on batching)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from atlasprep.errors import UsageError

__all__ = ["ShardLayout"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardLayout:
    """Where every cell goes: its split and its slot in that split's shuffled order."""

    names: tuple[str, ...]  # the splits that have cells, sorted
    codes: np.ndarray  # per cell (source order): its split, as an index into ``names`` (1 byte)
    slots: np.ndarray  # int64 slot per cell within its split
    n_per_split: Mapping[str, int]
    cells_per_shard: int | None = None
    bytes_per_shard: int | None = None  # instead of cells_per_shard: cut by size

    @classmethod
    def plan(
        cls,
        splits: np.ndarray,
        *,
        cells_per_shard: int | None = None,
        bytes_per_shard: int | None = None,
        seed: int,
        shuffle: bool = True,
    ) -> ShardLayout:
        """The layout of cells given their split names (one per cell)."""
        names, codes = np.unique(np.asarray(splits, dtype=str), return_inverse=True)
        return cls.plan_codes(
            codes,
            [str(n) for n in names],
            cells_per_shard=cells_per_shard,
            bytes_per_shard=bytes_per_shard,
            seed=seed,
            shuffle=shuffle,
        )

    @classmethod
    def plan_codes(
        cls,
        codes: np.ndarray,
        names: Sequence[str],
        *,
        cells_per_shard: int | None = None,
        bytes_per_shard: int | None = None,
        seed: int,
        shuffle: bool = True,
    ) -> ShardLayout:
        """The layout of cells given their splits as indices into ``names`` (in any order; names
        without cells are dropped): a byte a cell, where names would take one string each."""
        if (cells_per_shard is None) == (bytes_per_shard is None):
            raise ValueError("give exactly one of cells_per_shard and bytes_per_shard")
        if (cells_per_shard or bytes_per_shard or 0) < 1:
            raise UsageError("shard size must be at least 1")
        codes = np.asarray(codes)
        counts = np.bincount(codes, minlength=len(names)) if len(codes) else np.zeros(len(names), int)
        present = sorted((str(names[i]), i) for i in range(len(names)) if counts[i])
        if len(present) > 255:
            raise UsageError(f"{len(present)} splits: at most 255 are supported")
        renumber = np.zeros(len(names), dtype=np.uint8)
        for index, (_, old) in enumerate(present):
            renumber[old] = index
        compact = renumber[codes]
        slots = np.empty(len(compact), dtype=np.int64)
        n_per_split: dict[str, int] = {}
        for index, (name, old) in enumerate(present):
            members = np.flatnonzero(compact == index)
            n_per_split[name] = int(counts[old])
            if shuffle:
                # one stream per split, so adding a split never reshuffles another
                slots[members] = np.random.default_rng([seed, index]).permutation(len(members))
            else:
                slots[members] = np.arange(len(members))
        return cls(
            names=tuple(name for name, _ in present),
            codes=compact,
            slots=slots,
            n_per_split=n_per_split,
            cells_per_shard=cells_per_shard,
            bytes_per_shard=bytes_per_shard,
        )

    def boundaries(self, split: str, row_bytes: np.ndarray) -> np.ndarray:
        """First slot of each shard of ``split``, then its cell count; ``row_bytes`` by slot."""
        n = self.n_per_split.get(split, 0)
        if self.cells_per_shard is not None:
            return np.r_[np.arange(0, n, self.cells_per_shard), n].astype(np.int64)
        assert self.bytes_per_shard is not None
        cuts = [0]
        total = 0
        ends = np.cumsum(row_bytes)
        while cuts[-1] < n:  # at least one cell per shard; a shard ends before it would overflow
            start = cuts[-1]
            stop = int(np.searchsorted(ends, total + self.bytes_per_shard, side="right"))
            stop = max(stop, start + 1)
            cuts.append(min(stop, n))
            total = int(ends[cuts[-1] - 1])
        return np.array(cuts, dtype=np.int64)

    def shard_name(self, split: str, shard: int, suffix: str = ".arrow") -> str:
        return f"{split}-{shard:05d}{suffix}"
