"""An h5ad's obs and var read with h5py alone (atlasprep/sources/_h5elem.py) are the values
``anndata.io.read_elem`` gives, element by element, for every encoding the fast reader takes and
for those it hands to anndata; and an h5ad ``tokenize`` never imports anndata."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.io import write_elem
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasprep.sources import _h5elem
from atlasprep.sources._h5elem import read_elem
from tests.conftest import shared_file
from tests.test_startup import _imported


def _same(ours: object, theirs: object) -> None:
    assert type(ours) is type(theirs)
    if isinstance(theirs, pd.DataFrame):
        assert isinstance(ours, pd.DataFrame)
        pd.testing.assert_frame_equal(ours, theirs, check_exact=True)
        assert list(ours.columns) == list(theirs.columns)
        assert ours.index.name == theirs.index.name
        assert ours.index.dtype == theirs.index.dtype
        assert [ours[c].dtype for c in ours.columns] == [theirs[c].dtype for c in theirs.columns]
    elif isinstance(theirs, pd.Categorical):
        assert isinstance(ours, pd.Categorical)
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours.codes, theirs.codes)
        pd.testing.assert_index_equal(ours.categories, theirs.categories, exact=True)
    elif isinstance(theirs, pd.api.extensions.ExtensionArray):
        pd.testing.assert_extension_array_equal(ours, theirs)  # type: ignore[arg-type]
    elif isinstance(theirs, dict):  # a legacy group without encoding: anndata reads both
        assert isinstance(ours, dict)
        assert list(ours) == list(theirs)
        for key in theirs:
            _same(ours[key], theirs[key])
    else:
        assert isinstance(ours, np.ndarray)
        assert isinstance(theirs, np.ndarray)
        assert (ours.dtype, ours.shape) == (theirs.dtype, theirs.shape)
        np.testing.assert_array_equal(ours, theirs)


def _theirs(elem: object) -> object:
    """anndata's value for the element (its warning on old layouts silenced, as atlasprep does)."""
    import warnings

    from anndata import OldFormatWarning
    from anndata.io import read_elem as anndata_read_elem

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OldFormatWarning)
        return anndata_read_elem(elem)


def _every_element(group: h5py.Group) -> list[h5py.Group | h5py.Dataset]:
    found: list[h5py.Group | h5py.Dataset] = []
    group.visititems(lambda _, elem: found.append(elem))
    return found


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    words = np.array(["T cell", "B cell", "naïve", "", "lung;left", "ünïcode"], dtype=object)
    ints = pd.array(rng.integers(-5, 5, n), dtype="Int64")
    ints[rng.random(n) < 0.3] = pd.NA
    flags = pd.array(rng.random(n) < 0.5, dtype="boolean")
    flags[rng.random(n) < 0.3] = pd.NA
    return pd.DataFrame(
        {
            "cell_type": pd.Categorical(rng.choice(words[:3], n)),
            "stage": pd.Categorical(rng.choice(["a", "b", "c"], n), categories=["c", "b", "a"], ordered=True),
            "with_missing": pd.Categorical(rng.choice(["x", "y", None], n)),
            "numeric_categories": pd.Categorical(rng.choice([3, 1, 2], n)),
            "n_counts": rng.random(n).astype(np.float32) * 1e4,
            "n_genes": rng.integers(0, 5000, n),
            "is_primary_data": rng.random(n) < 0.5,
            "note": rng.choice(words, n),
            "nullable_int": ints,
            "nullable_bool": flags,
            "uint": rng.integers(0, 200, n).astype(np.uint8),
        },
        index=pd.Index([f"cell-{i}" for i in range(n)], name="barcode" if seed % 2 else None),
    )


@given(n=st.integers(0, 40), seed=st.integers(0, 2**16))
@settings(max_examples=25, deadline=None)
def test_every_element_of_a_written_frame_reads_as_anndata_reads_it(tmp_path_factory, n, seed):
    path = tmp_path_factory.mktemp("h5elem") / "frame.h5"
    frame = _frame(n, seed)
    with h5py.File(path, "w") as f:
        write_elem(f, "obs", frame)
        write_elem(f, "empty", pd.DataFrame(index=frame.index.astype(str)))
    with h5py.File(path, "r") as f:
        for elem in [f["obs"], f["empty"], *_every_element(f)]:
            _same(read_elem(elem), _theirs(elem))


def test_an_h5ad_from_each_shared_file_reads_as_anndata_reads_it():
    """Real files: the CELLxGENE examples, a CITE-seq h5ad, a scRNA h5ad written by anndata 0.11,
    a MuData file's modalities: obs, var, raw/var and every element below them."""
    checked = 0
    for relative in (
        "cellxgene/example_valid.h5ad",
        "cellxgene/example_invalid_CL.h5ad",
        "citeseq/pbmc_10k_protein_v3.h5ad",
        "scrna/wu2020_200_v0_11.h5ad",
        "multiome/test_rna_atac.h5mu",
    ):
        path = shared_file(relative)  # skips when ../shared is absent
        with h5py.File(path, "r") as f:
            roots = [f] if "mod" not in f else [f["mod"][m] for m in f["mod"]]
            for root in roots:
                for name in ("obs", "var", "raw/var"):
                    if name in root:
                        for elem in [root[name], *_every_element(root[name])]:
                            _same(read_elem(elem), _theirs(elem))
                            checked += 1
    assert checked > 50


def test_julia_style_fixed_length_attributes_are_decoded(tmp_path):
    """HDF5.jl writes string attributes as fixed-length byte strings: anndata decodes them, and
    so does the fast reader (a categorical column and a frame whose column order is one)."""
    path = tmp_path / "julia.h5"
    frame = pd.DataFrame({"tissue": pd.Categorical(["lung", "liver", "lung"])}, index=["a", "b", "c"])
    with h5py.File(path, "w") as f:
        write_elem(f, "obs", frame)
        for elem in (f["obs"], f["obs/tissue"], f["obs/_index"], f["obs/tissue/categories"]):
            for key in ("encoding-type", "encoding-version"):
                value = elem.attrs[key]
                elem.attrs.create(key, np.bytes_(value), dtype=h5py.string_dtype(length=len(value)))
        f["obs"].attrs.create("column-order", np.array([b"tissue"]), dtype=h5py.string_dtype(length=6))
        f["obs"].attrs.create("_index", np.bytes_("_index"), dtype=h5py.string_dtype(length=6))
    with h5py.File(path, "r") as f:
        assert isinstance(f["obs"].attrs["encoding-type"], bytes)  # as Julia leaves them
        assert _h5elem._spec(f["obs"]) == ("dataframe", "0.2.0")
        _same(read_elem(f["obs"]), _theirs(f["obs"]))


def test_other_elements_go_to_anndata(tmp_path, monkeypatch):
    """A legacy (pre-0.7) structured-array obs, a zarr group and an encoding the fast reader
    does not know are anndata's to read: the same values, read by anndata."""
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        legacy = np.array([(b"c1", 1.0), (b"c2", 2.0)], dtype=[("index", "S2"), ("n", "f8")])
        f.create_dataset("legacy", data=legacy)
        with ad.settings.override(allow_write_nullable_strings=True):  # a nullable-string-array
            write_elem(f, "strings", pd.array(["a", None, "c"], dtype="string"))
    z = tmp_path / "frame.zarr"
    with ad.settings.override(zarr_write_format=3, auto_shard_zarr_v3=False):
        ad.AnnData(obs=_frame(5, 1)).write_zarr(z)
    import zarr

    fast = _h5elem._READERS.copy()
    calls: list[str] = []
    monkeypatch.setattr(_h5elem, "_READERS", {k: _count(v, calls) for k, v in fast.items()})
    with h5py.File(path, "r") as f:
        _same(read_elem(f["strings"]), _theirs(f["strings"]))
        with _no_warning():  # anndata's old-format warning is silenced
            legacy_read = read_elem(f["legacy"])
        np.testing.assert_array_equal(legacy_read, _theirs(f["legacy"]))
    group = zarr.open_group(z, mode="r")
    _same(read_elem(group["obs"]), _theirs(group["obs"]))
    assert calls == []  # none of them went through the fast readers


def _count(reader, calls):  # type: ignore[no-untyped-def]
    def counted(elem):  # type: ignore[no-untyped-def]
        calls.append(elem.name)
        return reader(elem)

    return counted


class _no_warning:
    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self.seen = self._catch.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc: object) -> None:
        seen = list(self.seen)
        self._catch.__exit__(*exc)
        assert not [w for w in seen if "OldFormat" in type(w.message).__name__]


def test_an_h5ad_tokenize_imports_no_anndata(tmp_path):
    """The whole build from an h5ad (obs, var, CSR rows, shards) runs without anndata, dask or
    zarr: 0.45 s of imports an h5ad build no longer pays."""
    rng = np.random.default_rng(0)
    X = sp.random(300, 50, density=0.2, format="csr", random_state=1, dtype=np.float32)
    X.data = np.ceil(X.data * 10)
    obs = pd.DataFrame(
        {
            "tissue": pd.Categorical(rng.choice(["lung", "liver"], 300)),
            "n_counts": np.asarray(X.sum(1)).ravel(),
        },
        index=[f"c{i}" for i in range(300)],
    )
    var = pd.DataFrame(index=[f"ENSG{i:011d}" for i in range(50)])
    h5ad = tmp_path / "cells.h5ad"
    ad.AnnData(X=X, obs=obs, var=var).write_h5ad(h5ad)
    build = (
        "tokenize",
        "--input",
        str(h5ad),
        "--scheme",
        "raw",
        "--all-data",
        "--out",
        str(tmp_path / "store"),
    )
    imported = _imported(*build)  # the console script's modules, at exit
    assert "h5py" in imported
    assert sorted(imported & {"anndata", "dask", "zarr"}) == []
    assert (tmp_path / "store" / "manifest.json").is_file()


def test_rows_that_are_not_one_run_are_read_through_anndata(tmp_path):
    """A sample of scattered rows reads through anndata's backed matrix, made only then."""
    from atlasprep.sources.anndata import AnnDataSource

    X = sp.random(40, 12, density=0.3, format="csr", random_state=2, dtype=np.float32)
    X.data = np.ceil(X.data * 9)
    h5ad = tmp_path / "c.h5ad"
    ad.AnnData(X=X, obs=pd.DataFrame(index=[f"c{i}" for i in range(40)])).write_h5ad(h5ad)
    source = AnnDataSource([Path(h5ad)])
    try:
        rows = np.array([3, 7, 8, 30, 31, 39])
        batches = list(source.iter_batches(rows, var_positions=None, batch_size=100))
        got = sp.vstack([b.X for b in batches]).toarray()
        np.testing.assert_array_equal(got, X[rows].toarray())
        assert source._files[0].X._backed is not None
    finally:
        source.close()
