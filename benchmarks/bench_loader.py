"""Loader throughput: atlasprep's ShardLoader vs HuggingFace datasets and tiledbsoma-ml, same cells.

    python benchmarks/bench_loader.py [--cells 200000] [--batch-size 256] [--seconds 20]
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
* ``annbatch``: reported as skipped (not installable here).

Each runs one epoch at most, stopping after ``--seconds`` (or ``--batches``); the clock starts
when the first batch arrives (the time to it is ``startup``). Memory is sampled every 0.1 s
over the process and its workers: ``rss`` sums resident sets (shared pages count once per
process), ``pss`` splits shared pages between processes (the honest total).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _memory import PeakMemory  # noqa: E402  (also bench_stream's, through this module)

SHARED = HERE.parents[1] / "shared" / "data" / "geneformer"


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
    from atlasprep.loader import ShardDataset, ShardLoader

    dataset = ShardDataset(run.store, "train", seed=0, **SAMPLING[run.name])
    loader = ShardLoader(dataset, batch_size=run.batch_size, num_workers=run.workers)
    for batch in loader:
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
    )
    for batch in loader:
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
        for X, _obs in experiment_dataloader(dataset, num_workers=run.workers):
            yield X.shape[0], int(np.count_nonzero(X))


LOADERS: dict[str, Callable[[Run], Iterator[tuple[int, int]]]] = {
    **dict.fromkeys(SAMPLING, _atlasprep),
    "hf-datasets": _hf,
    "tiledbsoma-ml": _tiledbsoma_ml,
}


def measure(run: Run) -> Result:
    started = time.perf_counter()
    cells = tokens = batches = 0
    first = None
    with PeakMemory() as memory:
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
        rss_mb=memory.rss / 2**20,
        pss_mb=memory.pss / 2**20,
    )


def run_isolated(run: Run, script: str = __file__) -> Result:
    """One measurement in a fresh interpreter (``script --one``: this one, or another benchmark
    that registers its loaders here), so its memory and warm caches are its own."""
    proc = subprocess.run(
        [sys.executable, script, "--one", json.dumps(asdict(run))],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return Result.not_run(run.name, run.workers, f"failed: {tail[0][:100]}")
    return Result(**json.loads(lines[-1]))


# -- inputs -------------------------------------------------------------------------------------


def census_for(cells: int, work: Path) -> Path:
    """An existing demo census with at least ``cells`` cells, else a new one of ``cells``."""
    existing = sorted(
        (int(p.name.split("-")[1]), p) for p in work.glob("census-*") if p.name.split("-")[1].isdigit()
    )
    for size, path in existing:
        if size >= cells:
            return path
    from atlasprep.demo import build_census

    work.mkdir(parents=True, exist_ok=True)
    print(f"building a {cells:,}-cell demo census (about a minute per 200,000 cells) …", flush=True)
    return build_census(work / f"census-{cells}", n_cells=cells, seed=0)


def token_store(census: Path, cells: int, fmt: str, max_len: int, work: Path) -> Path:
    from atlasprep.sources import CellFilter, SourceSpec
    from atlasprep.tokenize.api import TokenizeConfig, tokenize_cells

    dictionary, medians = (
        SHARED / "token_dictionary_gc104M.json",
        SHARED / "gene_median_dictionary_gc104M.json",
    )
    geneformer = dictionary.exists() and medians.exists()
    out = work / f"tokens-{census.name}-{cells}-rank{max_len}-{'gc104M' if geneformer else 'corpus'}-{fmt}"
    if (out / "manifest.json").exists():
        return out
    print(f"tokenizing {cells:,} cells to {out.name} …", flush=True)
    started = time.perf_counter()
    tokenize_cells(
        TokenizeConfig(
            source=SourceSpec(
                census_uri=str(census), filter=CellFilter(primary_only=False, where=f"soma_joinid < {cells}")
            ),
            out=out,
            scheme="rank",
            max_len=max_len,
            token_dictionary=dictionary if geneformer else None,
            gene_medians=medians if geneformer else None,
            format="arrow" if fmt == "arrow" else "zarr",
            overwrite=True,
            seed=0,
        )
    )
    print(f"  {time.perf_counter() - started:.0f} s", flush=True)
    return out


# -- report -------------------------------------------------------------------------------------


def report(results: list[Result]) -> None:
    anchor = {r.workers: r.cells_per_s for r in results if r.name == "tiledbsoma-ml" and r.cells}
    print(
        f"\n{'loader':<16} {'workers':>7} {'batches':>7} {'cells/s':>9} {'tokens/s':>11} "
        f"{'startup s':>9} {'peak RSS MB':>11} {'peak PSS MB':>11} {'vs tiledbsoma-ml':>16}"
    )
    for r in results:
        if r.note:
            print(f"{r.name:<16} {r.workers:>7} {r.note}")
            continue
        ratio = f"{r.cells_per_s / anchor[r.workers]:.1f}x" if anchor.get(r.workers) else "-"
        print(
            f"{r.name:<16} {r.workers:>7} {r.batches:>7} {r.cells_per_s:>9,.0f} "
            f"{r.tokens / r.seconds:>11,.0f} {r.startup:>9.1f} "
            f"{r.rss_mb:>11,.0f} {r.pss_mb:>11,.0f} {ratio:>16}"
        )
    print(
        "\ntokens: real (unpadded) tokens for the token stores; "
        "non-zero counts for tiledbsoma-ml (raw X rows)."
    )
    uniform = {(r.name, r.workers): r.cells_per_s for r in results if r.cells}
    for r in results:
        base = uniform.get((r.name.rsplit("-", 1)[0], r.workers))
        if r.name.endswith(("-balanced", "-hardneg")) and r.cells and base:
            ratio = r.cells_per_s / base
            print(f"sampling overhead {r.name} ({r.workers} workers): {ratio:.2f}x uniform's cells/s")


def sampling_overhead(store: Path, *, batch_size: int, batches: int, rounds: int) -> None:
    """Uniform, balanced and hard-negative loading timed in turns in one process (0 workers):
    on a shared machine load drifts, and interleaved rounds see the same drift; medians reported."""
    from atlasprep.loader import ShardDataset, ShardLoader

    timings: dict[str, list[float]] = {name: [] for name in SAMPLING if name.startswith("atlasprep-arrow")}
    for round_ in range(rounds):
        for name in timings:
            loader = ShardLoader(
                ShardDataset(store, "train", seed=0, **SAMPLING[name]), batch_size=batch_size
            )
            loader.set_epoch(round_)
            cells, started = 0, time.perf_counter()
            for k, batch in enumerate(loader):
                cells += len(batch["cell_id"])
                if k + 1 >= batches:
                    break
            timings[name].append(cells / (time.perf_counter() - started))
    base = float(np.median(timings["atlasprep-arrow"]))
    print(f"\nsampling overhead, {rounds} interleaved rounds of {batches} batches of {batch_size} (median):")
    for name, rates in timings.items():
        median = float(np.median(rates))
        print(f"  {name:<26} {median:>9,.0f} cells/s  {median / base:.2f}x uniform")


def isolated_runs(opts: argparse.Namespace, census: Path, stores: dict[str, Path]) -> list[Result]:
    """Each loader (of ``--loaders``) and worker count, in a fresh process."""
    results = []
    runs = [
        ("tiledbsoma-ml", ""),
        *((name, stores["zarr" if "-zarr" in name else "arrow"]) for name in SAMPLING),
        ("hf-datasets", stores["arrow"]),
    ]
    for name, store in runs:
        if opts.loaders and name not in opts.loaders:
            continue
        for workers in opts.workers:
            run = Run(
                name=name,
                workers=workers,
                store=str(store),
                census=str(census),
                cells=opts.cells,
                batch_size=opts.batch_size,
                seconds=opts.seconds,
                batches=opts.batches,
            )
            result = run_isolated(run)
            print(
                f"  {name} ({workers} workers): {result.note or f'{result.cells_per_s:,.0f} cells/s'}",
                flush=True,
            )
            results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=20.0, help="time limit per loader and worker count")
    parser.add_argument("--batches", type=int, default=10**9, help="batch limit per loader and worker count")
    parser.add_argument("--max-len", type=int, default=2048)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--work", type=Path, default=HERE / "_work")
    parser.add_argument("--loaders", nargs="+", default=None, help=f"a subset of: {', '.join(LOADERS)}")
    parser.add_argument(
        "--overhead",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="only the sampling overhead, in ROUNDS turns",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one measurement, as JSON
    opts = parser.parse_args()
    if opts.one:
        print(json.dumps(asdict(measure(Run(**json.loads(opts.one))))))
        return

    census = census_for(opts.cells, opts.work)
    if opts.overhead:
        store = token_store(census, opts.cells, "arrow", opts.max_len, opts.work)
        batches = min(opts.batches, 60)
        sampling_overhead(store, batch_size=opts.batch_size, batches=batches, rounds=opts.overhead)
        return
    stores = {fmt: token_store(census, opts.cells, fmt, opts.max_len, opts.work) for fmt in ("arrow", "zarr")}
    print(
        f"\n{opts.cells:,} cells of {census.name}, batch {opts.batch_size}, up to {opts.seconds:g} s "
        f"or {opts.batches:,} batches per loader; {os.cpu_count()} CPU cores\n",
        flush=True,
    )
    results = isolated_runs(opts, census, stores)
    try:
        import annbatch  # noqa: F401

        why = "skipped: importable, but not wired into this benchmark"
    except ImportError:
        why = "skipped: not importable (not installed)"
    results.append(Result.not_run("annbatch", 0, why))
    report(results)


if __name__ == "__main__":
    main()
