"""Streaming from the atlas: atlasprep's StreamDataset vs TileDB-SOMA-ML's ExperimentDataset.

    python benchmarks/bench_stream.py [--cells 100000] [--batch-size 256] [--seconds 20]
    python benchmarks/bench_stream.py --epoch             # one whole epoch each: the fair end-to-end figure

Both read the same cells (``soma_joinid < cells``) of a demo census (built or reused under
``benchmarks/_work``, as ``bench_loader.py`` does) straight from the SOMA store, shuffled, with 0
and 2 DataLoader workers, each run in a fresh process:

* ``tiledbsoma-ml``: ``ExperimentDataset`` over ``X/raw`` through ``experiment_dataloader``
  (its defaults: dense float32 batches of every gene; its sparse mode does not run with
  workers). It only reads: its "tokens" are the non-zero counts.
* ``atlasprep-stream``: :class:`atlasprep.loader.StreamDataset` over the same cells, through
  :class:`atlasprep.loader.ShardLoader`; it reads *and* tokenizes (rank value encoding,
  ``--max-len`` tokens, the tokenizer of a token store of the same cells, built once and kept:
  Geneformer's gc104M dictionaries when ``../shared/data/geneformer`` has them). Its defaults
  shuffle chunks of 2,048 cells (whole X tile rows of the Census layout) in buffers of 65,536;
  ``stream-as-ml`` shuffles as tiledbsoma-ml's defaults do (chunks of 64 in buffers of 65,536);
  ``stream-chunk1024`` mixes as many chunks a buffer as the defaults, in smaller pieces (1,024 in
  32,768: the defaults until this release), ``stream-chunk256`` smaller still (256 in 8,192);
  ``stream-tile-rows`` takes the defaults' chunks in half the buffer (2,048 in 32,768: less
  memory, 16 chunks a buffer); ``stream-stable`` is
  the defaults with the tokenizer's ``tie_order="stable"`` (genes of equal value by token id,
  sorted by a compiled radix kernel) instead of Geneformer's own ``np.argsort`` order;
  ``stream-one-arena`` is the defaults in a process started with ``MALLOC_ARENA_MAX=1`` (one
  glibc heap for every thread: TileDB's threads reuse each other's freed pages).

Each run is timed unobserved. With no workers, memory is the process's own peak RSS, from its
launcher (both columns); with workers a second run samples it over each process and its workers
(peak RSS summed, and PSS, which splits shared pages). The clock starts at the first batch (the
time to it is ``startup``).
tiledbsoma-ml reads a whole 65,536-cell buffer before its first batch and serves it from
memory, so its steady rate over a few seconds flatters it: with ``--epoch`` every loader runs
one epoch's batches (``--cells`` / ``--batch-size``, start-up included), and the end-to-end
column is the comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_loader as bl  # noqa: E402
import numpy as np  # noqa: E402  (the loader benchmark's runs, memory sampling and report)


def _stream(
    run: bl.Run, chunk_size: int | None = None, io_batch_size: int | None = None, tie_order: str | None = None
) -> Iterator[tuple[int, int]]:
    """StreamDataset with its defaults (chunks of 2,048 cells, shuffle buffers of 65,536, the
    store's tokenizer as saved: Geneformer's tie order) unless told otherwise."""
    from atlasprep.loader import ShardLoader, StreamDataset
    from atlasprep.sources import CellFilter, SourceSpec

    spec = SourceSpec(
        census_uri=run.census, filter=CellFilter(primary_only=False, where=f"soma_joinid < {run.cells}")
    )
    tokenizer: Any = run.store
    if tie_order is not None:  # the store's tokenizer, ordering ties another way
        from atlasprep.tokenize.config import TieOrder
        from atlasprep.tokenize.tokenizer import Tokenizer

        tokenizer = replace(Tokenizer.load(run.store), tie_order=TieOrder(tie_order))
    shuffling = {"chunk_size": chunk_size, "io_batch_size": io_batch_size}
    dataset = StreamDataset(spec, tokenizer, seed=0, **{k: v for k, v in shuffling.items() if v is not None})
    for batch in ShardLoader(dataset, batch_size=run.batch_size, num_workers=run.workers):
        yield (
            len(batch["cell_id"]),
            # counted in numpy: torch's .sum() waits on its OpenMP pool on a busy machine
            int(np.count_nonzero(batch["attention_mask"].numpy())),
        )


def _stream_as_ml(run: bl.Run) -> Iterator[tuple[int, int]]:
    """StreamDataset shuffled as tiledbsoma-ml's defaults shuffle (chunks of 64 cells in
    buffers of 65,536): finer, and slower to read (a 64-cell chunk is a fraction of a TileDB
    data tile)."""
    return _stream(run, chunk_size=64, io_batch_size=65536)


def _stream_chunks_256(run: bl.Run) -> Iterator[tuple[int, int]]:
    """StreamDataset with the same 32 chunks a buffer as its defaults, in smaller pieces
    (chunks of 256 in buffers of 8,192: the defaults before chunks matched data tiles)."""
    return _stream(run, chunk_size=256, io_batch_size=8192)


def _stream_chunks_1024(run: bl.Run) -> Iterator[tuple[int, int]]:
    """StreamDataset with the same 32 chunks a buffer as its defaults, in half-size pieces
    (chunks of 1,024 in buffers of 32,768: the defaults until this release)."""
    return _stream(run, chunk_size=1024, io_batch_size=32768)


def _stream_tile_rows(run: bl.Run) -> Iterator[tuple[int, int]]:
    """StreamDataset with the defaults' chunks (whole X tile rows) in buffers of 32,768: less
    memory, and 16 chunks a buffer instead of 32."""
    return _stream(run, chunk_size=2048, io_batch_size=32768)


def _stream_stable(run: bl.Run) -> Iterator[tuple[int, int]]:
    """StreamDataset with its defaults and ``tie_order="stable"``: ties by token id, sorted by
    the tokenizer's compiled radix kernel rather than numpy's ``argsort``."""
    return _stream(run, tie_order="stable")


bl.LOADERS["atlasprep-stream"] = _stream
bl.LOADERS["stream-one-arena"] = _stream
bl.ENVIRONMENTS["stream-one-arena"] = {"MALLOC_ARENA_MAX": "1"}
bl.LOADERS["stream-stable"] = _stream_stable
bl.LOADERS["stream-as-ml"] = _stream_as_ml
bl.LOADERS["stream-chunk256"] = _stream_chunks_256
bl.LOADERS["stream-tile-rows"] = _stream_tile_rows
bl.LOADERS["stream-chunk1024"] = _stream_chunks_1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=20.0, help="time limit per loader and worker count")
    parser.add_argument("--batches", type=int, default=10**9, help="batch limit per loader and worker count")
    parser.add_argument("--max-len", type=int, default=2048)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--epoch", action="store_true", help="one epoch's batches each, no time limit")
    parser.add_argument(
        "--loaders",
        nargs="+",
        default=["tiledbsoma-ml", "atlasprep-stream", "stream-one-arena", "stream-stable", "stream-as-ml"],
        choices=[
            "tiledbsoma-ml",
            "atlasprep-stream",
            "stream-one-arena",
            "stream-stable",
            "stream-as-ml",
            "stream-chunk256",
            "stream-tile-rows",
            "stream-chunk1024",
        ],
    )
    parser.add_argument("--work", type=Path, default=HERE / "_work")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one measurement, as JSON
    opts = parser.parse_args()
    if opts.one:
        print(json.dumps(asdict(bl.measure(bl.Run(**json.loads(opts.one))))))
        return
    census = bl.census_for(opts.cells, opts.work)
    store = bl.token_store(census, opts.cells, "arrow", opts.max_len, opts.work)  # its tokenizer
    print(
        f"\n{opts.cells:,} cells of {census.name} streamed from SOMA, batch {opts.batch_size}, up to "
        f"{opts.seconds:g} s or {opts.batches:,} batches per loader; {os.cpu_count()} CPU cores\n",
        flush=True,
    )
    if opts.epoch:  # the first batch starts the clock and is not counted
        opts.seconds, opts.batches = 1e9, -(-opts.cells // opts.batch_size) - 1
    template = bl.Run(
        name="",
        workers=0,
        store=str(store),
        census=str(census),
        cells=opts.cells,
        batch_size=opts.batch_size,
        seconds=opts.seconds,
        batches=opts.batches,
    )
    for name in sorted({"atlasprep-stream", "stream-stable"} & set(opts.loaders)):
        # numba compiles a kernel on its first use ever, then loads it from its on-disk cache:
        # one short unmeasured run each, so no measured run pays for compiling
        bl.run_isolated(replace(template, name=name, cells=min(opts.cells, 4096), batches=1), script=__file__)
    results = [
        bl.run_isolated(replace(template, name=name, workers=workers), script=__file__)
        for name in opts.loaders
        for workers in opts.workers
    ]
    report(results)


def report(results: list[bl.Result]) -> None:
    """Steady-state cells/s (clock from the first batch, as bench_loader reports) and end to end
    (from the start, the first read included: tiledbsoma-ml reads a whole io batch of 65,536
    cells before its first batch, so its steady state serves from memory)."""
    anchor = {r.workers: r for r in results if r.name == "tiledbsoma-ml" and r.cells}
    print(
        f"\n{'loader':<16} {'workers':>7} {'cells':>8} {'cells/s':>9} {'end-to-end':>10} {'startup s':>9} "
        f"{'peak RSS MB':>11} {'peak PSS MB':>11} {'vs tiledbsoma-ml (steady, e2e, PSS)':>36}"
    )
    for r in results:
        if r.note:
            print(f"{r.name:<16} {r.workers:>7} {r.note}")
            continue
        e2e = r.cells / (r.seconds + r.startup)
        other = anchor.get(r.workers)
        ratios = "-"
        if other is not None:
            other_e2e = other.cells / (other.seconds + other.startup)
            steady, pss = r.cells_per_s / other.cells_per_s, r.pss_mb / other.pss_mb
            ratios = f"{steady:.1f}x, {e2e / other_e2e:.1f}x, {pss:.2f}x"
        print(
            f"{r.name:<16} {r.workers:>7} {r.cells:>8,} {r.cells_per_s:>9,.0f} {e2e:>10,.0f} "
            f"{r.startup:>9.1f} {r.rss_mb:>11,.0f} {r.pss_mb:>11,.0f} {ratios:>36}"
        )


if __name__ == "__main__":
    main()
