"""`ShardDataset`: a token store's split as a PyTorch ``IterableDataset``, every cell once per epoch.

Planning is in :mod:`atlasprep.loader._plan` (pure numpy): each consumer (a DataLoader worker
of a rank) owns one contiguous range of the epoch's shard sequence and a shuffled order of its
positions, fixed by ``(seed, epoch, consumer)``. This module only reads what the plan says:

* **Pieces.** The consumer's shard spans are read in pieces of at most ``_PIECE_CELLS`` cells,
  one shard open at a time, through its format's reader (:mod:`atlasprep.shard.format`): an
  Arrow shard is memory-mapped and a piece is a zero-copy slice (the flat token buffer and its
  offsets are numpy views of the file); a Zarr shard reads the piece's slice of ``offsets`` and
  then the flat arrays between the first and last offset.
* **Window** (:mod:`atlasprep.loader._window`). Pieces are held while some cell in them is
  still to be sent. The emission order moves each cell at most ``buffer_size`` places, so a
  piece is dropped as soon as the smallest position still to come is past its end (a suffix
  minimum of the order, computed once); memory is ``buffer_size`` cells plus one piece, whatever
  the shard size.
* **Gather.** A batch is a set of positions; ``searchsorted`` over the pieces' first positions
  says which piece holds each, and :func:`atlasprep.loader.collate.collate_parts` pads them
  straight from the pieces' flat buffers — no per-cell Python on the batched path.

Resuming is an offset into the same emission order: in-process the dataset counts the cells it
has yielded (:meth:`ShardDataset.state_dict`); behind DataLoader workers
:class:`atlasprep.loader.ShardLoader` counts batches and turns them into a per-worker offset.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from atlasprep.errors import InputFormatError, UsageError
from atlasprep.loader._plan import (
    Consumer,
    Even,
    ResumePoint,
    Span,
    consumer_range,
    emission_order,
    shard_order,
    spans_of,
    worker_cells,
)
from atlasprep.loader._window import Piece, Window
from atlasprep.loader.collate import RaggedRows, ShardCollator, collate_parts, encode_labels, label_lookup
from atlasprep.shard import load_vocab, open_store
from atlasprep.shard.format import ShardReader, format_for
from atlasprep.shard.manifest import shard_path
from atlasprep.shard.store import Verify

__all__ = ["ShardDataset"]

_PIECE_CELLS = 1024  # cells per read; with the shuffle buffer this bounds memory
_CELL_BLOCK = 256  # cells gathered at once when yielding single cells
_STATE_FORMAT = "atlasprep-loader-state"


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ShardDataset(IterableDataset[dict[str, Any]]):
    """One split of a token store, streamed: every cell exactly once per epoch over all consumers.

    ``batch_size=None`` yields one dict per cell (``input_ids``, ``values`` when the store has
    them, ``cell_id`` and each of ``columns`` as strings); ``batch_size=B`` yields collated
    batches of B cells (see :mod:`atlasprep.loader.collate`) — use it with
    ``DataLoader(ds, batch_size=None, num_workers=k)``, or :class:`atlasprep.loader.ShardLoader`.
    ``even="drop"|"pad"`` gives every rank the same number of cells (for DDP). ``rank`` and
    ``world_size`` default to ``torch.distributed``'s when it is initialized.

    The store is checked before anything is read (it may come from anyone): the manifest's
    structure and paths, each shard present at the size and cell count it says (``verify="sha256"``:
    its bytes too), and ``vocab.json`` as hashed, naming ``<pad>``.
    """

    def __init__(
        self,
        path: str | Path,
        split: str = "train",
        *,
        shuffle: bool = True,
        seed: int = 0,
        buffer_size: int = 8192,
        batch_size: int | None = None,
        columns: Sequence[str] = (),
        pad_to: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        even: Even = None,
        verify: Verify = "size",
    ) -> None:
        super().__init__()
        self.store = Path(path)
        if verify not in ("size", "sha256"):
            raise UsageError(f"verify must be 'size' or 'sha256', not {verify!r}")
        # a store may come from anyone: its manifest, shards and vocabulary are checked first
        manifest = open_store(self.store, verify=verify)
        shards = [s for s in manifest["shards"] if s["split"] == split]
        if not shards:
            known = sorted({s["split"] for s in manifest["shards"]})
            raise UsageError(f"{self.store} has no split {split!r} (it has {', '.join(known)})")
        _check_options(seed, buffer_size, batch_size, pad_to, even, rank, world_size)
        self.split = split
        self.shuffle = shuffle
        self.seed = seed
        self.buffer_size = buffer_size
        self.batch_size = batch_size
        self.pad_to = pad_to
        self.even: Even = even
        self.columns = tuple(columns)
        self.shard_paths = [str(s["path"]) for s in shards]
        self.shard_sizes = [int(s["n_cells"]) for s in shards]
        self.tokenizer: dict[str, Any] = dict(manifest.get("tokenizer", {}))
        self.vocab_path = self.store / manifest["vocab"]["path"]
        self.pad_id = int(load_vocab(self.store, manifest)["<pad>"])
        self._explicit = (rank, world_size) if rank is not None and world_size is not None else None
        self.rank, self.world_size = self._explicit or _distributed()
        first = self._open(self.shard_paths[0]).columns()
        self.has_values = "values" in first
        absent = [c for c in self.columns if c not in first]
        if absent:
            raise InputFormatError(f"{self.store}: the shards hold no column(s) {absent} (they hold {first})")
        self.label_maps: dict[str, list[str]] = self._label_maps()
        self._lookup = label_lookup(self.label_maps)
        self.epoch = 0
        self._consumed = 0  # cells yielded in this process this epoch (num_workers=0)
        self._resume: ResumePoint | None = None

    # -- sizes ---------------------------------------------------------------------------------

    @property
    def num_cells(self) -> int:
        """Cells in the split (what one epoch yields over all ranks and workers, ``even=None``)."""
        return sum(self.shard_sizes)

    def worker_num_cells(self, num_workers: int = 1) -> list[int]:
        """Cells each DataLoader worker of this rank yields per epoch (``num_workers=0`` counts as 1)."""
        return [
            int(n)
            for n in worker_cells(
                self.num_cells,
                rank=self.rank,
                world_size=self.world_size,
                num_workers=max(1, num_workers),
                even=self.even,
            )
        ]

    def consumer_num_cells(self, worker_id: int = 0, num_workers: int = 1) -> int:
        """Cells one consumer (this rank's worker ``worker_id`` of ``num_workers``) yields per epoch."""
        return self.worker_num_cells(num_workers)[worker_id]

    def num_batches(self, batch_size: int, num_workers: int = 1) -> int:
        """Batches this rank yields per epoch (each worker's last batch may be short)."""
        return sum(-(-n // batch_size) for n in self.worker_num_cells(num_workers))

    # -- epochs and resuming -------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._consumed = 0
        self._resume = None

    def state_dict(self) -> dict[str, Any]:
        """Where in-process iteration (``num_workers=0``) stands; for workers use ``ShardLoader``."""
        pending = self._resume  # loaded but not iterated yet
        consumed = (
            pending.consumed[0] if pending is not None and len(pending.consumed) == 1 else self._consumed
        )
        return {**self._fingerprint(), "epoch": self.epoch, "consumed": consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The next iteration yields exactly the cells the saved one had still to yield, in order."""
        self._check_fingerprint(state)
        self.set_epoch(int(state["epoch"]))
        self._resume_at(ResumePoint(consumed=(int(state["consumed"]),), rotation=0))

    def _resume_at(self, point: ResumePoint | None) -> None:
        self._resume = point

    def _fingerprint(self) -> dict[str, Any]:
        return {
            "format": _STATE_FORMAT,
            "store": str(self.store),
            "split": self.split,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "buffer_size": self.buffer_size,
            "world_size": self.world_size,
            "rank": self.rank,
            "even": self.even,
            "num_cells": self.num_cells,
        }

    def _check_fingerprint(self, state: dict[str, Any]) -> None:
        mine = self._fingerprint()
        differs = [k for k, v in mine.items() if k != "store" and state.get(k) != v]
        if differs:
            detail = ", ".join(f"{k}: saved {state.get(k)!r}, now {mine[k]!r}" for k in differs)
            raise UsageError(f"this state was saved by a differently configured loader ({detail})")

    def batched(self, batch_size: int, *, pad_to: int | None = None) -> ShardDataset:
        """A copy that yields batches of ``batch_size`` (same store, plan, epoch and label maps)."""
        _check_options(self.seed, self.buffer_size, batch_size, pad_to, self.even, None, None)
        twin = copy.copy(self)
        twin.batch_size = batch_size
        twin.pad_to = pad_to if pad_to is not None else self.pad_to
        return twin

    def collator(self) -> ShardCollator:
        """A collator for this dataset's single cells, with its pad id, ``pad_to`` and label maps."""
        return ShardCollator(
            pad_id=self.pad_id, pad_to=self.pad_to, columns=self.columns, label_maps=self.label_maps
        )

    # -- iteration -----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        if info is None and self._explicit is None:  # torch.distributed may have started since
            self.rank, self.world_size = _distributed()
        num_workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        resume, self._resume = self._resume, None
        skip = 0
        if resume is not None:
            if len(resume.consumed) != num_workers:
                raise UsageError(
                    f"the state was saved with {len(resume.consumed)} worker(s), this run has {num_workers}"
                )
            worker = (worker + resume.rotation) % num_workers
            skip = resume.consumed[worker]
        consumer = Consumer(
            rank=self.rank, world_size=self.world_size, worker=worker, num_workers=num_workers
        )
        self._consumed = skip
        return self._iterate(consumer, skip)

    def _iterate(self, consumer: Consumer, skip: int) -> Iterator[dict[str, Any]]:
        order_of_shards = shard_order(
            len(self.shard_sizes), seed=self.seed, epoch=self.epoch, shuffle=self.shuffle
        )
        start, stop = consumer_range(self.num_cells, consumer, even=self.even)
        spans = spans_of(self.shard_sizes, order_of_shards, start, stop)
        order = emission_order(
            stop - start,
            buffer_size=self.buffer_size if self.shuffle else 0,
            seed=self.seed,
            epoch=self.epoch,
            consumer=consumer.index,
        )[skip:]
        if len(order) == 0:
            return
        still_needed = np.minimum.accumulate(order[::-1])[::-1]  # smallest position yet to be sent
        begin = int(still_needed[0])
        window = Window(self._pieces(spans, begin=begin), begin=begin)
        step = self.batch_size or _CELL_BLOCK
        for first in range(0, len(order), step):
            positions = order[first : first + step]
            window.ensure(int(positions.max()))
            found = window.locate(positions)
            end = first + len(positions)
            if self.batch_size is None:
                yield from self._cells(found, len(positions))
            else:
                self._consumed += len(positions)
                yield self._batch(found, len(positions))
            window.release(int(still_needed[end]) if end < len(order) else stop - start)

    def _pieces(self, spans: list[Span], *, begin: int) -> Iterator[Piece]:
        """The consumer's cells from ``begin`` on, piece by piece, one shard open at a time."""
        position = 0
        for span in spans:
            if position + span.n_cells <= begin:
                position += span.n_cells
                continue
            shard = self._open(self.shard_paths[span.shard])
            offset = max(0, begin - position)
            for a in range(span.start + offset, span.stop, _PIECE_CELLS):
                b = min(span.stop, a + _PIECE_CELLS)
                yield self._read(shard, a, b, first=position + a - span.start)
            position += span.n_cells
            del shard

    def _read(self, shard: ShardReader, a: int, b: int, *, first: int) -> Piece:
        ids, offsets = shard.ragged("input_ids", a, b)
        values = shard.ragged("values", a, b)[0] if self.has_values else None
        meta = {c: shard.strings(c, a, b) for c in self.columns}
        if self.batch_size is not None:  # labels once per piece, not per batch
            meta = {c: encode_labels(v, self._lookup[c], c) for c, v in meta.items()}
        return Piece(
            first=first,
            n=b - a,
            ids=ids,
            offsets=offsets,
            values=values,
            cell_ids=shard.strings("cell_id", a, b),
            meta=meta,
        )

    def _batch(self, found: list[tuple[Piece, np.ndarray, np.ndarray]], n_rows: int) -> dict[str, Any]:
        parts = []
        labels = {c: np.zeros(n_rows, dtype=np.int64) for c in self.columns}
        cell_ids = np.empty(n_rows, dtype=object)
        for piece, rows, local in found:
            starts = piece.offsets[local]
            parts.append(
                RaggedRows(
                    rows=rows,
                    starts=starts,
                    lengths=piece.offsets[local + 1] - starts,
                    ids=piece.ids,
                    values=piece.values,
                )
            )
            for column in self.columns:
                labels[column][rows] = piece.meta[column][local]
            cell_ids[rows] = piece.cell_ids[local]
        return collate_parts(
            parts,
            n_rows=n_rows,
            pad_id=self.pad_id,
            pad_to=self.pad_to,
            labels=labels,
            cell_ids=cell_ids.tolist(),
        )

    def _cells(self, found: list[tuple[Piece, np.ndarray, np.ndarray]], n: int) -> Iterator[dict[str, Any]]:
        """Single cells, in emission order (the slow path: one dict per cell by nature)."""
        piece_of = np.empty(n, dtype=np.int64)
        row_of = np.empty(n, dtype=np.int64)
        for k, (_, rows, local) in enumerate(found):
            piece_of[rows] = k
            row_of[rows] = local
        for k, row in zip(piece_of.tolist(), row_of.tolist(), strict=True):
            piece = found[k][0]
            a, b = int(piece.offsets[row]), int(piece.offsets[row + 1])
            cell: dict[str, Any] = {
                "input_ids": np.array(piece.ids[a:b]),
                "cell_id": str(piece.cell_ids[row]),
            }
            if piece.values is not None:
                cell["values"] = np.array(piece.values[a:b])
            for column in self.columns:
                cell[column] = str(piece.meta[column][row])
            self._consumed += 1
            yield cell

    def _open(self, relative: str) -> ShardReader:
        path = shard_path(self.store, relative)
        return format_for(path).open(path)

    def _label_maps(self) -> dict[str, list[str]]:
        """Sorted distinct values of each requested column over the whole split (one scan)."""
        seen: dict[str, set[str]] = {c: set() for c in self.columns}
        if self.columns:
            for relative in self.shard_paths:
                shard = self._open(relative)
                for column in self.columns:
                    seen[column].update(str(v) for v in np.unique(shard.strings(column)))
        return {c: sorted(v) for c, v in seen.items()}


def _check_options(
    seed: int,
    buffer_size: int,
    batch_size: int | None,
    pad_to: int | None,
    even: Even,
    rank: int | None,
    world_size: int | None,
) -> None:
    if seed < 0:
        raise UsageError(f"seed must be non-negative, not {seed}")
    if buffer_size < 0:
        raise UsageError(f"buffer_size must be non-negative, not {buffer_size}")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"batch_size must be positive, not {batch_size}")
    if pad_to is not None and pad_to < 1:
        raise UsageError(f"pad_to must be positive, not {pad_to}")
    if even not in (None, "drop", "pad"):
        raise UsageError(f"even must be None, 'drop' or 'pad', not {even!r}")
    if (rank is None) != (world_size is None):
        raise UsageError("give both rank and world_size, or neither")
    if rank is not None and world_size is not None and not 0 <= rank < world_size:
        raise UsageError(f"rank {rank} is not in 0..{world_size - 1}")
