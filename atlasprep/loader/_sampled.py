"""An epoch of weighted draws, planned so that it reads like the uniform one (pure numpy).

**Balanced draws.** An epoch is ``n`` independent draws with replacement, cell ``i`` drawn
with probability ``w_i / Σw`` (``w_i``: the inverse frequency of its label). Drawn that way
cell by cell, the epoch would read cells all over the store. Instead the same distribution is
drawn in two steps: how many draws land in each shard (one multinomial over the shards' weight
sums, seeded by ``(seed, epoch)``), then, per shard, which of its rows (a seeded inverse-CDF
draw over the shard's rows, ``(seed, epoch, shard)``), sorted. Laid end to end in the epoch's
shard order, these are a virtual sequence exactly like the uniform one, only with each shard's
length its number of draws and a row repeated as often as it was drawn: the uniform planner
(:mod:`atlasprep.loader._plan`) divides it among ranks and workers, shuffles it in a bounded
buffer and resumes in it unchanged, and each consumer reads each shard's rows in order, at most
once. Every consumer derives the same draws for a shard from the seed alone, so nothing is
shared between processes; the weights are per label (a few bytes a cell for the labels).

**Hard negatives** (:class:`HardNegatives`). Batch ``k`` of an epoch is drawn from
``(seed, epoch, k)``: one anchor value (a cell type, uniformly over those found with at least
two spread values, such as tissues), then its spread values dealt round-robin over the batch's
slots in a seeded order, and a cell uniformly among those with that (anchor, spread) pair; so a
batch holds ``min(batch_size, spread values)`` spread values of one anchor.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from atlasprep.loader._window import Piece

__all__ = ["BalancedDraws", "DrawnPiece", "HardNegatives", "gather_piece"]

_COUNT_STREAM = 2  # after _plan's shard (0) and shuffle (1) streams
_ROW_STREAM = 3
_BATCH_STREAM = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class BalancedDraws:
    """Per-label weights over a split's cells, drawn shard by shard."""

    codes: np.ndarray  # label per cell, manifest order
    weights: np.ndarray  # per label
    starts: np.ndarray  # first cell of each shard, then the total
    mass: np.ndarray  # per shard: the sum of its cells' weights

    @classmethod
    def inverse_frequency(cls, codes: np.ndarray, n_labels: int, shard_sizes: Sequence[int]) -> BalancedDraws:
        counts = np.bincount(codes, minlength=n_labels).astype(np.float64)
        weights = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
        starts = np.concatenate([[0], np.cumsum(shard_sizes)]).astype(np.int64)
        # each shard's cells by label (a loop over shards, not cells; nothing held per cell)
        by_label = np.stack(
            [np.bincount(codes[a:b], minlength=n_labels) for a, b in itertools.pairwise(starts)]
        )
        return cls(codes=codes, weights=weights, starts=starts, mass=by_label @ weights)

    def shard_counts(self, n_samples: int, *, seed: int, epoch: int) -> np.ndarray:
        """Draws that land in each shard this epoch."""
        rng = np.random.default_rng([seed, epoch, _COUNT_STREAM])
        return rng.multinomial(n_samples, self.mass / self.mass.sum()).astype(np.int64)

    def rows(self, shard: int, n: int, *, seed: int, epoch: int) -> np.ndarray:
        """The shard's ``n`` drawn rows, ascending (repeats as drawn)."""
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        cumulative = np.cumsum(self.weights[self.codes[self.starts[shard] : self.starts[shard + 1]]])
        rng = np.random.default_rng([seed, epoch, _ROW_STREAM, shard])
        drawn = np.searchsorted(cumulative, rng.random(n) * cumulative[-1], side="right")
        return np.sort(np.minimum(drawn, len(cumulative) - 1))


@dataclass(frozen=True, slots=True, kw_only=True)
class HardNegatives:
    """Cells grouped by (anchor, spread) pair, for batches of one anchor from several spreads."""

    order: np.ndarray  # cells (manifest order) sorted by pair; int32 where it fits
    pair_starts: np.ndarray  # first position in ``order`` of each pair, then the total
    anchor_pairs: np.ndarray  # first pair of each anchor, then the number of pairs
    anchors: np.ndarray  # the anchors batches are drawn from (with two spreads, where any has)

    @classmethod
    def index(cls, anchor: np.ndarray, spread: np.ndarray, n_spread: int) -> HardNegatives:
        pair = anchor.astype(np.int64) * n_spread + spread
        order = np.argsort(pair, kind="stable")
        pairs, starts = np.unique(pair[order], return_index=True)
        pair_anchor = pairs // n_spread
        anchor_ids, anchor_first = np.unique(pair_anchor, return_index=True)
        n_pairs = np.diff(np.r_[anchor_first, len(pairs)])
        spread_out = anchor_ids[n_pairs >= 2]
        index_dtype = np.int32 if len(anchor) < 2**31 else np.int64
        first_pair = np.full(int(pair_anchor.max(initial=0)) + 2, len(pairs), dtype=np.int64)
        first_pair[anchor_ids] = anchor_first
        first_pair = np.minimum.accumulate(first_pair[::-1])[::-1]  # absent anchors: empty
        return cls(
            order=order.astype(index_dtype),
            pair_starts=np.r_[starts, len(order)].astype(np.int64),
            anchor_pairs=first_pair,
            anchors=spread_out if len(spread_out) else anchor_ids,
        )

    def batch(self, k: int, batch_size: int, *, seed: int, epoch: int) -> np.ndarray:
        """Batch ``k``'s cells (manifest order indices)."""
        rng = np.random.default_rng([seed, epoch, _BATCH_STREAM, k])
        anchor = int(self.anchors[rng.integers(len(self.anchors))])
        pairs = np.arange(self.anchor_pairs[anchor], self.anchor_pairs[anchor + 1])
        dealt = rng.permutation(pairs)[np.arange(batch_size) % len(pairs)]
        low, size = self.pair_starts[dealt], np.diff(self.pair_starts)[dealt]
        picks = low + (rng.random(batch_size) * size).astype(np.int64)
        return self.order[picks].astype(np.int64)


@dataclass(frozen=True, slots=True, kw_only=True)
class DrawnPiece(Piece):
    """Drawn rows of a piece (repeats allowed), without copying their tokens: position ``p`` of
    this piece is row ``rows[p]`` of the cells it views (``offsets``, ``cell_ids``, ``meta``)."""

    rows: np.ndarray


def gather_piece(piece: Piece, local: np.ndarray, *, first: int) -> DrawnPiece:
    """Rows ``local`` of ``piece`` (repeats allowed), as a piece of their own starting at ``first``."""
    fields = {name: getattr(piece, name) for name in ("ids", "offsets", "values", "cell_ids", "meta")}
    return DrawnPiece(first=first, n=len(local), rows=np.asarray(local, dtype=np.int64), **fields)
