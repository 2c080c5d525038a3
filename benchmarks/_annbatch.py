"""scverse annbatch as a loader anchor for ``bench_loader.py``: the same cells' raw counts.

annbatch needs Python 3.12, so it runs from a virtual environment beside the project's, found as
``--annbatch-python``, else ``$ATLASPREP_ANNBATCH_PYTHON``, else ``../venv-annbatch/bin/python``
(beside the checkout). Make one with::

    /root/.pyenv/versions/3.12.1/bin/python -m venv ../venv-annbatch
    ../venv-annbatch/bin/pip install annbatch==0.3.1 zarrs

Absent, the benchmark says so and goes on. The raw counts of the census's first ``--cells``
cells (``X/raw``, all genes) are exported once from the project's environment (TileDB-SOMA)
as CSR arrays, then written by annbatch's own ``write_sharded`` (sharded Zarr v3, its default
chunking and lz4) in its environment; kept under ``--work`` for later runs. The Loader runs
with ``shuffle=True`` and its default settings (``chunk_size=512, preload_nchunks=32``) and
with its README's (``chunk_size=32, preload_nchunks=256``), at the benchmark's batch size,
``preload_to_gpu=False``, and zarrs' codec pipeline when installed (the README's advice for
local disks). It uses its own threads, so it runs without DataLoader workers (its README
advises against them). Its "tokens" are the non-zero counts of each batch, counted in numpy.

This module is imported by ``bench_loader.py`` in both environments: numpy and the standard
library only at the top.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from _epochs import epochs

HERE = Path(__file__).resolve().parent
DEFAULT_PYTHON = HERE.parents[1] / "venv-annbatch" / "bin" / "python"
ENV = "ATLASPREP_ANNBATCH_PYTHON"

# run name -> Loader settings
SETTINGS: dict[str, dict[str, int]] = {
    "annbatch-default": {"chunk_size": 512, "preload_nchunks": 32},
    "annbatch-readme": {"chunk_size": 32, "preload_nchunks": 256},
}


def find_python(given: str | None) -> tuple[str | None, str]:
    """(the annbatch environment's python, its annbatch version) or (None, why it is absent)."""
    python = given or os.environ.get(ENV) or str(DEFAULT_PYTHON)
    if not Path(python).exists():
        return None, f"no annbatch environment at {python} (give --annbatch-python or ${ENV})"
    probe = subprocess.run(
        [python, "-c", "import annbatch; print(annbatch.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode:
        return None, f"{python} cannot import annbatch"
    return python, probe.stdout.strip()


def export_raw(census: Path, cells: int, work: Path) -> Path:
    """The raw counts of cells ``soma_joinid < cells`` as CSR ``.npy`` files (project environment)."""
    import scipy.sparse as sp
    import tiledbsoma as soma

    out = work / f"raw-{census.name}-{cells}"
    if (out / "shape.npy").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    print(f"exporting the raw counts of {cells:,} cells for annbatch …", flush=True)
    uri = str(census / "census_data" / "homo_sapiens")
    blocks = []
    with soma.Experiment.open(uri) as experiment:
        matrix = experiment.ms["RNA"].X["raw"]
        n_genes = int(matrix.shape[1])
        for a in range(0, cells, 20_000):
            b = min(cells, a + 20_000)
            table = matrix.read(coords=(slice(a, b - 1),)).tables().concat()
            rows = table["soma_dim_0"].to_numpy() - a
            columns = table["soma_dim_1"].to_numpy()
            counts = table["soma_data"].to_numpy().astype(np.float32)
            block = sp.csr_matrix((counts, (rows, columns)), shape=(b - a, n_genes))
            block.sort_indices()
            blocks.append(block)
    total = sum(block.nnz for block in blocks)
    data = np.lib.format.open_memmap(out / "data.npy", mode="w+", dtype=np.float32, shape=(total,))
    indices = np.lib.format.open_memmap(out / "indices.npy", mode="w+", dtype=np.int32, shape=(total,))
    indptr, at = [np.zeros(1, dtype=np.int64)], 0
    while blocks:  # each block written, then dropped: memory holds the counts once
        block = blocks.pop(0)
        data[at : at + block.nnz], indices[at : at + block.nnz] = block.data, block.indices
        indptr.append(block.indptr[1:].astype(np.int64) + at)
        at += block.nnz
    data.flush()
    indices.flush()
    np.save(out / "indptr.npy", np.concatenate(indptr))
    np.save(out / "shape.npy", np.asarray([cells, n_genes]))
    return out


def write_store(python: str, raw: Path) -> Path:
    """annbatch's sharded Zarr of the exported counts (written in the annbatch environment)."""
    out = raw.with_name(raw.name + ".annbatch.zarr")
    if (out / "zarr.json").exists():
        return out
    print(f"writing {out.name} with annbatch.write_sharded …", flush=True)
    started = time.perf_counter()
    subprocess.run([python, __file__, "--write", str(raw), str(out)], check=True)
    print(f"  {time.perf_counter() - started:.0f} s", flush=True)
    return out


def _write(raw: Path, out: Path) -> None:
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp
    import zarr
    from annbatch import write_sharded

    parts = [np.load(raw / f"{name}.npy", mmap_mode="r") for name in ("data", "indices", "indptr")]
    shape = tuple(int(n) for n in np.load(raw / "shape.npy"))
    adata = ad.AnnData(
        X=sp.csr_matrix(tuple(parts), shape=shape),
        obs=pd.DataFrame(index=[str(i) for i in range(shape[0])]),
        var=pd.DataFrame(index=[f"g{j}" for j in range(shape[1])]),
    )
    write_sharded(zarr.open_group(str(out), mode="w"), adata)


def load(run: Any) -> Iterator[tuple[int, int]]:
    """annbatch's Loader over the store (``run.store``), ``run.name``'s settings (annbatch environment)."""
    import anndata as ad
    import zarr
    from annbatch import Loader

    try:
        import zarrs  # noqa: F401

        zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"})
    except ImportError:
        pass
    matrix = ad.io.sparse_dataset(zarr.open_group(run.store, mode="r")["X"])
    loader = Loader(
        batch_size=run.batch_size,
        shuffle=True,
        rng=np.random.default_rng(0),
        preload_to_gpu=False,
        **SETTINGS[run.name],
    ).add_dataset(matrix)
    for batch in epochs(lambda _: loader):  # its sampler reshuffles at each pass
        x = batch["X"]
        yield x.shape[0], int(np.count_nonzero(x.data))


if __name__ == "__main__" and sys.argv[1:2] == ["--write"]:
    _write(Path(sys.argv[2]), Path(sys.argv[3]))
