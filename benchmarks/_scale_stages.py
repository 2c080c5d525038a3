"""bench_scale.py's stage table: slice (h5ad, zarr), tokenize (rank, bin) and one loader epoch at
a quarter, a half and all of a large demo census, each command in a fresh process started by a
small launcher (``_launch.py``), so each peak RSS is the command's own.

Each output is removed as soon as it is measured, the rank store after its loader epoch: a
million demo cells make a 13 GB h5ad and token stores of 6 GB and more, and a token store needs
its spills beside it while its shards are gathered. Each size takes the same mix of the store's
cells: evenly spaced runs of a hundredth of the store (every fourth run for a quarter, every
second for a half), read whole, so the reads stay contiguous. A prefix (``soma_joinid < N``)
would not: the demo census's first datasets are denser (in the million-cell store the first
250,000 cells average 2,481 stored genes, the rest 1,456-1,511), so a larger prefix adds cheaper
cells. The runs give 1,667, 1,675 and 1,726 (each size's mean is printed). The checks printed at
the end are the issue's targets: time linear in cells (each stage's seconds per cell within 20%
of its smallest size's), slice and loader peak RSS flat (within 15%), and tokenize's RSS growth
per cell against the bytes a cell the README documents for the global shuffle. With ``repeat``
above 1 each stage runs that many times at each size (its output removed between runs), and the
table holds the medians of its times and peaks, with their ranges.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from _launch import launch

__all__ = ["Measured", "run_stages"]

# what tokenize keeps per cell for the global shuffle (README, "Performance and memory")
DOCUMENTED_BYTES_PER_CELL = 50

_EPOCH = """
import sys
from atlasprep.loader import ShardDataset, ShardLoader
n = 0
for batch in ShardLoader(ShardDataset(sys.argv[1], seed=0), batch_size=256):
    n += len(batch["cell_id"])
print(n)
"""


# what each stage leaves that nothing after it reads (the rank store serves the loader epoch)
_DONE_WITH = {
    "slice → h5ad": "slice.h5ad",
    "slice → zarr": "slice.zarr",
    "tokenize rank": "nothing",
    "tokenize bin": "bin",
    "loader epoch (rank)": "rank",
}
# what each stage writes (removed before the same stage runs again)
_OUTPUT = {
    "slice → h5ad": "slice.h5ad",
    "slice → zarr": "slice.zarr",
    "tokenize rank": "rank",
    "loader epoch (rank)": "nothing",
    "tokenize bin": "bin",
}


@dataclass(frozen=True, slots=True)
class Measured:
    stage: str
    cells: int
    seconds: float  # the median of the runs
    peak_rss_mb: float  # the median of the runs
    seconds_range: tuple[float, float] = (0.0, 0.0)
    rss_range: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def of_runs(cls, stage: str, cells: int, walls: list[float], peaks: list[float]) -> Measured:
        return cls(
            stage,
            cells,
            statistics.median(walls),
            statistics.median(peaks),
            (min(walls), max(walls)),
            (min(peaks), max(peaks)),
        )


def alike(share: int, total: int) -> tuple[str, int]:
    """A filter taking every ``share``-th run of ``total // 100`` cells (all cells for 1), and
    how many cells it takes."""
    if share == 1:
        return f"soma_joinid < {total}", total
    run = max(1, total // 100)
    starts = range(0, total, share * run)
    where = " or ".join(f"(soma_joinid >= {a} and soma_joinid < {min(a + run, total)})" for a in starts)
    return where, sum(min(run, total - a) for a in starts)


_MIX = """
import sys
import tiledbsoma
with tiledbsoma.open(sys.argv[1] + "/census_data/homo_sapiens") as experiment:
    nnz = experiment.obs.read(value_filter=sys.argv[2], column_names=["nnz"]).concat()["nnz"]
print(nnz.to_numpy().mean())
"""


def _mean_genes(census: Path, where: str) -> float:
    """The selected cells' mean stored genes (the Census's ``nnz``), read in a child process."""
    done = subprocess.run(
        [sys.executable, "-c", _MIX, str(census), where], capture_output=True, text=True, check=True
    )
    return float(done.stdout)


def _commands(census: Path, where: str, work: Path, dictionaries: Path) -> dict[str, list[str]]:
    atlasprep = [sys.executable, "-m", "atlasprep", "--quiet"]
    source = ["--census-uri", str(census), "--all-data", "--where", where]
    rank = ["--scheme", "rank"]
    if (dictionaries / "token_dictionary_gc104M.json").is_file():
        rank += [
            "--token-dictionary", str(dictionaries / "token_dictionary_gc104M.json"),
            "--gene-medians", str(dictionaries / "gene_median_dictionary_gc104M.json"),
        ]  # fmt: skip
    return {  # in this order: the loader reads the rank store, removed before bin writes its own
        "slice → h5ad": [*atlasprep, "slice", *source, "--out", str(work / "slice.h5ad")],
        "slice → zarr": [*atlasprep, "slice", *source, "--out", str(work / "slice.zarr")],
        "tokenize rank": [*atlasprep, "tokenize", *source, *rank, "--out", str(work / "rank")],
        "loader epoch (rank)": [sys.executable, "-c", _EPOCH, str(work / "rank")],
        "tokenize bin": [*atlasprep, "tokenize", *source, "--scheme", "bin", "--out", str(work / "bin")],
    }


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


# --stages names -> stages of the table
STAGE_NAMES = {
    "slice-h5ad": "slice → h5ad",
    "slice-zarr": "slice → zarr",
    "tokenize-rank": "tokenize rank",
    "loader": "loader epoch (rank)",
    "tokenize-bin": "tokenize bin",
}


def run_stages(
    census: Path,
    total: int,
    work: Path,
    dictionaries: Path,
    stages: list[str] | None = None,
    repeat: int = 1,
) -> list[Measured]:
    """Every stage (or those ``stages`` names) at a quarter, a half and all of ``total`` cells,
    ``repeat`` times each; printed as they finish."""
    unknown = sorted(set(stages or ()) - set(STAGE_NAMES))
    if unknown:
        raise SystemExit(f"unknown stages {unknown}; known: {', '.join(STAGE_NAMES)}")
    chosen = {STAGE_NAMES[name] for name in stages or STAGE_NAMES}
    if "loader epoch (rank)" in chosen:
        chosen.add("tokenize rank")  # (it writes the store the loader reads)
    results = []
    for share in (4, 2, 1):
        where, cells = alike(share, total)
        print(f"{cells:,} cells: {_mean_genes(census, where):,.0f} stored genes a cell", flush=True)
        _remove(work)
        work.mkdir(parents=True)
        for stage, command in _commands(census, where, work, dictionaries).items():
            if stage not in chosen:
                continue
            results.append(_measure(stage, cells, command, work, repeat))
            _remove(work / _DONE_WITH[stage])
    _remove(work)
    return results


def _measure(stage: str, cells: int, command: list[str], work: Path, repeat: int) -> Measured:
    """``command`` run ``repeat`` times from the launcher (its output removed between runs);
    printed."""
    walls, peaks, disk = [], [], []
    for k in range(repeat):
        if k:
            _remove(work / _OUTPUT[stage])
        # the stage before's writes reach the disk first: its writeback is not timed in this one
        # (the rank store's loader epoch ran 3x slower while the slices' 20 GB were flushed)
        os.sync()
        launched = launch(command)
        walls.append(launched.wall)
        peaks.append(launched.peak_rss_mb)
        disk.append(launched.disk_read_mb)
    measured = Measured.of_runs(stage, cells, walls, peaks)
    (fast, slow), (low, high) = measured.seconds_range, measured.rss_range
    spread = (
        f" (median of {repeat}: {fast:.1f}-{slow:.1f} s, {low:,.0f}-{high:,.0f} MB)" if repeat > 1 else ""
    )
    print(
        f"{stage:<22} {cells:>9,} cells {measured.seconds:8.1f} s {cells / measured.seconds:>9,.0f} "
        f"cells/s peak RSS {measured.peak_rss_mb:7,.0f} MB, read from disk {max(disk):,.0f} MB{spread}",
        flush=True,
    )
    return measured


def report(results: list[Measured]) -> None:
    """The table, then each target with its figure."""
    stages = list(dict.fromkeys(r.stage for r in results))
    sizes = sorted({r.cells for r in results})
    at = {(r.stage, r.cells): r for r in results}
    print(f"\n{'stage':<22}" + "".join(f"{n:>26,}" for n in sizes))
    for stage in stages:
        cells = [at[stage, n] for n in sizes]
        row = "".join(
            f"{m.seconds:>8.1f} s {m.cells / m.seconds:>7,.0f}/s {m.peak_rss_mb:>5,.0f} MB" for m in cells
        )
        print(f"{stage:<22}{row}")
    small, middle, big = sizes[0], sizes[len(sizes) // 2], sizes[-1]
    print("\ntargets (smallest size -> largest):")
    for stage in stages:
        a, m, b = at[stage, small], at[stage, middle], at[stage, big]
        per_cell = (b.seconds / big) / (a.seconds / small)
        # the cost of each added cell, from the first half of the sizes and from the second: a
        # fixed start-up (imports, opening the store) makes small runs dearer per cell, not
        # the time less linear
        added = ((b.seconds - m.seconds) / (big - middle)) / ((m.seconds - a.seconds) / (middle - small))
        rss = b.peak_rss_mb / a.peak_rss_mb - 1
        line = (
            f"  {stage:<22} seconds per cell x{per_cell:.2f}, per added cell x{added:.2f} "
            "(linear: within 0.80-1.20)"
        )
        if stage.startswith(("slice", "loader")):
            line += f"; peak RSS {100 * rss:+.1f}% (flat: within 15%)"
        else:
            growth = (b.peak_rss_mb - a.peak_rss_mb) * 2**20 / (big - small)
            line += f"; peak RSS grows {growth:.0f} bytes a cell (documented: {DOCUMENTED_BYTES_PER_CELL})"
        print(line)
