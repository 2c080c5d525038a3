"""AnnData inputs: real CELLxGENE h5ads and a zipped legacy zarr from ../shared/data, and damaged ones."""

from __future__ import annotations

import shutil
import warnings

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import zarr
from conftest import assert_clean_error, shared_file
from typer.testing import CliRunner

from atlasprep.cli import app
from atlasprep.shard import read_manifest, read_shard
from atlasprep.slice import SliceConfig, slice_cells
from atlasprep.sources import AnnDataSource, CellFilter, SourceSpec, resolve_filter


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
    slice_cells(
        SliceConfig(
            source=SourceSpec(inputs=(str(path),), filter=CellFilter(tissue=("UBERON:0002084",))), out=out
        )
    )
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


def test_one_file_with_repeated_gene_ids_slices_and_tokenizes(tmp_path):
    """One input's var as it is, repeated IDs too (symbols often repeat): every gene counts as
    measured, and a build goes through (the presence of several files needs unique IDs, one
    file does not)."""
    rng = np.random.default_rng(0)
    adata = ad.AnnData(sp.csr_matrix(rng.poisson(1, (30, 4)).astype(np.float32)))
    adata.var_names = ["Gm1", "Actb", "Gm1", "Cd4"]
    adata.obs_names = [f"c{i}" for i in range(30)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata's "var_names are not unique"
        adata.write_h5ad(tmp_path / "dup.h5ad")
    source = AnnDataSource([tmp_path / "dup.h5ad"])
    files, present = source.presence()
    source.close()
    assert files == (str(tmp_path / "dup.h5ad"),)
    assert present.shape == (1, 4)
    assert present.all()
    runner = CliRunner()
    for args in (
        ["slice", "--input", str(tmp_path / "dup.h5ad"), "--all-data", "--out", str(tmp_path / "s.h5ad")],
        [
            "tokenize",
            "--input",
            str(tmp_path / "dup.h5ad"),
            "--scheme",
            "raw",
            "--all-data",
            "--out",
            str(tmp_path / "t"),
        ],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sliced = ad.read_h5ad(tmp_path / "s.h5ad")
    assert list(sliced.var_names) == ["Gm1", "Actb", "Gm1", "Cd4"]
    assert (sliced.X != adata.X).nnz == 0


def test_shared_legacy_zarr_with_repeated_symbols_slices_whole(tmp_path):
    path = shared_file("scrna/10x-10k-subset.zarr.zip")
    result = CliRunner().invoke(
        app, ["slice", "--input", str(path), "--all-data", "--out", str(tmp_path / "all.h5ad")]
    )
    assert result.exit_code == 0, result.output
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata's "Variable names are not unique"
        assert ad.read_h5ad(tmp_path / "all.h5ad", backed="r").shape == (10_000, 1_000)


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
    of several files join exactly as ``anndata.concat(join="outer")`` joins whole obs frames."""
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
    whole = ad.concat([ad.read_h5ad(f) for f in files], join="outer").obs.reset_index(drop=True)
    assert isinstance(whole["tissue"].dtype, pd.CategoricalDtype)  # (where pd.concat gives text)
    source = AnnDataSource(files)
    try:
        assert source.obs_columns == tuple(whole.columns)
        assert source.n_cells == 7
        flt = CellFilter(primary_only=True, where="n_counts > 2 and `only a` != 'z'")
        positions = source.select(source.compile(resolve_filter(flt)))
        # a missing value matches no comparison (b's cells have no `only a`), as in a SOMA query
        only_a = whole["only a"]
        want = (
            whole["is_primary_data"].to_numpy(bool)
            & (whole["n_counts"] > 2).to_numpy(bool)
            & (only_a.notna() & (only_a != "z")).to_numpy(bool)
        )
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


# --- damaged inputs: one line naming the file, no output -------------------------------------


def _good(tmp_path, name="good.h5ad"):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(5)
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(["B cell", "T cell"] * 100)}, index=[f"c{i}" for i in range(200)]
    )
    var = pd.DataFrame(index=[f"ENSG{i:011d}" for i in range(40)])
    adata = ad.AnnData(sp.csr_matrix(rng.poisson(1, (200, 40)).astype(np.float32)), obs=obs, var=var)
    path = tmp_path / name
    if name.endswith(".zarr"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # anndata: zarr v2 is no longer the default
            adata.write_zarr(path)
    else:
        adata.write_h5ad(path)
    return path


def _not_hdf5(tmp_path):  # type: ignore[no-untyped-def]
    (tmp_path / "bad.h5ad").write_text("cell,gene,count\nc0,TP53,3\n")
    return tmp_path / "bad.h5ad", "not an HDF5 file"


def _empty_file(tmp_path):  # type: ignore[no-untyped-def]
    (tmp_path / "bad.h5ad").write_bytes(b"")
    return tmp_path / "bad.h5ad", "not an HDF5 file"


def _truncated(tmp_path):  # type: ignore[no-untyped-def]
    data = _good(tmp_path).read_bytes()
    (tmp_path / "bad.h5ad").write_bytes(data[:4096])
    return tmp_path / "bad.h5ad", "truncated: it ends at byte 4,096"


def _without(element: str):  # type: ignore[no-untyped-def]
    def build(tmp_path):  # type: ignore[no-untyped-def]
        path = _good(tmp_path, "bad.h5ad")
        with h5py.File(path, "a") as f:
            del f[element]
        return path, f"has no {element}" if "/" not in element else "without indptr"

    return build


def _zarr_without_x(tmp_path):  # type: ignore[no-untyped-def]
    path = _good(tmp_path, "bad.zarr")
    shutil.rmtree(path / "X")  # the consolidated metadata still lists it
    return path, "has no X"


def _empty_dir(tmp_path):  # type: ignore[no-untyped-def]
    (tmp_path / "bad.zarr").mkdir()
    return tmp_path / "bad.zarr", "not a zarr AnnData store"


def _bad_zip(tmp_path):  # type: ignore[no-untyped-def]
    (tmp_path / "bad.zarr.zip").write_bytes(b"PK\x03\x04 not really")
    return tmp_path / "bad.zarr.zip", "not a zipped zarr AnnData store"


def _unknown_encoding(tmp_path):  # type: ignore[no-untyped-def]
    path = _good(tmp_path, "bad.h5ad")
    with h5py.File(path, "a") as f:
        f["var"].attrs["encoding-type"] = "mystery"
    return path, "cannot read it as AnnData"


def _edited(element: str, at: int, value: int, what: str):  # type: ignore[no-untyped-def]
    def build(tmp_path):  # type: ignore[no-untyped-def]
        path = _good(tmp_path, "bad.h5ad")
        with h5py.File(path, "a") as f:
            f[element][at] = value
        return path, what

    return build


def _zarr_damaged(part: str, what: str, zarr_format: int = 2):  # type: ignore[no-untyped-def]
    """A zarr store with one file cut short: a group's metadata, or a chunk of X's values."""

    def build(tmp_path):  # type: ignore[no-untyped-def]
        with ad.settings.override(zarr_write_format=zarr_format):
            path = _good(tmp_path, "bad.zarr")
        target = path / part
        target.write_bytes(target.read_bytes()[: len(target.read_bytes()) // 3])
        return path, what

    return build


def _h5ad_corrupt_chunk(tmp_path):  # type: ignore[no-untyped-def]
    """A gzip-compressed h5ad whose first chunk of X's values is overwritten: its filter fails."""
    path = _good(tmp_path, "src.h5ad")
    ad.read_h5ad(path).write_h5ad(tmp_path / "bad.h5ad", compression="gzip")
    path.unlink()
    path = tmp_path / "bad.h5ad"
    with h5py.File(path) as f:
        chunk = f["X/data"].id.get_chunk_info(0)
    data = bytearray(path.read_bytes())
    for i in range(chunk.byte_offset + chunk.size // 4, chunk.byte_offset + chunk.size // 2):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    return path, "cannot read X rows 0-199; is the file damaged?"


DAMAGED = {
    "zarr-group-metadata-cut": _zarr_damaged("obs/.zattrs", "cannot read it as AnnData"),
    "zarr3-group-metadata-cut": _zarr_damaged("obs/zarr.json", "cannot read it as AnnData", 3),
    "zarr-chunk-cut": _zarr_damaged("X/data/0", "cannot read X rows 0-199; is the file damaged?"),
    "zarr3-chunk-cut": _zarr_damaged("X/data/c/0", "cannot read X rows 0-199; is the file damaged?", 3),
    "h5ad-chunk-overwritten": _h5ad_corrupt_chunk,
    "indptr-past-the-values": _edited("X/indptr", 5, 10**9, "row pointers (indptr) around row"),
    "indptr-going-back": _edited("X/indptr", 5, 0, "go back or past"),
    "index-past-the-columns": _edited("X/indices", 3, 10**7, "a column index outside its 40 columns"),
    "index-negative": _edited("X/indices", 3, -1, "a column index outside"),
    "not-hdf5": _not_hdf5,
    "empty-file": _empty_file,
    "truncated-4k": _truncated,
    "no-obs": _without("obs"),
    "no-var": _without("var"),
    "no-X": _without("X"),
    "no-indptr": _without("X/indptr"),
    "zarr-no-X": _zarr_without_x,
    "empty-dir": _empty_dir,
    "bad-zip": _bad_zip,
    "unknown-encoding": _unknown_encoding,
}


@pytest.mark.parametrize("command", ["slice", "tokenize"])
@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_inputs_are_one_line_errors_and_write_nothing(case, command, tmp_path):
    path, what = DAMAGED[case](tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / ("x.h5ad" if command == "slice" else "store")
    result = CliRunner().invoke(app, [command, "--input", str(path), "--out", str(out)])
    line = assert_clean_error(result, codes=(2,), contains=what)
    assert str(path) in line
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_columns_with_missing_values_are_sliced_as_they_are(tmp_path, suffix):
    """A column of no value at all (a categorical with no category, every cell missing: scirpy
    writes such for chains a dataset lacks) comes out as anndata writes it, not as a crash; so
    do nullable booleans and integers, their missing values kept."""
    adata = ad.AnnData(sp.csr_matrix(np.ones((6, 2), dtype=np.float32)))
    adata.obs_names = [f"c{i}" for i in range(6)]
    adata.var_names = ["ENSG1", "ENSG2"]
    adata.obs["nothing"] = pd.Categorical([np.nan] * 6, categories=pd.Index([], dtype=object))
    adata.obs["kind"] = pd.Categorical(["a", "b", "a", "b", "a", "b"])
    adata.obs["flag"] = pd.array([True, None, False, True, None, False], dtype="boolean")
    adata.obs["count"] = pd.array([1, None, 3, 2**60, None, -5], dtype="Int64")
    adata.write_h5ad(tmp_path / "in.h5ad")
    out = tmp_path / f"out{suffix}"
    spec = SourceSpec(inputs=(str(tmp_path / "in.h5ad"),), filter=CellFilter(primary_only=False))
    slice_cells(SliceConfig(source=spec, out=out))
    back = ad.read_h5ad(out) if suffix == ".h5ad" else ad.read_zarr(out)
    assert isinstance(back.obs["nothing"].dtype, pd.CategoricalDtype)
    assert len(back.obs["nothing"].cat.categories) == 0
    assert back.obs["nothing"].isna().all()
    assert list(back.obs["kind"]) == list(adata.obs["kind"])
    # missing values of booleans and integers stay missing (numpy would make them False or floats)
    for column in ("flag", "count"):
        assert back.obs[column].dtype == adata.obs[column].dtype, column
        pd.testing.assert_extension_array_equal(back.obs[column].array, adata.obs[column].array)


def test_the_shared_scirpy_file_slices_whole_with_its_obs(tmp_path):
    path = shared_file("scrna/wu2020_200_v0_11.h5ad")
    result = CliRunner().invoke(
        app, ["slice", "--input", str(path), "--all-data", "--out", str(tmp_path / "wu.h5ad")]
    )
    assert result.exit_code == 0, result.output
    original, sliced = ad.read_h5ad(path), ad.read_h5ad(tmp_path / "wu.h5ad")
    pd.testing.assert_frame_equal(sliced.obs, original.obs)  # values, dtypes, categories in order
    assert (sliced.X != original.X).nnz == 0


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_a_slice_of_a_file_has_the_obs_anndata_subsetting_gives(tmp_path, suffix):
    """Categoricals keep their categories' order and ordered flag, less those no sliced cell
    holds (as ``adata[mask]``); integer categories stay categories; text stays text."""
    n = 8
    adata = ad.AnnData(sp.csr_matrix(np.ones((n, 2), dtype=np.float32)))
    adata.obs_names = [f"c{i}" for i in range(n)]
    adata.var_names = ["ENSG1", "ENSG2"]
    stage = ["adult", "child", "adult", "infant", "child", "adult", "child", "adult"]
    adata.obs["stage"] = pd.Categorical(stage, categories=["infant", "child", "adult", "elder"], ordered=True)
    adata.obs["kind"] = pd.Categorical(list("zyzyzyzx"), categories=["z", "y", "x", "w"])
    adata.obs["cluster"] = pd.Categorical([3, 1, 3, 1, 2, 2, 1, 3], categories=[3, 2, 1, 0])
    adata.obs["barcode"] = [f"AC{i}G" for i in range(n)]  # text, one value a cell
    adata.obs["keep"] = [True, True, False, True, True, False, True, True]
    adata.write_h5ad(tmp_path / "in.h5ad")
    out = tmp_path / f"out{suffix}"
    spec = SourceSpec(
        inputs=(str(tmp_path / "in.h5ad"),),
        filter=CellFilter(primary_only=False, where="keep == True"),
        batch_size=2,
    )
    slice_cells(SliceConfig(source=spec, out=out))
    back = ad.read_h5ad(out) if suffix == ".h5ad" else ad.read_zarr(out)
    expected = adata[adata.obs["keep"].to_numpy()].copy().obs
    pd.testing.assert_frame_equal(back.obs, expected)
    assert list(back.obs["stage"].cat.categories) == ["infant", "child", "adult"]
    assert back.obs["stage"].cat.ordered
    assert list(back.obs["cluster"].cat.categories) == [3, 2, 1]
    assert back.obs["barcode"].dtype == object


@pytest.mark.parametrize("command", ["validate", "harmonize"])
def test_a_mudata_modality_given_to_a_one_file_command_says_how_to_make_it_one(tmp_path, command):
    path = f"{shared_file('multiome/test_rna_atac.h5mu')}:rna"
    args = [command, path, *(["--out", str(tmp_path / "h.h5ad")] if command == "harmonize" else [])]
    line = assert_clean_error(CliRunner().invoke(app, args), codes=(2,))
    assert f"{command} reads an AnnData file (h5ad or zarr), not a MuData modality" in line
    assert f"atlasprep slice --input {path} --all-data --out rna.h5ad" in line


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_text_that_one_of_several_files_lacks_keeps_its_missing_values(tmp_path, suffix):
    """A text column of one file only: the other file's cells have no value, which a string
    array cannot hold (h5py refuses None; zarr stored the word "None"): it is written as a
    categorical, its missing values missing."""
    paths = []
    for name in ("a", "b"):
        adata = ad.AnnData(sp.csr_matrix(np.ones((3, 2), dtype=np.float32)))
        adata.obs_names = [f"{name}{i}" for i in range(3)]
        adata.var_names = ["ENSG1", "ENSG2"]
        if name == "a":
            adata.obs["barcode"] = ["AAC", "AAG", "AAT"]  # one value a cell: written as text
        adata.write_h5ad(tmp_path / f"{name}.h5ad")
        paths.append(str(tmp_path / f"{name}.h5ad"))
    out = tmp_path / f"both{suffix}"
    result = CliRunner().invoke(app, ["slice", *paths, "--all-data", "--out", str(out)])
    assert result.exit_code == 0, result.output
    back = ad.read_h5ad(out) if suffix == ".h5ad" else ad.read_zarr(out)
    assert back.obs["barcode"].astype(object).where(back.obs["barcode"].notna(), None).tolist() == [
        "AAC", "AAG", "AAT", None, None, None
    ]  # fmt: skip


@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize("same", [True, False])
def test_several_files_obs_is_what_anndata_concat_gives(tmp_path, same, ordered):
    """Two files' categoricals, as ``anndata.concat`` joins them: unordered, one categorical of
    every file's categories in natural order; ordered, the same categories kept, differing
    ones become text."""
    paths, files = [], []
    for name, kinds, categories in (("a", "abab", ["b", "a", "z"]), ("b", "baba", ["c", "a", "b"])):
        adata = ad.AnnData(sp.csr_matrix(np.ones((4, 2), dtype=np.float32)))
        adata.obs_names = [f"{name}{i}" for i in range(4)]
        adata.var_names = ["ENSG1", "ENSG2"]
        adata.obs["kind"] = pd.Categorical(
            list(kinds), categories=["b", "a", "z"] if same else categories, ordered=ordered
        )
        adata.obs["n"] = pd.Categorical([10, 9, 10, 9], categories=[10, 9, 2] if same else [9, 10])
        adata.write_h5ad(tmp_path / f"{name}.h5ad")
        paths.append(str(tmp_path / f"{name}.h5ad"))
        files.append(adata)
    out = tmp_path / "both.h5ad"
    result = CliRunner().invoke(app, ["slice", *paths, "--all-data", "--batch-size", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    back = ad.read_h5ad(out)
    expected = ad.concat(files)[np.arange(8)].copy().obs  # (as a slice of it: unused categories go)
    pd.testing.assert_frame_equal(back.obs, expected)
    assert isinstance(back.obs["kind"].dtype, pd.CategoricalDtype) == (same or not ordered)


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_several_files_var_takes_each_value_from_the_first_file_holding_it(tmp_path, suffix):
    """var of several files: every file's columns; a gene's value from the first file with both
    the gene and a value; missing values written as anndata writes them (nullable booleans and
    integers, text as a categorical), where h5py refused the text column and zarr stored "nan"."""
    a = ad.AnnData(sp.csr_matrix(np.ones((2, 3), dtype=np.float32)))
    a.obs_names = ["a0", "a1"]
    a.var = pd.DataFrame(
        {"symbol": ["A", "B", "C"], "flag": [True, False, True], "width": np.array([1, 2, 3], np.int8)},
        index=["ENSG1", "ENSG2", "ENSG3"],
    )
    b = ad.AnnData(sp.csr_matrix(np.ones((2, 2), dtype=np.float32)))
    b.obs_names = ["b0", "b1"]
    b.var = pd.DataFrame(
        {"symbol": ["C", "D"], "n_cells": np.array([7, 9], np.int64), "kind": pd.Categorical(["x", "y"])},
        index=["ENSG3", "ENSG4"],
    )
    a.write_h5ad(tmp_path / "a.h5ad")
    b.write_h5ad(tmp_path / "b.h5ad")
    out = tmp_path / f"both{suffix}"
    args = ["slice", str(tmp_path / "a.h5ad"), str(tmp_path / "b.h5ad"), "--join", "outer"]
    result = CliRunner().invoke(app, [*args, "--all-data", "--out", str(out)])
    assert result.exit_code == 0, result.output
    var = (ad.read_h5ad(out) if suffix == ".h5ad" else ad.read_zarr(out)).var
    assert list(var.index) == ["ENSG1", "ENSG2", "ENSG3", "ENSG4"]  # first-seen order
    assert list(var.columns) == ["symbol", "flag", "width", "n_cells", "kind"]
    assert var["symbol"].tolist() == ["A", "B", "C", "D"]  # every gene has one: text stays text
    assert var["symbol"].dtype == object
    assert var["flag"].tolist()[:3] == [True, False, True]
    assert var["flag"].isna().tolist() == [0, 0, 0, 1]
    assert var["flag"].dtype == "boolean"
    assert var["width"].dtype == "Int8"
    assert var["width"].isna().tolist() == [0, 0, 0, 1]
    assert var["n_cells"].dtype == "Int64"
    assert var["n_cells"].tolist()[2:] == [7, 9]  # ENSG3's from b: a has no such column
    assert isinstance(var["kind"].dtype, pd.CategoricalDtype)
    assert var["kind"].isna().tolist() == [1, 1, 0, 0]
    assert var["kind"].tolist()[2:] == ["x", "y"]


def test_a_text_var_column_one_file_lacks_is_a_categorical_with_missing_values(tmp_path):
    from atlasprep.sources.anndata import _joined_var

    a = pd.DataFrame({"feature_name": ["TP53", "EGFR"]}, index=["ENSG1", "ENSG2"])
    b = pd.DataFrame({"other": [1.5, np.nan]}, index=["ENSG2", "ENSG3"])
    var = _joined_var([a, b], ["ENSG1", "ENSG2", "ENSG3"])
    assert list(var["feature_name"].cat.categories) == ["EGFR", "TP53"]
    assert var["feature_name"].isna().tolist() == [False, False, True]
    assert var["other"].dtype == np.float64
    assert var["other"].isna().tolist() == [True, False, True]


def test_genes_on_a_var_that_names_a_gene_twice_keep_every_row(tmp_path):
    from atlasprep.sources import gene_positions

    adata = ad.AnnData(sp.csr_matrix(np.ones((2, 4), dtype=np.float32)))
    adata.var_names = ["Sag", "Rp1", "Rp1", "Xk"]
    adata.write_h5ad(tmp_path / "dup.h5ad")
    source = AnnDataSource([tmp_path / "dup.h5ad"])
    try:
        spec = SourceSpec(inputs=(str(tmp_path / "dup.h5ad"),), genes=("Rp1", "Xk", "Absent"))
        assert gene_positions(spec, source).tolist() == [1, 2, 3]  # as adata.var_names.isin gives
    finally:
        source.close()


def test_a_var_filter_and_genes_sharing_no_gene_say_so(tmp_path):
    from atlasprep.errors import UsageError
    from atlasprep.sources import gene_positions

    adata = ad.AnnData(sp.csr_matrix(np.ones((2, 3), dtype=np.float32)))
    adata.var_names = ["ENSG1", "ENSG2", "ENSG3"]
    adata.var["kind"] = ["a", "a", "b"]
    adata.write_h5ad(tmp_path / "v.h5ad")
    source = AnnDataSource([tmp_path / "v.h5ad"])
    try:
        spec = SourceSpec(inputs=(str(tmp_path / "v.h5ad"),), genes=("ENSG3",), var_filter="kind == 'a'")
        with pytest.raises(UsageError, match=r"no gene is in both \(2 pass the filter, 1 are named\)"):
            gene_positions(spec, source)
    finally:
        source.close()


def test_genes_drop_the_var_categories_no_kept_gene_holds(tmp_path):
    """As ``adata[:, genes]`` gives var (anndata removes unused categories)."""
    adata = ad.AnnData(sp.csr_matrix(np.ones((2, 3), dtype=np.float32)))
    adata.var_names = ["ENSG1", "ENSG2", "ENSG3"]
    adata.var["biotype"] = pd.Categorical(["coding", "spike-in", "lncRNA"])
    adata.write_h5ad(tmp_path / "v.h5ad")
    out = tmp_path / "s.h5ad"
    genes = tmp_path / "genes.txt"
    genes.write_text("ENSG1\nENSG3\n")
    args = ["slice", str(tmp_path / "v.h5ad"), "--all-data", "--genes", str(genes), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    expected = adata[:, ["ENSG1", "ENSG3"]].var["biotype"]
    assert list(ad.read_h5ad(out).var["biotype"].cat.categories) == list(expected.cat.categories)
    assert list(expected.cat.categories) == ["coding", "lncRNA"]


@pytest.mark.parametrize("command", ["tokenize", "slice"])
def test_a_text_column_only_one_file_has_is_kept_with_nulls(tmp_path, command):
    """Two files, one with a plain-text obs column the other lacks: the batches of the second
    file's cells typed it null, and joining them with the first's strings failed (ArrowInvalid)."""
    genes = [f"ENSG{i:011d}" for i in range(1, 5)]
    X = sp.csr_matrix(np.array([[1, 2, 0, 3]] * 3, dtype=np.float32))
    with_donor = pd.DataFrame({"donor_id": ["D1", "D2", "D3"]}, index=["a0", "a1", "a2"])
    ad.AnnData(X, obs=with_donor, var=pd.DataFrame(index=genes)).write_h5ad(tmp_path / "p.h5ad")
    ad.AnnData(X, obs=pd.DataFrame(index=["b0", "b1", "b2"]), var=pd.DataFrame(index=genes)).write_h5ad(
        tmp_path / "q.h5ad"
    )
    inputs = [str(tmp_path / "p.h5ad"), str(tmp_path / "q.h5ad"), "--all-data"]
    if command == "tokenize":
        out = tmp_path / "store"
        args = [*inputs, "--scheme", "raw", "--obs-columns", "donor_id", "--no-shuffle", "--out", str(out)]
        result = CliRunner().invoke(app, ["tokenize", *args])
        assert result.exit_code == 0, result.output
        (shard,) = read_manifest(out)["shards"]
        table = read_shard(out, shard["path"])
        assert table["donor_id"].to_pylist() == ["D1", "D2", "D3", None, None, None]
    else:
        result = CliRunner().invoke(app, ["slice", *inputs, "--out", str(tmp_path / "x.h5ad")])
        assert result.exit_code == 0, result.output
        donors = ad.read_h5ad(tmp_path / "x.h5ad").obs["donor_id"]
        assert donors.iloc[:3].tolist() == ["D1", "D2", "D3"]
        assert donors.iloc[3:].isna().all()
