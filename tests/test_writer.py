from __future__ import annotations

import os

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.sparse as sp

import atlasprep.slice.writer as slice_writer
from atlasprep.errors import InputFormatError, OutputExistsError, UsageError
from atlasprep.slice import AnnDataWriter
from atlasprep.slice.writer import os_error_at, require_free_space


def _batches(n_cells: int, n_genes: int, batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = sp.random(n_cells, n_genes, density=0.2, format="csr", dtype=np.float32, random_state=rng)
    X.data = np.ceil(X.data * 10)
    labels = rng.choice(["T cell", "B cell", "Peyer's patch B cell", None], size=n_cells)
    for start in range(0, n_cells, batch):
        stop = min(start + batch, n_cells)
        obs = pa.table(
            {
                # each batch carries its own dictionary, as SOMA reads do
                "cell_type": pa.array(labels[start:stop]).dictionary_encode(),
                "nnz": pa.array(np.diff(X.indptr)[start:stop].astype(np.int64)),
                "is_primary_data": pa.array(np.arange(start, stop) % 3 != 0),
            }
        )
        yield np.arange(start, stop).astype(str), obs, X[start:stop]
    return X, labels


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_batches_round_trip_through_anndata(tmp_path, suffix):
    var = pd.DataFrame(
        {"feature_name": [f"G{i}" for i in range(30)]}, index=[f"ENSG{i:011d}" for i in range(30)]
    )
    out = tmp_path / f"slice{suffix}"
    writer = AnnDataWriter(out, var=var)
    rows = list(_batches(257, 30, batch=64))
    for ids, obs, X in rows:
        writer.append(ids, obs, X)
    writer.finish({"atlasprep": {"seed": 3, "filters_given": {"tissue": ["lung"]}}})
    adata = ad.read_h5ad(out) if suffix == ".h5ad" else ad.read_zarr(out)
    expected = sp.vstack([X for _, _, X in rows]).toarray()
    assert np.array_equal(adata.X.toarray(), expected)
    assert list(adata.obs_names) == [str(i) for i in range(257)]
    assert isinstance(adata.obs["cell_type"].dtype, pd.CategoricalDtype)
    labels = pa.concat_arrays([obs["cell_type"].combine_chunks().cast(pa.string()) for _, obs, _ in rows])
    assert (
        adata.obs["cell_type"].astype(object).where(adata.obs["cell_type"].notna(), None).tolist()
        == labels.to_pylist()
    )
    assert adata.obs["is_primary_data"].dtype == bool
    assert adata.uns["atlasprep"]["seed"] == 3
    assert list(adata.var_names) == list(var.index)
    assert not list(tmp_path.glob("*.tmp-*"))
    assert not list(tmp_path.glob("*.arrow"))


def test_refuses_existing_output_and_bad_suffix(tmp_path):
    var = pd.DataFrame(index=["ENSG00000000003"])
    (tmp_path / "x.h5ad").write_bytes(b"")
    with pytest.raises(OutputExistsError, match=r"^out .*x\.h5ad exists; set overwrite to replace it"):
        AnnDataWriter(tmp_path / "x.h5ad", var=var)
    with pytest.raises(UsageError, match=r"\.h5ad or \.zarr"):
        AnnDataWriter(tmp_path / "x.csv", var=var)


def test_abort_leaves_nothing_and_stale_temps_are_swept(tmp_path):
    var = pd.DataFrame(index=["ENSG00000000003"])
    out = tmp_path / "x.zarr"
    # a leftover of a crashed run whose process is gone
    dead = tmp_path / "x.zarr.tmp-999999999"
    dead.mkdir()
    dead_spill = tmp_path / "x.zarr.tmp-999999999.obs.arrow"  # its obs spill: one naming, one sweep
    dead_spill.write_bytes(b"half")
    # an output being replaced, moved aside, whose removal was cut short
    dead_old = tmp_path / ".x.zarr.old.tmp-999999999"
    (dead_old / "X").mkdir(parents=True)
    writer = AnnDataWriter(out, var=var)
    assert not dead.exists()
    assert not dead_spill.exists()
    assert not dead_old.exists()
    writer.append(np.array(["a"]), pa.table({"n": [1]}), sp.csr_matrix(np.ones((1, 1), dtype=np.float32)))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"x.zarr.tmp-{os.getpid()}",
        f"x.zarr.tmp-{os.getpid()}.obs.arrow",
    ]
    writer.abort()
    assert not out.exists()
    assert os.listdir(tmp_path) == []


def test_empty_slice_is_a_valid_anndata(tmp_path):
    var = pd.DataFrame(index=["ENSG00000000003", "ENSG00000000005"])
    out = tmp_path / "empty.h5ad"
    AnnDataWriter(out, var=var).finish({"atlasprep": {"n_cells": 0}})
    adata = ad.read_h5ad(out)
    assert adata.shape == (0, 2)


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_negative_or_nan_rows_are_refused_and_abort_leaves_nothing(tmp_path, suffix):
    var = pd.DataFrame(index=["ENSG00000000003", "ENSG00000000005"])
    writer = AnnDataWriter(tmp_path / f"x{suffix}", var=var, counts="raw.X of in.h5ad")
    good = sp.csr_matrix(np.array([[1, 0], [2, 3]], dtype=np.float32))
    writer.append(np.array(["a", "b"]), pa.table({"n": [1, 2]}), good)
    bad = sp.csr_matrix(np.array([[-1, np.nan]], dtype=np.float32))
    with pytest.raises(InputFormatError, match=r"raw\.X of in\.h5ad holds 1 negative and 1 non-finite"):
        writer.append(np.array(["c"]), pa.table({"n": [3]}), bad)
    writer.abort()
    assert os.listdir(tmp_path) == []
    # float64 values beyond float32 become inf when stored: refused as well
    huge = sp.csr_matrix(np.array([[1e39, 1.0]]))
    writer = AnnDataWriter(tmp_path / f"y{suffix}", var=var)
    with pytest.raises(InputFormatError, match=r"X \(stored as float32\) holds 1 non-finite"):
        writer.append(np.array(["d"]), pa.table({}), huge)
    writer.abort()
    assert os.listdir(tmp_path) == []


def test_os_errors_name_the_output_and_a_full_disk_is_refused_before_writing(tmp_path, monkeypatch):
    out = tmp_path / "x.h5ad"
    h5py_style = OSError(
        28, "Unable to synchronously write (file write failed: errno = 28, error message = ...)"
    )
    named = os_error_at(h5py_style, out)
    assert (named.errno, named.strerror, named.filename) == (28, "No space left on device", str(out))
    arrow_style = OSError("Failed to open local file 'x.arrow.tmp-1'. Detail: [errno 13] Permission denied")
    assert os_error_at(arrow_style, out).errno == 13
    assert os_error_at(RuntimeError("Can't decrement id ref count (errno = 28)"), out).errno == 28
    assert os_error_at(RuntimeError("a bug"), out) is None
    ours = OSError(28, "No space left on device (about 9 MiB needed)", str(tmp_path / "x.h5ad.tmp-1"))
    assert os_error_at(ours, out).strerror == ours.strerror

    class Usage:
        free = 2**20

    monkeypatch.setattr(slice_writer.shutil, "disk_usage", lambda _path: Usage)
    with pytest.raises(OSError, match="No space left on device") as info:
        require_free_space(out, 10)
    assert info.value.errno == 28
    writer = AnnDataWriter(out, var=pd.DataFrame(index=["ENSG00000000003"]))
    with pytest.raises(OSError, match="MiB free"):
        writer.append(np.array(["a"]), pa.table({}), sp.csr_matrix(np.ones((1, 1), dtype=np.float32)))
    writer.abort()
    assert os.listdir(tmp_path) == []


def test_a_killed_process_not_yet_reaped_is_gone():
    """A zombie (killed, its parent not yet waiting on it) is no owner of its temporary files:
    a re-run right after a kill sweeps them (they outlived the finished re-run)."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    from atlasprep._io import is_stale_temp, pid_alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not pid_alive(child.pid)
        assert is_stale_temp(f"x.h5ad.tmp-{child.pid}")
    finally:
        child.wait()
    assert pid_alive(os.getpid())
    assert not is_stale_temp(f"x.h5ad.tmp-{os.getpid()}")
