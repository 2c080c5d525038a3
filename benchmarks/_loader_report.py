"""The report of ``bench_loader.py``: medians over rounds, ratios to the anchors; and the sampling
overhead (uniform, balanced, hard-negative loading timed in turns in one process)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _annbatch
import numpy as np

__all__ = ["report", "sampling_overhead"]

Result = Any  # bench_loader.Result (imported from there would be circular)


def _grouped(results: list[Result]) -> dict[tuple[str, int], list[Result]]:
    groups: dict[tuple[str, int], list[Result]] = {}
    for r in results:
        groups.setdefault((r.name, r.workers), []).append(r)
    return groups


def _median(runs: list[Result], value: Callable[[Result], float]) -> float:
    return statistics.median(value(r) for r in runs)


def report(results: list[Result]) -> None:
    """Per loader and worker count: the median over rounds (range of cells/s), and ratios to
    the fastest annbatch setting and to tiledbsoma-ml (same worker count)."""
    groups = _grouped(results)
    rate = {
        key: statistics.median(r.cells_per_s for r in runs if r.cells)
        for key, runs in groups.items()
        if any(r.cells for r in runs)
    }
    annbatch = max((v for (name, _), v in rate.items() if name in _annbatch.SETTINGS), default=0.0)
    print(
        f"\n{'loader':<26} {'workers':>7} {'cells/s':>9} {'range':>17} {'tokens/s':>11} {'startup s':>9} "
        f"{'RSS MB':>7} {'PSS MB':>7} {'vs annbatch':>11} {'vs tiledbsoma-ml':>16}"
    )
    for (name, workers), runs in groups.items():
        ok = [r for r in runs if r.cells]
        if not ok:
            print(f"{name:<26} {workers:>7} {runs[0].note}")
            continue
        rates = [r.cells_per_s for r in ok]
        spread = f"{min(rates):,.0f}-{max(rates):,.0f}"
        soma = rate.get(("tiledbsoma-ml", workers))
        print(
            f"{name:<26} {workers:>7} {rate[name, workers]:>9,.0f} {spread:>17} "
            f"{_median(ok, lambda r: r.tokens / r.seconds):>11,.0f} {_median(ok, lambda r: r.startup):>9.1f} "
            f"{_median(ok, lambda r: r.rss_mb):>7,.0f} {_median(ok, lambda r: r.pss_mb):>7,.0f} "
            f"{f'{rate[name, workers] / annbatch:.2f}x' if annbatch else '-':>11} "
            f"{f'{rate[name, workers] / soma:.1f}x' if soma else '-':>16}"
        )
    print(
        f"\nmedian of {max(len(r) for r in groups.values())} round(s); tokens: real (unpadded) tokens "
        "for the token stores, non-zero counts for tiledbsoma-ml and annbatch (raw X rows); "
        "annbatch uses its own threads."
    )
    for (name, workers), value in rate.items():
        base = rate.get((name.rsplit("-", 1)[0], workers))
        if name.endswith(("-balanced", "-hardneg")) and base:
            print(f"sampling overhead {name} ({workers} workers): {value / base:.2f}x uniform's cells/s")


def sampling_overhead(
    store: Path, sampling: dict[str, dict[str, str]], *, batch_size: int, batches: int, rounds: int
) -> None:
    """Uniform, balanced and hard-negative loading timed in turns in one process (0 workers):
    on a shared machine load drifts, and interleaved rounds see the same drift; medians reported."""
    from atlasprep.loader import ShardDataset, ShardLoader

    timings: dict[str, list[float]] = {name: [] for name in sampling if name.startswith("atlasprep-arrow")}
    for round_ in range(rounds):
        for name in timings:
            loader = ShardLoader(
                ShardDataset(store, "train", seed=0, **sampling[name]), batch_size=batch_size
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
