"""Loader throughput: atlasprep's ShardLoader vs annbatch, HuggingFace datasets and tiledbsoma-ml, same cells.

    python benchmarks/bench_loader.py [--cells 200000] [--batch-size 256] [--seconds 20] [--rounds 3]
    python benchmarks/bench_loader.py --cells 100000 --overhead 5   # only uniform vs sampled, interleaved

Uses (or builds) the demo census under ``benchmarks/_work`` and takes its first ``--cells``
cells (``soma_joinid < cells``). They are tokenized once (rank scheme, ``--max-len`` tokens,
Geneformer's gc104M dictionaries from ``../shared/data/geneformer`` when present, else the
corpus vocabulary) to an Arrow and a Zarr token store, kept for later runs. Then, each in a
fresh process (so memory figures are its own), for 0 and 2 DataLoader workers:

* ``atlasprep``: :class:`atlasprep.loader.ShardLoader`, shuffled, batches padded to the longest
  cell, on the Arrow and the Zarr store; and the same with sampling (the overhead is reported
  against uniform): ``-balanced`` draws with replacement, cell types balanced after the Census
  ``cell_class`` rollup (``sampling="balanced:cell_type@cell_class"``); ``-hardneg`` makes each
  batch one cell type from several tissues (``batches="hard_negatives:cell_type/tissue_general"``);
* ``hf-datasets``: ``datasets.Dataset.from_file`` over the same Arrow shards,
  ``concatenate_datasets``, ``with_format("torch")``, a shuffled torch ``DataLoader`` with a
  padding collate (``pad_sequence``);
* ``tiledbsoma-ml``: ``ExperimentDataset`` over the census ``X/raw`` rows of the same cells via
  ``experiment_dataloader`` (dense float32 batches of all genes, its default; its sparse mode
  does not work with workers) — the raw-counts anchor; its "tokens" are the non-zero counts;
* ``annbatch-default``/``annbatch-readme``: scverse annbatch's ``Loader`` on the same cells'
  raw counts, its default and its README settings, from a Python 3.12 environment beside the
  project's (see ``_annbatch.py``; absent, it is reported as not run); no DataLoader workers.

Each runs epoch after epoch (``set_epoch`` where the loader has it; workers persistent where it
allows) for ``--seconds`` (or ``--batches``), in a fresh process started from this small one;
the clock starts at the first batch (the time to it is ``startup``). ``--rounds N`` repeats the
sequence N times, interleaved: medians and ranges. Tokens are counted in numpy, torch runs one
intra-op thread (its OpenMP pool stalls on a busy 2-core machine). Each run's process starts from
a small launcher and is timed unobserved: with no workers its peak RSS is the launcher's
``wait4`` figure (both columns); with workers a second run samples memory every 0.1 s over the
process and its workers (``rss`` sums resident sets, ``pss`` splits shared pages), because the
sampling itself slows the loader.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _annbatch  # noqa: E402  (numpy only at import: this script also runs in annbatch's environment)
from _epochs import epochs  # noqa: E402
from _inputs import census_for, token_store  # noqa: E402  (bench_stream's too, through this module)
from _launch import launch_report  # noqa: E402
from _loader_report import report, sampling_overhead  # noqa: E402
from _memory import PeakMemory  # noqa: E402  (also bench_stream's, through this module)


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    name: str
    workers: int
    store: str
    census: str
    cells: int
    batch_size: int
    seconds: float
    batches: int
    device: str = "cpu"  # else atlasprep's batches go there from pinned memory
    sample_memory: bool = False  # sample every process's memory (a run with workers, timed apart)


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    name: str
    workers: int
    batches: int
    cells: int
    tokens: int
    seconds: float
    startup: float
    rss_mb: float
    pss_mb: float
    note: str = ""

    @property
    def cells_per_s(self) -> float:
        return self.cells / self.seconds if self.seconds else 0.0

    @classmethod
    def not_run(cls, name: str, workers: int, note: str) -> Result:
        """A loader that did not run (failed, or not installed), with why."""
        zero = {"batches": 0, "cells": 0, "tokens": 0, "seconds": 0, "startup": 0, "rss_mb": 0, "pss_mb": 0}
        return cls(name=name, workers=workers, note=note, **zero)


# -- the loaders (each runs in its own process) -------------------------------------------------


# atlasprep's loader runs, and the sampling each uses
SAMPLING: dict[str, dict[str, str]] = {
    "atlasprep-arrow": {},
    "atlasprep-zarr": {},
    "atlasprep-arrow-balanced": {"sampling": "balanced:cell_type@cell_class"},
    "atlasprep-zarr-balanced": {"sampling": "balanced:cell_type@cell_class"},
    "atlasprep-arrow-hardneg": {"batches": "hard_negatives:cell_type/tissue_general"},
    "atlasprep-zarr-hardneg": {"batches": "hard_negatives:cell_type/tissue_general"},
}


def _atlasprep(run: Run) -> Iterator[tuple[int, int]]:
    import torch

    from atlasprep.loader import ShardDataset, ShardLoader

    torch.set_num_threads(1)
    dataset = ShardDataset(run.store, "train", seed=0, **SAMPLING[run.name])
    gpu = run.device != "cpu"
    loader = ShardLoader(dataset, batch_size=run.batch_size, num_workers=run.workers, pin_memory=gpu)

    def epoch(k: int) -> Iterator[dict[str, Any]]:
        loader.set_epoch(k)
        return iter(loader)

    for batch in epochs(epoch):
        if gpu:  # the copies a training step waits for
            for key in ("input_ids", "attention_mask", "values"):
                if key in batch:
                    batch[key].to(run.device, non_blocking=True)
            torch.cuda.current_stream().synchronize()
        yield (
            len(batch["cell_id"]),
            # counted in numpy: torch's .sum() waits on its OpenMP pool on a busy machine
            int(np.count_nonzero(batch["attention_mask"].numpy())),
        )


def _hf(run: Run) -> Iterator[tuple[int, int]]:
    import datasets
    import torch
    from torch.nn.utils.rnn import pad_sequence
    from torch.utils.data import DataLoader

    from atlasprep.shard import read_manifest

    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    store = Path(run.store)
    shards = [datasets.Dataset.from_file(str(store / s["path"])) for s in read_manifest(store)["shards"]]
    data = datasets.concatenate_datasets(shards).with_format("torch", columns=["input_ids"])

    def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = pad_sequence([r["input_ids"] for r in rows], batch_first=True, padding_value=0)
        lengths = torch.tensor([len(r["input_ids"]) for r in rows])
        return {"input_ids": ids, "attention_mask": torch.arange(ids.shape[1])[None] < lengths[:, None]}

    generator = torch.Generator().manual_seed(0)
    loader = DataLoader(
        data,
        batch_size=run.batch_size,
        shuffle=True,
        num_workers=run.workers,
        collate_fn=collate,
        generator=generator,
        persistent_workers=run.workers > 0,
    )
    for batch in epochs(lambda _: loader):
        yield (
            batch["input_ids"].shape[0],
            int(np.count_nonzero(batch["attention_mask"].numpy())),
        )


def _tiledbsoma_ml(run: Run) -> Iterator[tuple[int, int]]:
    import tiledbsoma as soma
    from tiledbsoma_ml import ExperimentDataset, experiment_dataloader

    uri = str(Path(run.census) / "census_data" / "homo_sapiens")
    with (
        soma.Experiment.open(uri) as experiment,
        experiment.axis_query("RNA", obs_query=soma.AxisQuery(coords=(slice(0, run.cells - 1),))) as query,
    ):
        dataset = ExperimentDataset(query, layer_name="raw", batch_size=run.batch_size, shuffle=True, seed=0)
        loader = experiment_dataloader(dataset, num_workers=run.workers, persistent_workers=run.workers > 0)

        def epoch(k: int) -> Any:
            dataset.set_epoch(k)
            return loader

        for X, _obs in epochs(epoch):
            yield X.shape[0], int(np.count_nonzero(X))


LOADERS: dict[str, Callable[[Run], Iterator[tuple[int, int]]]] = {
    **dict.fromkeys(SAMPLING, _atlasprep),
    **dict.fromkeys(_annbatch.SETTINGS, _annbatch.load),
    "hf-datasets": _hf,
    "tiledbsoma-ml": _tiledbsoma_ml,
}


def measure(run: Run) -> Result:
    started = time.perf_counter()
    cells = tokens = batches = 0
    first = None
    # Sampling smaps_rollup every 0.1 s walks each process's page tables under its mm lock: it
    # slowed a 100,000-cell StreamDataset epoch by up to a sixth (13.3-13.9k against 14.0-16.8k
    # cells/s) and ShardLoader with 2 workers by 10-20%. So the timed run samples nothing; memory
    # is the launcher's wait4 figure without workers, and a second run's samples with them.
    memory = PeakMemory() if run.sample_memory else None
    with memory or contextlib.nullcontext():
        for n_cells, n_tokens in LOADERS[run.name](run):
            if first is None:  # the clock starts at the first batch: startup is reported apart
                first = time.perf_counter()
                continue
            batches += 1
            cells += n_cells
            tokens += n_tokens
            if batches >= run.batches or time.perf_counter() - first >= run.seconds:
                break
        end = time.perf_counter()
    return Result(
        name=run.name,
        workers=run.workers,
        batches=batches,
        cells=cells,
        tokens=tokens,
        seconds=end - (first or end),
        startup=(first or end) - started,
        rss_mb=memory.rss / 2**20 if memory else 0.0,
        pss_mb=memory.pss / 2**20 if memory else 0.0,
    )


# environment a loader's process starts with (glibc reads MALLOC_* once, at start-up)
ENVIRONMENTS: dict[str, dict[str, str]] = {}


def run_isolated(run: Run, script: str = __file__, python: str = sys.executable) -> Result:
    """One measurement in a fresh interpreter (``script --one``: this one, or another benchmark
    that registers its loaders here), so its memory and warm caches are its own; started from a
    small launcher, whose ``wait4`` gives its peak RSS (reported as both RSS and PSS for a run
    without workers: one process). With workers, memory comes from a second, sampled run."""
    timed, peak_rss = _isolated(replace(run, sample_memory=False), script, python)
    if timed.note or not run.workers:
        return timed if timed.note else replace(timed, rss_mb=peak_rss, pss_mb=peak_rss)
    sampled, _ = _isolated(replace(run, sample_memory=True), script, python)
    if sampled.note:
        return sampled
    return replace(timed, rss_mb=sampled.rss_mb, pss_mb=sampled.pss_mb)


def _isolated(run: Run, script: str, python: str) -> tuple[Result, float]:
    """One run from a launcher: what it measured, and its peak RSS (MB) by ``wait4``."""
    argv = [python, script, "--one", json.dumps(asdict(run))]
    code, launched, stderr = launch_report(argv, ENVIRONMENTS.get(run.name))
    lines = [line for line in launched.stdout.splitlines() if line.startswith("{")]
    if code or not lines:
        tail = (stderr or launched.stdout).strip().splitlines()[-1:] or ["no output"]
        return Result.not_run(run.name, run.workers, f"failed: {tail[0][:100]}"), 0.0
    return Result(**json.loads(lines[-1])), launched.peak_rss_mb


# -- inputs -------------------------------------------------------------------------------------


# -- report -------------------------------------------------------------------------------------


def isolated_runs(opts: argparse.Namespace, census: Path, stores: dict[str, Path]) -> list[Result]:
    """Each loader (of ``--loaders``) and worker count, in a fresh process; annbatch once, without
    workers, in its own environment."""
    results = []
    runs = [
        ("tiledbsoma-ml", "", sys.executable),
        *((name, stores["zarr" if "-zarr" in name else "arrow"], sys.executable) for name in SAMPLING),
        ("hf-datasets", stores["arrow"], sys.executable),
        *((name, stores.get("annbatch", ""), opts.annbatch_python or "") for name in _annbatch.SETTINGS),
    ]
    for name, store, python in runs:
        if opts.loaders and name not in opts.loaders:
            continue
        for workers in [0] if name in _annbatch.SETTINGS else opts.workers:
            run = Run(
                name=name,
                workers=workers,
                store=str(store),
                census=str(census),
                cells=opts.cells,
                batch_size=opts.batch_size,
                seconds=opts.seconds,
                batches=opts.batches,
                device=opts.device if name in SAMPLING else "cpu",
            )
            result = (
                run_isolated(run, python=python) if python else Result.not_run(name, 0, opts.annbatch_absent)
            )
            print(
                f"  {name} ({workers} workers): {result.note or f'{result.cells_per_s:,.0f} cells/s'}",
                flush=True,
            )
            results.append(result)
    return results


def _annbatch_store(opts: argparse.Namespace, census: Path) -> Path | None:
    """annbatch's store of the same cells' raw counts, if its environment is there (else
    ``opts.annbatch_python`` is None and ``opts.annbatch_absent`` says why)."""
    python, about = _annbatch.find_python(opts.annbatch_python)
    opts.annbatch_python, opts.annbatch_absent = python, f"not run: {about}"
    if python is None:
        print(f"annbatch: {about}; its rows are reported as not run", flush=True)
        return None
    print(f"annbatch {about} from {python}", flush=True)
    return _annbatch.write_store(python, _annbatch.export_raw(census, opts.cells, opts.work))


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=20.0, help="time limit per loader and worker count")
    parser.add_argument("--batches", type=int, default=10**9, help="batch limit per loader and worker count")
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat every run, interleaved; medians reported"
    )
    parser.add_argument("--max-len", type=int, default=2048)
    parser.add_argument(
        "--device", default="cpu", help="e.g. cuda: atlasprep's batches pinned, then copied there"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--work", type=Path, default=HERE / "_work")
    parser.add_argument("--loaders", nargs="+", default=None, help=f"a subset of: {', '.join(LOADERS)}")
    parser.add_argument(
        "--annbatch-python",
        default=None,
        help=f"an environment's python with annbatch (${_annbatch.ENV}, else {_annbatch.DEFAULT_PYTHON})",
    )
    parser.add_argument(
        "--overhead",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="only the sampling overhead, in ROUNDS turns",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one measurement, as JSON
    return parser.parse_args()


def main() -> None:
    opts = _options()
    if opts.one:
        print(json.dumps(asdict(measure(Run(**json.loads(opts.one))))))
        return

    census = census_for(opts.cells, opts.work)
    if opts.overhead:
        store = token_store(census, opts.cells, "arrow", opts.max_len, opts.work)
        batches = min(opts.batches, 60)
        sampling_overhead(store, SAMPLING, batch_size=opts.batch_size, batches=batches, rounds=opts.overhead)
        return
    stores = {fmt: token_store(census, opts.cells, fmt, opts.max_len, opts.work) for fmt in ("arrow", "zarr")}
    wanted = opts.loaders is None or any(name in opts.loaders for name in _annbatch.SETTINGS)
    annbatch = _annbatch_store(opts, census) if wanted else None
    if annbatch is not None:
        stores["annbatch"] = annbatch
    print(
        f"\n{opts.cells:,} cells of {census.name}, batch {opts.batch_size}, up to {opts.seconds:g} s "
        f"or {opts.batches:,} batches per loader, {opts.rounds} round(s); {os.cpu_count()} CPU cores\n",
        flush=True,
    )
    results = []
    for round_ in range(opts.rounds):
        if opts.rounds > 1:
            print(f"round {round_ + 1} of {opts.rounds}", flush=True)
        results += isolated_runs(opts, census, stores)
    report(results)


if __name__ == "__main__":
    main()
