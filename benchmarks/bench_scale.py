"""The demo recipe locally and on Dask (1 and 2 workers), in one run: wall time and speed-up.

    python benchmarks/bench_scale.py [--cells 24000] [--repeat 1]

Each run is ``atlasprep run recipes/demo.toml --out <fresh dir>`` in a subprocess (start-up,
LocalCluster start-up and shard assembly included); the Dask runs spread tokenize's encode
pass over ranges of the cell index. Every run's store is checked to be byte-identical to the
local one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECIPE = HERE.parent / "recipes" / "demo.toml"


def run(out: Path, extra: list[str], cells: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "atlasprep", "--quiet", "run", str(RECIPE), "--out", str(out)]
    command += ["--set", f"source.max_cells={cells}", *extra]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, default=24_000, help="max_cells of the demo recipe")
    parser.add_argument("--repeat", type=int, default=1)
    opts = parser.parse_args()
    work = HERE / "_work" / "scale"
    # build the demo atlas (cached) outside the timings
    run(work / "warm", ["--set", "source.max_cells=100"], 100)
    setups = {
        "local": [],
        "dask, 1 worker": ["--executor", "dask", "--workers", "1"],
        "dask, 2 workers": ["--executor", "dask", "--workers", "2"],
    }
    times: dict[str, float] = {}
    for label, extra in setups.items():
        out = work / label.replace(" ", "").replace(",", "-")
        times[label] = min(run(out, extra, opts.cells) for _ in range(opts.repeat))
        if label != "local":
            a = (work / "local" / "tokens" / "manifest.json").read_bytes()
            b = (out / "tokens" / "manifest.json").read_bytes()
            assert a == b, f"{label}: the store differs from the local one"
    n = json.loads((work / "local" / "tokens" / "manifest.json").read_text())["n_cells"]
    print(f"demo recipe, {n:,} cells (best of {opts.repeat}); stores byte-identical to local\n")
    print(f"{'executor':<18} {'wall s':>8} {'cells/s':>9} {'speed-up':>9}")
    for label, seconds in times.items():
        print(f"{label:<18} {seconds:>8.1f} {n / seconds:>9,.0f} {times['local'] / seconds:>8.2f}x")


if __name__ == "__main__":
    main()
