"""Which cells each loader consumer reads, in which order: pure numpy, no torch.

One epoch of a split is planned in four steps, each a small function here:

1. **Shard order** (:func:`shard_order`): the split's shards, permuted by ``(seed, epoch)`` when
   shuffling, manifest order otherwise. Their cells, concatenated, form one *virtual sequence*
   of ``N`` cells; a position ``p`` in it is cell ``p mod N``, so ranges past ``N`` wrap around
   (that is how ``even="pad"`` repeats cells from the start, as ``DistributedSampler`` does).
2. **Partition** (:func:`consumer_range`): consumer ``c`` of ``C = world_size × num_workers``
   gets the contiguous range ``[c·N//C, (c+1)·N//C)`` — every cell once per epoch, however
   uneven the shards, which are cut inside where a range ends. With ``even`` every rank gets
   the same number of cells (``N//W`` dropping the tail, or ``⌈N/W⌉`` repeating the head) and
   splits it across its workers the same way, so all ranks make the same number of batches.
3. **Spans** (:func:`spans_of`): a range as row slices of shards, in sequence order; a
   consumer reads only these, one shard at a time.
4. **Emission order** (:func:`emission_order`): a bounded-buffer shuffle of the consumer's
   ``M`` cells, computed on positions up front: cell ``i`` is sent in the order of the key
   ``i + U(0,1)·buffer_size``. Every cell with ``i < k - buffer_size`` has a key below ``k``,
   so when the cell with key ``k`` is sent, all cells further back are already gone and the
   cells still held lie in ``(k - buffer_size, k]``: at most ``buffer_size`` of them, each
   moved at most ``buffer_size`` places. It is a single ``argsort``, needs no per-cell Python,
   and a resumed run simply starts at an offset into the same array.

:func:`resume_point` turns "``D`` batches were delivered by a ``DataLoader`` with ``K``
workers" into how many cells each worker had sent, and which worker sends next: a
``DataLoader`` over an ``IterableDataset`` takes batches from its workers strictly round-robin,
skipping workers that are exhausted, so round ``r`` holds one batch from every worker that has
more than ``r`` batches, in worker order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "Consumer",
    "Even",
    "ResumePoint",
    "Span",
    "consumer_range",
    "emission_order",
    "resume_point",
    "shard_order",
    "spans_of",
    "worker_cells",
]

Even = Literal["drop", "pad"] | None

# stream tags, so the shard order and each consumer's shuffle never share random numbers
_SHARD_STREAM = 0
_SHUFFLE_STREAM = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Consumer:
    """One reader of the epoch: a DataLoader worker of one rank."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in 0..{self.world_size - 1}")
        if self.num_workers < 1 or not 0 <= self.worker < self.num_workers:
            raise ValueError(f"worker {self.worker} is not in 0..{self.num_workers - 1}")

    @property
    def index(self) -> int:
        return self.rank * self.num_workers + self.worker

    @property
    def count(self) -> int:
        return self.world_size * self.num_workers


@dataclass(frozen=True, slots=True)
class Span:
    """Rows ``[start, stop)`` of shard ``shard`` (an index into the split's shard list)."""

    shard: int
    start: int
    stop: int

    @property
    def n_cells(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True, slots=True, kw_only=True)
class ResumePoint:
    """Where each worker of a resumed ``DataLoader`` starts."""

    consumed: tuple[int, ...]  # cells already delivered, per worker
    rotation: int  # the worker that sends the next batch


def shard_order(n_shards: int, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The order in which the split's shards are laid end to end this epoch."""
    if not shuffle:
        return np.arange(n_shards)
    return np.random.default_rng([seed, epoch, _SHARD_STREAM]).permutation(n_shards)


def _split(n: int, part: int, parts: int) -> tuple[int, int]:
    return part * n // parts, (part + 1) * n // parts


def rank_range(n_cells: int, *, rank: int, world_size: int, even: Even) -> tuple[int, int]:
    """The virtual range one rank reads: its share of the epoch's ``n_cells``."""
    if even is None:
        return _split(n_cells, rank, world_size)
    per_rank = n_cells // world_size if even == "drop" else -(-n_cells // world_size)
    return rank * per_rank, (rank + 1) * per_rank


def consumer_range(n_cells: int, consumer: Consumer, *, even: Even = None) -> tuple[int, int]:
    """The consumer's virtual range ``[a, b)``; positions past ``n_cells`` wrap to the start."""
    if even is None:  # all consumers share the sequence directly: sizes differ by at most one
        return _split(n_cells, consumer.index, consumer.count)
    first, last = rank_range(n_cells, rank=consumer.rank, world_size=consumer.world_size, even=even)
    a, b = _split(last - first, consumer.worker, consumer.num_workers)
    return first + a, first + b


def worker_cells(n_cells: int, *, rank: int, world_size: int, num_workers: int, even: Even) -> np.ndarray:
    """Cells per worker of one rank (worker order)."""
    ranges = (
        consumer_range(
            n_cells, Consumer(rank=rank, world_size=world_size, worker=w, num_workers=num_workers), even=even
        )
        for w in range(num_workers)
    )
    sizes = [b - a for a, b in ranges]
    return np.asarray(sizes, dtype=np.int64)


def spans_of(shard_sizes: Sequence[int], order: np.ndarray, start: int, stop: int) -> list[Span]:
    """Virtual range ``[start, stop)`` of the shards laid end to end in ``order``, as shard slices."""
    sizes = np.asarray(shard_sizes, dtype=np.int64)[order]
    n_cells = int(sizes.sum())
    if stop <= start or n_cells == 0:
        return []
    ends = np.cumsum(sizes)
    begins = ends - sizes
    spans: list[Span] = []
    position = start
    while position < stop:  # once, or once per wrap around the sequence (even="pad")
        low = position % n_cells
        high = min(n_cells, low + stop - position)
        first = int(np.searchsorted(ends, low, side="right"))
        last = int(np.searchsorted(begins, high, side="left"))
        for k in range(first, last):  # once per shard touched, not per cell
            a, b = max(low, int(begins[k])), min(high, int(ends[k]))
            if b > a:
                spans.append(Span(int(order[k]), a - int(begins[k]), b - int(begins[k])))
        position += high - low
    return spans


def emission_order(n_cells: int, *, buffer_size: int, seed: int, epoch: int, consumer: int) -> np.ndarray:
    """Positions ``0..n_cells-1`` in the order they are sent (bounded-buffer shuffle; see above)."""
    if buffer_size <= 1:
        return np.arange(n_cells, dtype=np.int64)
    rng = np.random.default_rng([seed, epoch, _SHUFFLE_STREAM, consumer])
    keys = np.arange(n_cells, dtype=np.float64) + rng.random(n_cells) * buffer_size
    return np.argsort(keys, kind="stable").astype(np.int64)


def resume_point(worker_sizes: Sequence[int], *, batch_size: int, delivered: int) -> ResumePoint:
    """Cells each worker had sent after ``delivered`` batches, and the worker that sends next.

    Round ``r`` takes one batch from every worker with more than ``r`` batches, in worker
    order; resuming at ``rotation`` continues that cycle where it stopped.
    """
    sizes = np.asarray(worker_sizes, dtype=np.int64)
    batches = -(-sizes // batch_size)
    total = int(batches.sum())
    if not 0 <= delivered <= total:
        raise ValueError(f"{delivered} batches delivered, but an epoch has only {total}")
    n_workers = len(sizes)
    rounds = int(batches.max(initial=0))
    active = np.arange(rounds)[:, None] < batches[None, :]  # rounds × workers
    sequence = np.broadcast_to(np.arange(n_workers), active.shape)[active][:delivered]
    per_worker = np.bincount(sequence, minlength=n_workers)
    consumed = np.minimum(per_worker * batch_size, sizes)
    rotation = 0 if delivered == 0 else (int(sequence[-1]) + 1) % n_workers
    return ResumePoint(consumed=tuple(int(c) for c in consumed), rotation=rotation)
