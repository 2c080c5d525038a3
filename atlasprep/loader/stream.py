"""`StreamDataset`: cells straight from the atlas into PyTorch, tokenized on the fly, no store.

A :class:`~atlasprep.sources.SourceSpec` (the Census, a local SOMA store, the demo atlas, AnnData
files) names the cells; :func:`~atlasprep.sources.select` picks them as ``slice`` and
``tokenize`` do, and a split (``split_by``) takes the groups a store build with the same seed
would (the build's own layout function decides). An epoch is planned as the SOMA loaders
(TileDB-SOMA-ML's ``ExperimentDataset``) plan it:

* the split's cells, in source order, are cut into *chunks* of ``chunk_size`` consecutive cells,
  and the chunks are permuted by ``(seed, epoch)``: the epoch's *virtual sequence*;
* consumer ``c`` (a DataLoader worker of a rank) reads its contiguous range of that sequence
  (:func:`atlasprep.loader._plan.consumer_range`: every cell exactly once per epoch over all
  ranks and workers; ``even`` evens the ranks as ``ShardDataset`` does);
* it takes the range ``io_batch_size`` cells at a time (a *shuffle buffer*: a few chunks, read in
  source order, ``READ_CELLS`` cells a source read, so contiguous runs that SOMA reads fast),
  tokenizes them with the :class:`~atlasprep.tokenize.Tokenizer`, and sends them in a
  permutation of the buffer fixed by ``(seed, epoch, consumer, buffer)``.

``chunk_size`` trades shuffling for reading. TileDB decompresses whole data tiles (65,536 values
in the Census layout: about 400 demo cells, 800 Census cells of a 2,048-gene column tile), so a
smaller chunk pays for rows it does not use: 8,192 cells of the 100,000-cell demo census read in
0.72 s as chunks of 64 (tiledbsoma-ml's default), 0.5 s as chunks of 256, 0.31 s as chunks of
1,024 and 0.21 s as chunks of 2,048 or one contiguous run. A data tile never spans two X tile
rows (2,048 soma_joinids in the Census layout), so where the selection's cells run on from a
tile row's first one (a whole store, as in the benchmark) a chunk of 2,048 is one tile row and
reads no tile for a part of its cells; elsewhere each chunk boundary costs up to a data tile per
column tile, and 2,048-cell chunks have half the boundaries of 1,024-cell ones. The defaults,
chunks of 2,048 in buffers of 65,536 (tiledbsoma-ml's ``io_batch_size``), mix 32 chunks a
buffer, as chunks of 1,024 in buffers of 32,768 did until this release. In
``benchmarks/bench_stream.py --epoch`` (100,000 cells, no workers) they ran end to end at
2.6-3.1x tiledbsoma-ml over eleven rounds (median 3.0x), where the old defaults ran at 2.6-2.9x
in seven of them (the first batch comes 0.5-0.9 s later, the rest twice as fast), for 1.72-1.75
GB against 1.39-1.55 GB peak RSS.

Memory is the tokens of two buffers (the next one loads on a thread while this one is sent),
the counts of a few source reads (``READ_CELLS`` cells each; TileDB's read buffers are sized to
one) and one batch, whatever the selection's size; the plan itself is 8 bytes a cell. TileDB
keeps the memory its reads free for the next read (no ``malloc_trim`` a query: a third of the
page faults, for about 0.2 GB more at the peak): a 100,000-cell stream peaks at 1.7 GB
(``benchmarks/bench_stream.py``).
Each process opens its own source when it starts iterating (a TileDB handle does not survive a
fork) and closes it, with its TileDB threads, when the epoch ends. Batches are the dicts
``ShardDataset`` yields; :class:`atlasprep.loader.ShardLoader` runs a StreamDataset through
DataLoader workers, resumably, as it runs a store.
"""

from __future__ import annotations

import copy
import logging
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset

from atlasprep._checks import check_int
from atlasprep.errors import UsageError
from atlasprep.loader._consumers import EpochConsumers
from atlasprep.loader._gather import Found, collate_found, single_cells
from atlasprep.loader._plan import Consumer, Even, consumer_range
from atlasprep.loader._stream_read import Read, read_cells
from atlasprep.loader._stream_sampling import drawn_sequence, stream_sampling
from atlasprep.loader.collate import ShardCollator, label_lookup
from atlasprep.sources import SourceSpec, only_genes, open_source, select
from atlasprep.tokenize.coverage import VocabCoverage
from atlasprep.tokenize.fit import var_gene_ids
from atlasprep.tokenize.inference import with_totals
from atlasprep.tokenize.tokenizer import Tokenizer

__all__ = ["StreamDataset"]

log = logging.getLogger("atlasprep.loader")

_STATE_FORMAT = "atlasprep-stream-state"
# shuffle buffers loading while one is sent (each holds io_batch_size cells' tokens)
READS_AHEAD = 1
# cells in one source read (its counts in memory); a shuffle buffer is read in such reads
READ_CELLS = 8192
_CHUNK_STREAM, _READ_STREAM = 2, 3  # random streams: never shared with the store loader's


class StreamDataset(EpochConsumers, IterableDataset[dict[str, Any]]):
    """The cells of ``spec`` (one split of them), tokenized by ``tokenizer`` as they stream.

    ``tokenizer`` is a :class:`Tokenizer` (``Tokenizer.fit(config)`` makes the corpus passes
    once; a tokenizer from another corpus works, genes it lacks are reported) or the path of a
    saved one (a store, a ``tokenizer export`` folder). ``split_by`` (with ``split_fractions``,
    ``holdout`` and any other split option of :class:`~atlasprep.tokenize.TokenizeConfig`)
    splits the cells into whole groups as a store build with the same ``seed`` would.

    ``batch_size=None`` yields one dict per cell; ``batch_size=B`` yields padded batches
    (``input_ids``, ``attention_mask``, ``values`` for bin/raw, one int64 label tensor per
    ``columns`` entry, ``cell_id``). ``set_epoch``, ``state_dict``/``load_state_dict`` and
    ``even`` work as for ``ShardDataset``.
    """

    def __init__(
        self,
        spec: SourceSpec,
        tokenizer: Tokenizer | str | Path,
        split: str = "train",
        *,
        split_by: str | None = None,
        split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        holdout: tuple[str, ...] = (),
        seed: int = 0,
        shuffle: bool = True,
        chunk_size: int = 2048,
        io_batch_size: int = 65536,
        batch_size: int | None = None,
        columns: Sequence[str] = (),
        pad_to: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        even: Even = None,
        gene_column: str | None = None,
        assume_normalized: bool = False,
        sampling: str = "uniform",
        num_samples: int | None = None,
        **split_options: Any,
    ) -> None:
        super().__init__()
        _check(chunk_size=chunk_size, io_batch_size=io_batch_size, batch_size=batch_size, pad_to=pad_to)
        # TileDB buffers sized to one read of at most READ_CELLS cells
        self.spec = replace(spec, batch_size=min(io_batch_size, READ_CELLS))
        self.split = split
        self.seed, self.shuffle, self.chunk_size, self.io_batch_size = (
            seed,
            shuffle,
            chunk_size,
            io_batch_size,
        )
        self.batch_size, self.pad_to, self.columns = batch_size, pad_to, tuple(columns)
        self.gene_column, self.assume_normalized = gene_column, assume_normalized
        loaded = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer.load(tokenizer)
        splitting = {"split_by": split_by, "split": split_fractions, "holdout": holdout, **split_options}
        how: dict[str, Any] = {
            "seed": seed,
            "columns": self.columns,
            "splitting": splitting,
            "gene_column": gene_column,
        }
        planned = _plan_cells(self.spec, loaded, split, **how)
        self.cells, self.var_positions, self.tokenizer = (
            planned.cells,
            planned.var_positions,
            planned.tokenizer,
        )
        self.label_maps, self.coverage = planned.label_maps, planned.coverage
        self.pad_id = int(self.tokenizer.tokens.get("<pad>", 0))
        self._lookup = label_lookup(self.label_maps)
        self._sampling = stream_sampling(self.spec, self.cells, sampling, chunk_size)
        if num_samples is not None:
            check_int("num_samples", num_samples, at_least=1)
        self._n_samples = len(self.cells) if num_samples is None else int(num_samples)
        self._init_consumers(rank, world_size, even)

    # -- sizes and state -----------------------------------------------------------------------

    @property
    def num_cells(self) -> int:
        """Cells one epoch yields over all ranks and workers (``even=None``): the split's cells,
        or ``num_samples`` draws under balanced sampling."""
        return len(self.cells) if self._sampling is None else self._n_samples

    def _fingerprint(self) -> dict[str, Any]:
        return {
            "format": _STATE_FORMAT,
            "split": self.split,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "chunk_size": self.chunk_size,
            "io_batch_size": self.io_batch_size,
            "world_size": self.world_size,
            "rank": self.rank,
            "even": self.even,
            "num_cells": self.num_cells,
            **({} if self._sampling is None else self._sampling.fingerprint(self._n_samples)),
        }

    def batched(self, batch_size: int, *, pad_to: int | None = None) -> StreamDataset:
        """A copy that yields batches of ``batch_size`` (same cells, plan, epoch and label maps)."""
        _check(
            chunk_size=self.chunk_size, io_batch_size=self.io_batch_size, batch_size=batch_size, pad_to=pad_to
        )
        twin = copy.copy(self)
        twin.batch_size = batch_size
        twin.pad_to = pad_to if pad_to is not None else self.pad_to
        return twin

    def collator(self) -> ShardCollator:
        """A collator for this dataset's single cells, with its pad id, ``pad_to`` and label maps."""
        return ShardCollator(
            pad_id=self.pad_id, pad_to=self.pad_to, columns=self.columns, label_maps=self.label_maps
        )

    # -- the epoch's plan ----------------------------------------------------------------------

    def consumer_cells(self, consumer: Consumer) -> np.ndarray:
        """The source positions one consumer reads this epoch, in the order its reads take them."""
        if self._sampling is not None:  # balanced: the epoch's draws, split as cells are
            order = np.arange(-(-len(self.cells) // self.chunk_size))
            if self.shuffle:
                order = np.random.default_rng([self.seed, self.epoch, _CHUNK_STREAM]).permutation(len(order))
            drawn = drawn_sequence(
                self._sampling,
                order,
                chunk_size=self.chunk_size,
                n_samples=self.num_cells,
                seed=self.seed,
                epoch=self.epoch,
            )
            start, stop = consumer_range(self.num_cells, consumer, even=self.even)
            return self.cells[drawn[np.arange(start, stop) % max(self.num_cells, 1)]]
        n = self.num_cells
        n_chunks = -(-n // self.chunk_size)
        chunks = np.arange(n_chunks)
        if self.shuffle:
            chunks = np.random.default_rng([self.seed, self.epoch, _CHUNK_STREAM]).permutation(n_chunks)
        sizes = np.minimum(self.chunk_size, n - chunks * self.chunk_size)
        ends = np.cumsum(sizes)
        start, stop = consumer_range(n, consumer, even=self.even)
        virtual = np.arange(start, stop, dtype=np.int64) % max(n, 1)
        chunk = np.searchsorted(ends, virtual, side="right")  # the chunk holding each virtual place
        within = virtual - (ends[chunk] - sizes[chunk])
        return self.cells[chunks[chunk] * self.chunk_size + within]

    def _read_order(self, consumer: Consumer, k: int, n: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, self.epoch, _READ_STREAM, consumer.index, k]).permutation(n)

    # -- iteration -----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        consumer, skip = self._this_consumer()
        return self._iterate(consumer, skip)

    def _iterate(self, consumer: Consumer, skip: int) -> Iterator[dict[str, Any]]:
        pending: list[Found] = []
        held = 0
        for read, rows in self._reads(consumer, skip):
            if self.batch_size is None:
                self._consumed += len(rows)
                yield from single_cells(read.found(rows, np.arange(len(rows))), len(rows), self.columns)
                continue
            while len(rows):  # a batch may straddle two reads
                take = rows[: self.batch_size - held]
                pending.extend(read.found(take, np.arange(held, held + len(take))))
                held += len(take)
                rows = rows[len(take) :]
                if held == self.batch_size:
                    yield self._batch(pending, held)
                    pending, held = [], 0
        if pending:
            yield self._batch(pending, held)

    def _batch(self, found: list[Found], n_rows: int) -> dict[str, Any]:
        self._consumed += n_rows
        return collate_found(found, n_rows, columns=self.columns, pad_id=self.pad_id, pad_to=self.pad_to)

    def _reads(self, consumer: Consumer, skip: int) -> Iterator[tuple[Read, np.ndarray]]:
        """The consumer's shuffle buffers from ``skip`` on, each with the rows to send in order.
        The next ``READS_AHEAD`` buffers load on threads while this one is sent (TileDB, the
        COO -> CSR kernel and the encoders release the GIL): memory holds ``READS_AHEAD + 1``
        buffers' tokens at most."""
        positions = self.consumer_cells(consumer)
        if skip >= len(positions):
            return
        # this process's own handle; TileDB keeps freed read memory for the next read
        source = only_genes(open_source(self.spec, trim=False), self.var_positions)
        encode = self.tokenizer.encoder(var_gene_ids(source.var(), self.gene_column))
        integer = self.tokenizer.scheme != "raw" and not self.assume_normalized
        io = self.io_batch_size
        first, last = skip // io, -(-len(positions) // io)

        def read(k: int) -> Read:
            these = positions[k * io : (k + 1) * io]
            return read_cells(
                source,
                these,
                tokenizer=self.tokenizer,
                encode=encode,
                lookup=self._lookup,
                integer=integer,
                read_size=self.spec.batch_size,
                encode_labels_=self.batch_size is not None,
            )

        with ThreadPoolExecutor(max_workers=READS_AHEAD, thread_name_prefix="atlasprep-stream") as ahead:
            coming: deque[Future[Read]] = deque()
            try:
                for k in range(first, last):
                    current = coming.popleft() if coming else ahead.submit(read, k)
                    while len(coming) < READS_AHEAD and k + 1 + len(coming) < last:
                        coming.append(ahead.submit(read, k + 1 + len(coming)))
                    this = current.result()
                    rows = this.inverse[self._read_order(consumer, k, len(this.inverse))]
                    yield this, rows[skip - k * io :] if k == first else rows
            finally:
                for future in coming:
                    future.cancel()
                ahead.shutdown(wait=True)
                source.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class _Planned:
    cells: np.ndarray  # the split's cells: sorted source positions
    var_positions: np.ndarray | None  # the spec's genes
    tokenizer: Tokenizer  # reading this source's totals
    label_maps: dict[str, list[str]]  # each label column's values
    coverage: VocabCoverage  # the source's genes the vocabulary holds


def _plan_cells(
    spec: SourceSpec,
    tokenizer: Tokenizer,
    split: str,
    *,
    seed: int,
    columns: tuple[str, ...],
    splitting: dict[str, Any],
    gene_column: str | None,
) -> _Planned:
    """What a dataset reads, settled once in the main process (see :class:`_Planned`)."""
    source = open_source(spec)
    try:
        selection = select(spec, source)
        if selection.n_cells == 0:
            raise UsageError("no cells match the filters; nothing to stream")
        view = only_genes(source, selection.var_positions)
        positions = selection.positions
        absent = [c for c in columns if c not in source.obs_columns]
        if absent:
            raise UsageError(f"columns = {absent!r}: not obs columns of the source")
        if splitting.get("split_by"):
            # the store build's own layout; imported only here (the build's modules and scipy's
            # graph routines add a tenth of a second to a stream's start-up otherwise)
            from atlasprep.tokenize.api import TokenizeConfig, _layout

            config = TokenizeConfig(source=spec, out=Path(os.devnull), seed=seed, **splitting)
            _, layout = _layout(config, view, positions)
            if split not in layout.names:
                raise UsageError(f"split = {split!r}: the cells split into {', '.join(layout.names)}")
            positions = positions[layout.codes == layout.names.index(split)]
        elif split != "train":
            raise UsageError(f"split = {split!r}: without split_by every cell is in 'train'")
        obs = source.obs_values(positions, list(columns))
        coverage = VocabCoverage.of_genes(tokenizer.column_tokens(var_gene_ids(view.var(), gene_column)))
        if coverage.gene_match < 1:
            log.warning(
                "%d of this source's %d genes are not in the tokenizer's vocabulary; they are left out",
                coverage.n_genes - coverage.n_genes_in_vocab,
                coverage.n_genes,
            )
        return _Planned(
            cells=positions.astype(np.int64),
            var_positions=selection.var_positions,
            tokenizer=with_totals(tokenizer, list(source.obs_columns)),
            label_maps={c: sorted(obs[c].astype("string").fillna("<NA>").unique().tolist()) for c in columns},
            coverage=coverage,
        )
    finally:
        source.close()


def _check(*, chunk_size: int, io_batch_size: int, batch_size: int | None, pad_to: int | None) -> None:
    for name, value in (("chunk_size", chunk_size), ("io_batch_size", io_batch_size)):
        check_int(name, value, at_least=1)
    for name, given in (("batch_size", batch_size), ("pad_to", pad_to)):
        if given is not None:
            check_int(name, given, at_least=1)
