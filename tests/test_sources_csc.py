"""An AnnData file whose counts are stored CSC (as R's dgCMatrix converts, or after a transpose)
reads as the same rows as its CSR twin: a CSR copy made on disk, removed when the source closes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import assert_clean_error
from typer.testing import CliRunner

from atlasprep.cli import app
from atlasprep.shard.store import read_manifest
from atlasprep.sources import AnnDataSource, CellFilter, SourceSpec, _csc
from atlasprep.tokenize.api import TokenizeConfig, tokenize_cells


def _counts(seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((300, 90)) < 0.15) * rng.integers(1, 10, (300, 90))
    dense[:, 7] = rng.integers(1, 5, 300)  # one column longer than a step
    dense[12] = 0  # a cell without values
    X = sp.csr_matrix(dense.astype(np.float32))
    X.data[::13] = 0  # stored zeros stay stored
    return X


def _write(path: Path, X: sp.spmatrix) -> Path:
    adata = ad.AnnData(X)
    adata.var_names = [f"ENSG{i:011d}" for i in range(X.shape[1])]
    adata.obs_names = [f"c{i}" for i in range(X.shape[0])]
    if path.suffix == ".zarr":
        with ad.settings.override(zarr_write_format=3, auto_shard_zarr_v3=False):
            adata.write_zarr(path)
    else:
        adata.write_h5ad(path)
    return path


def _rows(path: Path, positions: np.ndarray, batch_size: int) -> sp.csr_matrix:
    source = AnnDataSource([str(path)])
    try:
        batches = source.iter_batches(positions, var_positions=None, batch_size=batch_size, obs_columns=[])
        return sp.vstack([b.X for b in batches], format="csr")
    finally:
        source.close()


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_csc_rows_are_the_csr_rows(tmp_path, monkeypatch, suffix):
    monkeypatch.setattr(_csc, "_STEP", 37)  # many steps, and a column longer than one
    X = _counts()
    csr = _write(tmp_path / f"csr{suffix}", X)
    csc = _write(tmp_path / f"csc{suffix}", X.tocsc())
    positions = np.unique(np.r_[np.arange(0, 300, 4), np.arange(100, 140)])  # runs and gaps
    want, got = _rows(csr, positions, 23), _rows(csc, positions, 23)
    assert got.nnz == want.nnz
    assert (got.data == 0).sum() > 10  # the stored zeros came through
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    assert not list(Path(tempfile.gettempdir()).glob("atlasprep-csr-*"))  # the copy is gone


def test_a_csc_input_tokenizes_as_its_csr_twin(tmp_path):
    X = _counts(1)
    stores = {}
    for name, matrix in (("csr", X), ("csc", X.tocsc())):
        path = _write(tmp_path / f"{name}.h5ad", matrix)
        stores[name] = tmp_path / f"{name}-store"
        tokenize_cells(
            TokenizeConfig(
                source=SourceSpec(inputs=(str(path),), filter=CellFilter(primary_only=False)),
                out=stores[name],
                obs_columns=(),
            )
        )
    shards = [{s["path"]: s["sha256"] for s in read_manifest(stores[n])["shards"]} for n in ("csr", "csc")]
    assert shards[0] == shards[1]


def test_a_row_index_beyond_the_rows_is_one_line(tmp_path):
    path = _write(tmp_path / "bad.h5ad", _counts().tocsc())
    with h5py.File(path, "r+") as handle:
        indices = handle["X/indices"]
        indices[5] = 10_000
    result = CliRunner().invoke(app, ["tokenize", str(path), "--all-data", "--out", str(tmp_path / "out")])
    assert_clean_error(result, contains="row index outside")
