"""Build the demo atlas: into a sibling temp dir, batch by batch, then rename into place."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from atlasprep._cache import cache_dir, note_written
from atlasprep._io import TempOutput, sweep_stale_temps
from atlasprep.demo._catalog import catalog, gene_universe
from atlasprep.demo._expression import TILE, CountsGenerator, expression_model
from atlasprep.demo._info import info_tables, var_table
from atlasprep.demo._plan import plan_cells
from atlasprep.demo._schema import OBS_FIELDS, arrow_schema
from atlasprep.demo._spec import DEMO_VERSION
from atlasprep.demo._write import CellStats, CensusWriter, obs_table, x_batch
from atlasprep.errors import OutputExistsError, UsageError

__all__ = ["DEFAULT_BATCH_SIZE", "DEMO_N_CELLS", "build_census", "demo_census_uri"]

log = logging.getLogger("atlasprep.demo")

DEMO_N_CELLS = 24_000
DEFAULT_BATCH_SIZE = 4 * TILE  # cells per obs/X write (one TileDB fragment each)
MAX_VALUES_PER_BATCH = 12_000_000  # X values per write: ~250 MB in Arrow, as much again in TileDB

Progress = Callable[[int, int], None]


def build_census(
    uri: str | os.PathLike[str],
    *,
    n_cells: int = DEMO_N_CELLS,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
) -> Path:
    """Build the demo atlas as a Census-layout SOMA collection at the local path ``uri``.

    The same ``(n_cells, seed)`` gives the same obs, var and X whatever ``batch_size`` (cells
    per write, rounded up to whole 2,048-cell X tile rows; dense cells end a batch sooner, so
    memory stays near 1.5 GB at any size). The store appears at ``uri`` only
    when complete: it is built in ``<uri>.tmp-<pid>`` and renamed. ``progress`` is called with
    (cells written, n_cells) after every batch.
    """
    path = Path(os.fspath(uri))
    if "://" in str(uri):
        raise UsageError(f"the demo atlas is built on a local path, not {uri}")
    if path.exists():
        raise OutputExistsError(f"{path} exists; remove it or choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    output = TempOutput.begin(path)
    try:
        _build(
            output.tmp,
            n_cells=n_cells,
            seed=seed,
            tile_rows_per_batch=max(1, -(-batch_size // TILE)),
            progress=progress,
        )
        try:
            output.commit(replace=False)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise OutputExistsError(f"{path} appeared while the demo atlas was being built") from None
            raise
    except BaseException:
        output.discard()
        raise
    log.info(
        "built the demo atlas (%d cells, seed %d) at %s in %.1f s",
        n_cells,
        seed,
        path,
        time.perf_counter() - started,
    )
    return path


def _build(
    tmp: Path, *, n_cells: int, seed: int, tile_rows_per_batch: int, progress: Progress | None
) -> None:
    cat = catalog()
    genes = gene_universe()
    model = expression_model()
    plan = plan_cells(cat, n_cells, seed)
    obs_schema = arrow_schema(OBS_FIELDS, {name: len(c.vocabulary) for name, c in cat.columns.items()})
    n_measured_vars = model.measured.sum(axis=1).astype(np.int64)
    generator = CountsGenerator(plan, model)
    writer = CensusWriter(tmp, n_cells=n_cells, n_var=len(genes), obs_schema=obs_schema)
    var_nnz = np.zeros(len(genes), dtype=np.int64)
    n_tile_rows = -(-n_cells // TILE)
    try:
        tile_row = 0
        while tile_row < n_tile_rows:
            start = tile_row * TILE
            x: list[pa.RecordBatch] = []
            stats: list[CellStats] = []
            # a batch ends at its cell count, or earlier at its value budget (Smart-seq2 cells
            # carry several times the values of 10x cells)
            while tile_row < n_tile_rows and len(x) < tile_rows_per_batch:
                if sum(b.num_rows for b in x) >= MAX_VALUES_PER_BATCH:
                    break
                counts = generator.tile_row(tile_row)
                x.append(x_batch(counts, tile_row * TILE))
                stats.append(CellStats.of(counts))
                var_nnz += np.bincount(counts.cols, minlength=len(genes))
                tile_row += 1
            stop = start + sum(len(s.nnz) for s in stats)
            obs = obs_table(
                cat,
                plan.rows(start, stop),
                CellStats.concat(stats),
                seed=seed,
                n_measured_vars=n_measured_vars,
                schema=obs_schema,
            )
            writer.write_batch(obs, x)
            log.debug("demo atlas: cells %d-%d, %d values", start, stop - 1, sum(b.num_rows for b in x))
            if progress is not None:
                progress(stop, n_cells)
        everything = plan.rows(0, n_cells)
        cells_per_dataset = np.bincount(everything.dataset, minlength=len(cat.dataset_ids)).astype(np.int64)
        writer.finish(
            var=var_table(genes, var_nnz, cells_per_dataset @ model.measured.astype(np.int64)),
            presence=model.measured,
            info=info_tables(cat, plan, cells_per_dataset),
        )
    finally:
        writer.close()


def demo_census_uri(*, progress: Progress | None = None) -> Path:
    """The demo atlas in the cache (``cache_dir()/demo-census-<DEMO_VERSION>``), built on first use.

    Concurrent callers (pytest-xdist workers, two shells) wait on a lock file and find it built;
    a ``.tmp-*`` left by a crashed build is removed.
    """
    cache = cache_dir()
    path = cache / f"demo-census-{DEMO_VERSION}"
    if path.is_dir():
        return path
    with open(cache / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if path.is_dir():
                return path  # another process built it while we waited
            sweep_stale_temps(path)
            log.info(
                "building the demo atlas (%d cells) at %s; this happens once per version", DEMO_N_CELLS, path
            )
            build_census(path, n_cells=DEMO_N_CELLS, progress=progress)
            note_written(path)
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(lock, fcntl.LOCK_UN)
    return path
