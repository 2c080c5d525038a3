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
* **Gather** (:mod:`atlasprep.loader._gather`). A batch is a set of positions; each is found
  in its piece by ``searchsorted`` and padded straight from the flat buffers.
* **Sampling** (:mod:`atlasprep.loader.sampling`, :mod:`atlasprep.loader._sampled`). Balanced
  draws are a virtual sequence of drawn rows, planned, read and resumed as above; hard-negative
  batches are drawn whole, ``buffer_size`` cells at a time, read shard by shard in row order.

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
from torch.utils.data import IterableDataset

from atlasprep._remote import store_root
from atlasprep.errors import InputFormatError, UsageError
from atlasprep.loader._consumers import EpochConsumers
from atlasprep.loader._gather import Found, by_shard, collate_found, per_batch, row_blocks, single_cells
from atlasprep.loader._options import SAMPLED, _check_options, check_fingerprint
from atlasprep.loader._plan import (
    Consumer,
    Even,
    Span,
    consumer_range,
    emission_order,
    shard_order,
    spans_of,
    worker_cells,
)
from atlasprep.loader._sampled import gather_piece
from atlasprep.loader._window import Piece, Window
from atlasprep.loader.collate import ShardCollator, encode_labels, label_lookup
from atlasprep.loader.sampling import plan_sampling
from atlasprep.shard import load_vocab, open_store
from atlasprep.shard.format import ShardReader
from atlasprep.shard.store import Verify, open_shard

__all__ = ["ShardDataset"]

_PIECE_CELLS = 1024  # cells per read; with the shuffle buffer this bounds memory
_CELL_BLOCK = 256  # cells gathered at once when yielding single cells
_STATE_FORMAT = "atlasprep-loader-state"


class ShardDataset(IterableDataset[dict[str, Any]], EpochConsumers):
    """One split of a token store, streamed: every cell exactly once per epoch over all consumers.

    ``batch_size=None`` yields one dict per cell (``input_ids``, ``values`` when the store has
    them, ``cell_id`` and each of ``columns`` as strings); ``batch_size=B`` yields collated
    batches of B cells (see :mod:`atlasprep.loader.collate`) — use it with
    ``DataLoader(ds, batch_size=None, num_workers=k)``, or :class:`atlasprep.loader.ShardLoader`.
    ``even="drop"|"pad"`` gives every rank the same number of cells (for DDP). ``rank`` and
    ``world_size`` default to ``torch.distributed``'s when it is initialized. ``sampling=
    "balanced:COLUMN[@LEVEL]"`` draws ``num_samples`` cells (default: the split's) with replacement,
    each label equally often; ``batches="hard_negatives:ANCHOR/SPREAD"`` makes each batch one
    anchor value from several spread values (:mod:`atlasprep.loader.sampling`).

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
        sampling: str = "uniform",
        batches: str | None = None,
        num_samples: int | None = None,
    ) -> None:
        super().__init__()
        self.store = store_root(path)  # a directory, or a URL (s3://…: read with range requests)
        if verify not in ("size", "sha256"):
            raise UsageError(f"verify must be 'size' or 'sha256', not {verify!r}")
        # a store may come from anyone: its manifest, shards and vocabulary are checked first
        manifest = open_store(self.store, verify=verify)
        shards = [s for s in manifest["shards"] if s["split"] == split]
        if not shards:
            known = sorted({s["split"] for s in manifest["shards"]})
            raise UsageError(f"{self.store} has no split {split!r} (it has {', '.join(known)})")
        _check_options(seed, buffer_size, batch_size, pad_to)
        self._init_consumers(rank, world_size, even)
        self.split = split
        self.shuffle = shuffle
        self.seed = seed
        self.buffer_size = buffer_size
        self.batch_size = batch_size
        self.pad_to = pad_to
        self.columns = tuple(columns)
        self.shard_paths = [str(s["path"]) for s in shards]
        self.shard_sizes = [int(s["n_cells"]) for s in shards]
        self.tokenizer: dict[str, Any] = dict(manifest.get("tokenizer", {}))
        self.vocab_path = self.store / manifest["vocab"]["path"]
        self.pad_id = int(load_vocab(self.store, manifest)["<pad>"])
        first = self._open(self.shard_paths[0]).columns()
        self.has_values = "values" in first
        absent = [c for c in self.columns if c not in first]
        if absent:
            raise InputFormatError(f"{self.store}: the shards hold no column(s) {absent} (they hold {first})")
        self.label_maps: dict[str, list[str]] = self._label_maps()
        self._lookup = label_lookup(self.label_maps)
        # the labels sampling weighs, read once (a few bytes a cell); uniform reads nothing
        self.sampler = plan_sampling(
            sampling, batches, read=self._column, stored=first, shard_sizes=self.shard_sizes
        )
        if num_samples is not None and (self.sampler.uniform or num_samples < 1):
            raise UsageError(f"num_samples = {num_samples}: a positive count, for sampling with replacement")
        self.num_samples = num_samples or self.num_cells

    # -- sizes ---------------------------------------------------------------------------------

    @property
    def num_cells(self) -> int:
        """Cells in the split (what one epoch yields over all ranks and workers, ``even=None``)."""
        return sum(self.shard_sizes)

    @property
    def epoch_cells(self) -> int:
        """Cells one epoch yields over all consumers (``even=None``): the split's, or with sampling
        ``num_samples`` (hard-negative batches: whole batches of them)."""
        return self.num_cells if self.sampler.uniform else self.num_samples

    def worker_num_cells(self, num_workers: int = 1) -> list[int]:
        """Cells each DataLoader worker of this rank yields per epoch (``num_workers=0`` counts as 1)."""
        group = self._group_size()
        sizes = worker_cells(
            self.epoch_cells // group,
            rank=self.rank,
            world_size=self.world_size,
            num_workers=max(1, num_workers),
            even=self.even,
        )
        return [int(n) * group for n in sizes]

    def _group_size(self) -> int:
        """Cells per unit of the epoch: 1, or a hard-negative batch (planned whole)."""
        if self.sampler.hard is None:
            return 1
        if self.batch_size is None:
            raise UsageError(
                f"batches = '{self.sampler.batches}' makes whole batches: give batch_size, or use ShardLoader"
            )
        return self.batch_size

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
            **self.sampler.fingerprint(self.num_samples),
        }

    def _check_fingerprint(self, state: dict[str, Any]) -> None:
        check_fingerprint(self._fingerprint(), state, also=SAMPLED)  # a sampled state on a uniform loader

    def batched(self, batch_size: int, *, pad_to: int | None = None) -> ShardDataset:
        """A copy that yields batches of ``batch_size`` (same store, plan, epoch and label maps)."""
        _check_options(self.seed, self.buffer_size, batch_size, pad_to)
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
        consumer, skip = self._this_consumer()
        return self._iterate(consumer, skip)

    def _iterate(self, consumer: Consumer, skip: int) -> Iterator[dict[str, Any]]:
        if self.sampler.hard is not None:
            yield from self._hard_batches(consumer, skip)
            return
        order_of_shards = shard_order(
            len(self.shard_sizes), seed=self.seed, epoch=self.epoch, shuffle=self.shuffle
        )
        draws = self.sampler.draws
        counts = (
            None if draws is None else draws.shard_counts(self.num_samples, seed=self.seed, epoch=self.epoch)
        )
        sizes = self.shard_sizes if counts is None else counts.tolist()
        start, stop = consumer_range(sum(sizes), consumer, even=self.even)
        spans = spans_of(sizes, order_of_shards, start, stop)
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
        window = Window(self._pieces(spans, begin=begin, counts=counts), begin=begin)
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

    def _pieces(self, spans: list[Span], *, begin: int, counts: np.ndarray | None = None) -> Iterator[Piece]:
        """The consumer's cells from ``begin`` on, piece by piece, one shard open at a time;
        with ``counts`` (draws per shard) a span's positions are the shard's drawn rows."""
        position = 0
        for span in spans:
            if position + span.n_cells <= begin:
                position += span.n_cells
                continue
            shard = self._open(self.shard_paths[span.shard])
            offset = max(0, begin - position)
            if counts is not None:
                yield from self._drawn(shard, span, int(counts[span.shard]), offset, first=position + offset)
            else:
                for a in range(span.start + offset, span.stop, _PIECE_CELLS):
                    b = min(span.stop, a + _PIECE_CELLS)
                    yield self._read(shard, a, b, first=position + a - span.start)
            position += span.n_cells
            del shard

    def _drawn(
        self, shard: ShardReader, span: Span, n_drawn: int, offset: int, *, first: int
    ) -> Iterator[Piece]:
        """A span of the shard's drawn rows (ascending, repeats as drawn), a block of rows at a time:
        each row of the shard is read at most once."""
        assert self.sampler.draws is not None
        rows = self.sampler.draws.rows(span.shard, n_drawn, seed=self.seed, epoch=self.epoch)
        for at, part in row_blocks(rows[span.start + offset : span.stop], _PIECE_CELLS):
            piece = self._read(shard, int(part[0]), int(part[-1]) + 1, first=0)
            yield gather_piece(piece, part - part[0], first=first + at)

    def _hard_batches(self, consumer: Consumer, skip: int) -> Iterator[dict[str, Any]]:
        """Whole hard-negative batches: this consumer's range of the epoch's batches, drawn a
        window of ``buffer_size`` cells at a time, whose cells are read shard by shard in row
        order (each block of rows once per window, not once per batch)."""
        hard, size = self.sampler.hard, self._group_size()
        assert hard is not None
        n_batches = self.num_samples // size
        first, last = consumer_range(n_batches, consumer, even=self.even)
        per_window = max(1, self.buffer_size // size)
        starts = np.cumsum([0, *self.shard_sizes])
        for window in range(first + skip // size, last, per_window):
            ks = range(window, min(last, window + per_window))
            cells = np.concatenate(
                [hard.batch(k % n_batches, size, seed=self.seed, epoch=self.epoch) for k in ks]
            )
            for found in per_batch(list(self._cells_at(cells, starts)), size, len(ks)):
                self._consumed += size
                yield self._batch(found, size)

    def _cells_at(self, cells: np.ndarray, starts: np.ndarray) -> Iterator[tuple[Piece, np.ndarray]]:
        """Cells (split indices), read shard by shard in row order: (a piece holding some, their
        places in ``cells``)."""
        for shard, where, local in by_shard(cells, starts):  # once per shard touched, not per cell
            reader = self._open(self.shard_paths[shard])
            order = np.argsort(local, kind="stable")
            for at, part in row_blocks(local[order], _PIECE_CELLS):
                piece = self._read(reader, int(part[0]), int(part[-1]) + 1, first=0)
                yield gather_piece(piece, part - part[0], first=0), where[order[at : at + len(part)]]

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

    def _batch(self, found: list[Found], n_rows: int) -> dict[str, Any]:
        return collate_found(found, n_rows, columns=self.columns, pad_id=self.pad_id, pad_to=self.pad_to)

    def _cells(self, found: list[Found], n: int) -> Iterator[dict[str, Any]]:
        """Single cells, in emission order (the slow path: one dict per cell by nature)."""
        for cell in single_cells(found, n, self.columns):
            self._consumed += 1
            yield cell

    def _open(self, relative: str) -> ShardReader:
        return open_shard(self.store, relative)

    def _label_maps(self) -> dict[str, list[str]]:
        """Sorted distinct values of each requested column over the whole split."""
        return {
            c: sorted({str(v) for values in self._column(c) for v in np.unique(values)}) for c in self.columns
        }

    def _column(self, column: str) -> list[np.ndarray]:
        """A stored column of the split, shard by shard (manifest order), as strings."""
        return [self._open(relative).strings(column) for relative in self.shard_paths]
