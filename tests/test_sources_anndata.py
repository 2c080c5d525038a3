"""AnnData inputs: real CELLxGENE h5ads and a zipped legacy zarr from ../shared/data."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from conftest import shared_file

from atlasprep.slice import SliceConfig, slice_cells
from atlasprep.sources import AnnDataSource, CellFilter, resolve_filter


def test_cellxgene_h5ad_uses_raw_counts_and_ontology_filters(tmp_path):
    path = shared_file("cellxgene/example_invalid_CL.h5ad")
    source = AnnDataSource([path])
    compiled = source.compile(resolve_filter(CellFilter(tissue=("heart left ventricle",), primary_only=True)))
    positions = source.select(compiled)
    original = ad.read_h5ad(path)
    want = (original.obs["tissue_ontology_term_id"] == "UBERON:0002084") & original.obs["is_primary_data"]
    assert np.array_equal(positions, np.flatnonzero(want.to_numpy()))
    batches = list(source.iter_batches(positions, var_positions=None, batch_size=50))
    source.close()
    assert max(b.n_cells for b in batches) <= 50
    got = np.vstack([b.X.toarray() for b in batches])
    matrix = original.raw.X if original.raw is not None else original.X
    assert np.array_equal(got, matrix[positions].toarray())
    assert [i for b in batches for i in b.cell_ids] == list(original.obs_names[positions])

    out = tmp_path / "lv.h5ad"
    slice_cells(SliceConfig(inputs=(str(path),), filter=CellFilter(tissue=("UBERON:0002084",)), out=out))
    assert ad.read_h5ad(out).n_obs == len(positions)


def test_zipped_legacy_zarr_streams_dense_rows(tmp_path):
    path = shared_file("scrna/10x-10k-subset.zarr.zip")
    source = AnnDataSource([path])
    positions = np.arange(0, 10_000, 7, dtype=np.int64)
    batches = list(source.iter_batches(positions, var_positions=np.array([0, 5, 999]), batch_size=512))
    source.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = zarr.storage.ZipStore(path, mode="r")
        original = ad.read_zarr(store)
    got = np.vstack([b.X.toarray() for b in batches])
    assert np.array_equal(got, np.asarray(original.X)[positions][:, [0, 5, 999]])


def test_two_inputs_union_var_and_prefix_clashing_names(tmp_path):
    rng = np.random.default_rng(0)
    a = ad.AnnData(rng.poisson(1, (5, 3)).astype(np.float32))
    a.var_names = ["ENSG1", "ENSG2", "ENSG3"]
    b = ad.AnnData(rng.poisson(1, (4, 2)).astype(np.float32))
    b.var_names = ["ENSG3", "ENSG4"]
    a.write_h5ad(tmp_path / "a.h5ad")
    with ad.settings.override(zarr_write_format=3, auto_shard_zarr_v3=False):
        b.write_zarr(tmp_path / "b.zarr")
    source = AnnDataSource([tmp_path / "a.h5ad", tmp_path / "b.zarr"])
    assert list(source.var().index) == ["ENSG1", "ENSG2", "ENSG3", "ENSG4"]
    # a batch holds one file's cells (each file has its own storage: dense or sparse, dtype)
    first, second = source.iter_batches(np.arange(9, dtype=np.int64), var_positions=None, batch_size=100)
    source.close()
    X = np.vstack([first.X.toarray(), second.X.toarray()])
    assert (first.n_cells, second.n_cells) == (5, 4)
    assert first.stored_dense  # written dense
    assert second.stored_dense
    assert np.array_equal(X[:5, :3], a.X)
    assert not X[:5, 3].any()
    assert np.array_equal(X[5:, 2:], b.X)
    assert not X[5:, :2].any()
    assert first.cell_ids[0] == "a:0"
    assert second.cell_ids[0] == "b:0"


def test_missing_input_is_a_clear_error(tmp_path):
    from atlasprep.errors import SourceError

    with pytest.raises(SourceError, match="no such file"):
        AnnDataSource([tmp_path / "nope.h5ad"])


def test_batches_keep_within_the_value_budget(tmp_path):
    import pandas as pd
    import scipy.sparse as sp

    from atlasprep.sources.base import NNZ_PER_CELL, plan_chunks

    width = 3 * NNZ_PER_CELL
    dense_rows = sp.random(40, width, density=0.9, format="csr", random_state=1, dtype=np.float32)
    sparse_rows = sp.random(200, width, density=0.01, format="csr", random_state=2, dtype=np.float32)
    X = sp.vstack([sparse_rows, dense_rows, sparse_rows], format="csr")
    X.data = np.ceil(X.data * 10)
    path = tmp_path / "mixed.h5ad"
    ad.AnnData(X=X, obs=pd.DataFrame(index=[f"c{i}" for i in range(X.shape[0])])).write_h5ad(path)
    source = AnnDataSource([path])
    try:
        positions = np.arange(X.shape[0])
        batches = list(source.iter_batches(positions, var_positions=None, batch_size=100))
    finally:
        source.close()
    assert sum(b.n_cells for b in batches) == X.shape[0]
    budget = 100 * NNZ_PER_CELL
    assert all(b.X.nnz <= budget + X.getnnz(axis=1).max() for b in batches)  # at most one cell over
    assert min(b.n_cells for b in batches) < 100  # the dense cells came in smaller batches
    assert (sp.vstack([b.X for b in batches]) != X).nnz == 0
    assert [len(c) for c in plan_chunks(positions[:5], 2)] == [2, 2, 1]


def test_permuted_var_and_a_selection_land_in_sorted_csr_columns(tmp_path):
    """A second file whose var runs in another order, and a var selection: every value lands in
    its union column, rows keep sorted column indices (the rank tokenizer reads them in order)."""
    rng = np.random.default_rng(1)
    a = ad.AnnData(sp.csr_matrix(rng.poisson(1, (6, 4)).astype(np.float32)))
    a.var_names = ["ENSG1", "ENSG2", "ENSG3", "ENSG4"]
    b = ad.AnnData(sp.csr_matrix(rng.poisson(1, (5, 3)).astype(np.float32)))
    b.var_names = ["ENSG4", "ENSG5", "ENSG1"]
    a.write_h5ad(tmp_path / "a.h5ad")
    b.write_h5ad(tmp_path / "b.h5ad")
    source = AnnDataSource([tmp_path / "a.h5ad", tmp_path / "b.h5ad"])
    union = list(source.var().index)
    assert union == ["ENSG1", "ENSG2", "ENSG3", "ENSG4", "ENSG5"]
    want = np.zeros((11, 5), dtype=np.float32)
    want[:6, :4] = a.X.toarray()
    want[6:, [3, 4, 0]] = b.X.toarray()
    for var_positions in (None, np.array([4, 0, 3])):
        batches = list(
            source.iter_batches(np.arange(11, dtype=np.int64), var_positions=var_positions, batch_size=100)
        )
        for batch in batches:
            assert batch.X.has_sorted_indices
        got = np.vstack([batch.X.toarray() for batch in batches])
        assert np.array_equal(got, want if var_positions is None else want[:, var_positions])
    source.close()


def test_read_ahead_keeps_order_passes_errors_and_stops_with_the_consumer():
    import threading
    import time

    from atlasprep.sources.base import read_ahead

    assert list(read_ahead(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("broken file")

    stream = read_ahead(failing())
    assert next(stream) == 1
    with pytest.raises(ValueError, match="broken file"):
        next(stream)

    produced = []

    def endless():
        closed = False
        try:
            i = 0
            while True:
                produced.append(i)
                yield i
                i += 1
        finally:
            closed = True
            produced.append(("closed", closed))

    stream = read_ahead(endless(), depth=1)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    time.sleep(0.3)  # the producer has had time to run ahead as far as it may
    assert len(produced) == 4  # the three taken and one more: one batch ahead, not two
    stream.close()  # the consumer stops: the producer thread ends and closes its generator
    assert ("closed", True) in produced
    assert not any(t.name == "atlasprep-read-ahead" for t in threading.enumerate())


def test_obs_columns_are_read_when_needed_and_join_as_whole_frames(tmp_path):
    """obs is read a column at a time: a filter reads only the columns it names, and the columns
    of several files join exactly as anndata's whole frames do under pd.concat(join="outer")."""
    import pandas as pd

    rng = np.random.default_rng(3)
    a_obs = pd.DataFrame(
        {
            "tissue": pd.Categorical(["lung", "liver", "lung", "blood"]),
            "n_counts": np.array([5.0, 7.0, 1.0, 2.0], dtype=np.float32),
            "is_primary_data": [True, False, True, True],
            "only a": ["x", "y", "z", "w"],
        },
        index=["c0", "c1", "c2", "c3"],
    )
    b_obs = pd.DataFrame(
        {
            "tissue": pd.Categorical(["heart", "lung", "heart"]),
            "n_counts": np.array([3.0, 4.0, 9.0], dtype=np.float32),
            "is_primary_data": [True, True, False],
            "donor_id": pd.array([1, None, 3], dtype="Int64"),
        },
        index=["d0", "d1", "d2"],
    )
    files = []
    for name, obs in (("a", a_obs), ("b", b_obs)):
        adata = ad.AnnData(sp.csr_matrix(rng.poisson(1, (len(obs), 2)).astype(np.float32)), obs=obs)
        adata.write_h5ad(tmp_path / f"{name}.h5ad")
        files.append(tmp_path / f"{name}.h5ad")
    whole = pd.concat(
        [ad.read_h5ad(f).obs.reset_index(drop=True) for f in files], ignore_index=True, join="outer"
    )
    source = AnnDataSource(files)
    try:
        assert source.obs_columns == tuple(whole.columns)
        assert source.n_cells == 7
        flt = CellFilter(primary_only=True, where="n_counts > 2 and `only a` != 'z'")
        positions = source.select(source.compile(resolve_filter(flt)))
        want = whole["is_primary_data"].to_numpy(bool) & whole.eval(
            "n_counts > 2 and `only a` != 'z'", engine="python"
        ).to_numpy(bool)
        assert np.array_equal(positions, np.flatnonzero(want))
        assert set(source._obs._read) == {"is_primary_data", "n_counts", "only a"}  # nothing else read
        got = source.obs_values(np.arange(7), list(whole.columns))
        pd.testing.assert_frame_equal(got, whole)
        first, second = source.iter_batches(
            np.array([1, 5]), var_positions=None, batch_size=10, obs_columns=["only a"]
        )
    finally:
        source.close()
    assert first.obs.column("only a").to_pylist() == ["y"]  # a batch holds one file's cells
    assert second.obs.column("only a").to_pylist() == [None]  # outer join: b has no such column
