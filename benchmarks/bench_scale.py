"""Scale: every stage at a quarter, a half and all of a large demo census; or the demo recipe
locally and on Dask (N workers), with the speed-up over local.

    python benchmarks/bench_scale.py --cells 1000000 [--repeat 3]   # the stage table (census built, cached)
    python benchmarks/bench_scale.py --executor local --cells 24000 [--repeat 1]
    python benchmarks/bench_scale.py --executor dask --workers 1 2 4 8 [--cells 200000]
    python benchmarks/bench_scale.py --executor dask --workers 1 2 --cells 100000 \
        --census-uri benchmarks/_work/census-100000   # the recipe on a larger Census-layout store
    python benchmarks/bench_scale.py --executor dask --workers 2 --set tokenize.scheme=bin \
        --set tokenize.n_hvg=2000     # the HVG passes on the workers too

Without ``--executor``: a Census-layout demo store of ``--cells`` cells (built once under
``benchmarks/_work``), then slice (h5ad, zarr), tokenize (rank, bin) and one loader epoch at
``--cells`` / 4, / 2 and all of it, each command in a fresh process from a small launcher:
seconds, cells/s and peak RSS, and the targets (see ``_scale_stages.py``).

With ``--executor``, each run is ``atlasprep run recipes/demo.toml --out <fresh dir>`` in a
subprocess (start-up, LocalCluster start-up and the manifest included); the Dask runs
map-reduce the corpus passes (gene-median sketches, context values; HVG moments with
``n_hvg``) over ranges of the cell index, spread the encode pass over the same ranges, and
write each shard on a worker. Every run's store is checked to be byte-identical to the local
one (manifest and shard checksums).
With ``--executor local`` only the local run is timed. A speed-up needs cores: on a 2-core
machine 2 workers compete with the driver and each other, so the figure there shows the
overhead of the cluster more than its gain.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RECIPE = HERE.parent / "recipes" / "demo.toml"


def run(
    out: Path, extra: list[str], cells: int, settings: Sequence[str] = (), recipe: Path = RECIPE
) -> float:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "atlasprep", "--quiet", "run", str(recipe), "--out", str(out)]
    command += ["--set", f"source.max_cells={cells}", *extra]
    for setting in settings:
        command += ["--set", setting]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, default=24_000, help="the census's, or the recipe's max_cells")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--executor", choices=["local", "dask"], default=None, help="the recipe runs (else: the stage table)"
    )
    parser.add_argument(
        "--dictionaries", type=Path, default=HERE.parents[1] / "shared" / "data" / "geneformer"
    )
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="Dask: LocalClusters of these sizes"
    )
    parser.add_argument(
        "--census-uri",
        type=Path,
        default=None,
        help="run the recipe on this Census-layout store instead of the demo atlas (e.g. a census "
        "bench_loader.py built under benchmarks/_work), so --cells can exceed the demo's 24,000",
    )
    parser.add_argument(
        "--set", dest="settings", action="append", default=[], help="KEY=VALUE, passed to atlasprep run"
    )
    parser.add_argument(
        "--stages",
        nargs="+",
        default=None,
        help="only these stages of the table (slice-h5ad slice-zarr tokenize-rank loader tokenize-bin; "
        "the loader reads tokenize-rank's store, so it runs that too)",
    )
    opts = parser.parse_args()
    if opts.executor is None:
        import bench_loader
        from _scale_stages import report, run_stages

        census = bench_loader.census_for(opts.cells, HERE / "_work")
        work = HERE / "_work" / "scale-stages"
        report(
            run_stages(census, opts.cells, work, opts.dictionaries, stages=opts.stages, repeat=opts.repeat)
        )
        return
    work = HERE / "_work" / "scale"
    recipe = _recipe(work, opts.census_uri) if opts.census_uri else RECIPE
    # build the demo atlas (cached) outside the timings
    run(work / "warm", ["--set", "source.max_cells=100"], 100, recipe=recipe)
    setups: dict[str, list[str]] = {"local": []}
    if opts.executor == "dask":
        for n in opts.workers:
            setups[f"dask, {n} worker{'s' * (n > 1)}"] = ["--executor", "dask", "--workers", str(n)]
    times: dict[str, float] = {}
    for label, extra in setups.items():
        out = work / label.replace(" ", "").replace(",", "-")
        times[label] = min(run(out, extra, opts.cells, opts.settings, recipe) for _ in range(opts.repeat))
        if label != "local":
            a = (work / "local" / "tokens" / "manifest.json").read_bytes()
            b = (out / "tokens" / "manifest.json").read_bytes()
            assert a == b, f"{label}: the store differs from the local one"
    n = json.loads((work / "local" / "tokens" / "manifest.json").read_text())["n_cells"]
    settings = "".join(f", {s}" for s in opts.settings)
    print(f"demo recipe{settings}, {n:,} cells (best of {opts.repeat}); stores byte-identical to local\n")
    print(f"{'executor':<18} {'wall s':>8} {'cells/s':>9} {'speed-up':>9}")
    for label, seconds in times.items():
        print(f"{label:<18} {seconds:>8.1f} {n / seconds:>9,.0f} {times['local'] / seconds:>8.2f}x")


def _recipe(work: Path, census_uri: Path) -> Path:
    """The demo recipe with its source swapped for a local Census-layout store."""
    text, n = re.subn(
        r'^census = "demo".*$',
        f"census_uri = {json.dumps(str(census_uri.resolve()))}",
        RECIPE.read_text(),
        flags=re.M,
    )
    if n != 1:
        raise SystemExit(f'{RECIPE}: expected one census = "demo" line to replace')
    work.mkdir(parents=True, exist_ok=True)
    path = work / "recipe.toml"
    path.write_text(text)
    return path


if __name__ == "__main__":
    main()
