"""Ranges of an h5ad's data and indices read by file offset (atlasprep/sources/_h5direct.py) are
what h5py reads, for every layout the direct reader takes; every other layout is left to h5py;
and a build reads the same cells either way."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasprep.errors import InputFormatError
from atlasprep.sources import CellFilter, SourceSpec, _anndata_files
from atlasprep.sources._h5direct import direct_reader
from atlasprep.sources.anndata import AnnDataSource
from atlasprep.tokenize.api import TokenizeConfig, tokenize_cells

DTYPES = ["<f4", "<f8", "<i4", "<i8", "<u2", "<i2", "u1"]


@given(
    n=st.integers(1, 3_000),
    dtype=st.sampled_from(DTYPES),
    chunk=st.one_of(st.none(), st.integers(1, 700)),
    ranges=st.lists(st.tuples(st.integers(0, 3_000), st.integers(0, 3_000)), min_size=1, max_size=6),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=60, deadline=None)
def test_any_range_reads_as_h5py_reads_it(tmp_path_factory, n, dtype, chunk, ranges, seed):
    rng = np.random.default_rng(seed)
    values = (rng.random(n) * 1_000).astype(dtype)
    path = tmp_path_factory.mktemp("direct") / "d.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("before", data=np.arange(17))  # so the values do not start the file's data
        f.create_dataset("values", data=values, chunks=(min(chunk, n),) if chunk else None)
    with h5py.File(path, "r") as f:
        dataset = f["values"]
        reader = direct_reader(dataset, "d.h5: values")
        assert reader is not None
        for a, b in ranges:
            a, b = min(a, n), min(b, n)
            ours = reader.read(a, b)
            assert ours.dtype == values.dtype
            np.testing.assert_array_equal(ours, dataset[a:b])


def test_chunks_out_of_file_order_are_read_by_their_offsets(tmp_path):
    """Chunks written back to front lie in the file in the other order: each run is one chunk."""
    path = tmp_path / "d.h5"
    values = np.arange(1_000, dtype=np.float32)
    with h5py.File(path, "w") as f:
        dataset = f.create_dataset("values", shape=(1_000,), dtype=np.float32, chunks=(100,))
        for lo in range(900, -1, -100):
            dataset[lo : lo + 100] = values[lo : lo + 100]
    with h5py.File(path, "r") as f:
        reader = direct_reader(f["values"], "values")
        assert reader is not None
        assert len(reader.run_starts) == 10
        np.testing.assert_array_equal(reader.read(0, 1_000), values)
        np.testing.assert_array_equal(reader.read(150, 851), values[150:851])


def _layouts(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Datasets whose stored bytes are not the values as they are: h5py must read them."""
    values = np.arange(5_000, dtype=np.float32)
    made = {}
    path = tmp_path / "others.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("gzip", data=values, chunks=(512,), compression="gzip")
        f.create_dataset("shuffle", data=values, chunks=(512,), shuffle=True)
        f.create_dataset("big_endian", data=values.astype(">f4"))
        f.create_dataset("strings", data=np.array([b"a", b"b"]))
        f.create_dataset("two_d", data=values.reshape(50, 100))
        partial = f.create_dataset("partly_written", shape=(5_000,), dtype=np.float32, chunks=(512,))
        partial[:1_000] = values[:1_000]  # the other chunks read as the fill value
        f.create_dataset("never_written", shape=(5_000,), dtype=np.float32)
        space = h5py.h5s.create_simple((8,))
        plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        plist.set_layout(h5py.h5d.COMPACT)
        h5py.h5d.create(f.id, b"compact", h5py.h5t.NATIVE_FLOAT, space, dcpl=plist)
    made.update({name: (path, name) for name in (
        "gzip", "shuffle", "big_endian", "strings", "two_d", "partly_written", "never_written", "compact",
    )})  # fmt: skip
    external = tmp_path / "external.h5"
    with h5py.File(external, "w") as f:
        f.create_dataset("values", shape=(100,), dtype=np.float32, external=[(tmp_path / "raw.bin", 0, 400)])
    made["external"] = (external, "values")
    userblock = tmp_path / "userblock.h5"
    with h5py.File(userblock, "w", userblock_size=512) as f:
        f.create_dataset("values", data=values)
    made["userblock"] = (userblock, "values")
    return made


def test_every_other_layout_is_left_to_h5py(tmp_path):
    for label, (path, name) in _layouts(tmp_path).items():
        with h5py.File(path, "r") as f:
            assert direct_reader(f[name], name) is None, label
    values = np.arange(100, dtype=np.float32)
    with h5py.File("in-memory.h5", "w", driver="core", backing_store=False) as f:  # not sec2
        f.create_dataset("values", data=values)
        assert direct_reader(f["values"], "values") is None
    assert not os.path.exists("in-memory.h5")


def _h5ad(path: Path, *, compression: str | None = None, n_cells: int = 300, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    X = sp.random(n_cells, 60, density=0.3, format="csr", random_state=rng, dtype=np.float32)
    X.data = np.ceil(X.data * 20).astype(np.float32)
    adata = ad.AnnData(X=X)
    adata.obs_names = [f"c{i}" for i in range(n_cells)]
    adata.var_names = [f"ENSG{i:011d}" for i in range(60)]
    adata.write_h5ad(path, compression=compression)
    return path


def test_an_h5ads_matrix_is_read_by_offset_and_gives_the_same_batches(tmp_path, monkeypatch):
    path = _h5ad(tmp_path / "a.h5ad")
    positions = np.arange(300)
    direct = AnnDataSource([path])
    assert direct._files[0].direct is not None  # uncompressed: read by offset
    monkeypatch.setattr(_anndata_files, "direct_parts", lambda *_: None)
    monkeypatch.setattr("atlasprep.sources.anndata.direct_parts", lambda *_: None)
    through_h5py = AnnDataSource([path])
    assert through_h5py._files[0].direct is None
    try:
        for batch_size in (1, 7, 300):
            ours = list(direct.iter_batches(positions, var_positions=None, batch_size=batch_size))
            theirs = list(through_h5py.iter_batches(positions, var_positions=None, batch_size=batch_size))
            assert len(ours) == len(theirs)
            for a, b in zip(ours, theirs, strict=True):
                assert (a.X != b.X).nnz == 0
                np.testing.assert_array_equal(a.X.indptr, b.X.indptr)
                np.testing.assert_array_equal(a.X.indices, b.X.indices)
                assert a.X.data.dtype == b.X.data.dtype
    finally:
        direct.close()
        through_h5py.close()


def test_a_compressed_h5ad_is_read_by_h5py(tmp_path):
    source = AnnDataSource([_h5ad(tmp_path / "z.h5ad", compression="gzip")])
    try:
        assert source._files[0].direct is None
    finally:
        source.close()


def _shards(out: Path) -> dict[str, str]:
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((out / "shards").rglob("*"))
        if p.is_file()
    }


def test_a_build_from_offsets_is_the_build_through_h5py(tmp_path):
    """The same h5ad, compressed and not (read by offset, read by h5py): the same shards."""
    stores = []
    for label, compression in (("plain", None), ("gzip", "gzip")):
        path = _h5ad(tmp_path / f"{label}.h5ad", compression=compression, n_cells=500, seed=3)
        spec = SourceSpec(inputs=(str(path),), filter=CellFilter(primary_only=False), batch_size=64)
        tokenize_cells(TokenizeConfig(source=spec, out=tmp_path / label, scheme="raw", shard_cells=128))
        stores.append(_shards(tmp_path / label))
    assert stores[0] == stores[1]
    assert len(stores[0]) == 4


def test_a_file_cut_short_while_it_is_read_is_one_line_naming_it(tmp_path):
    path = _h5ad(tmp_path / "a.h5ad")
    source = AnnDataSource([path])
    try:
        reader = source._files[0].direct
        assert reader is not None
        data = reader[0]
        os.truncate(path, int(data.run_bytes[0]) + 8)  # the values end 2 floats in
        with pytest.raises(InputFormatError, match=r"a\.h5ad: X/data: the file ends before its values do"):
            data.read(0, data.n)
    finally:
        source.close()


def test_a_closed_file_is_not_read(tmp_path):
    path = _h5ad(tmp_path / "a.h5ad")
    source = AnnDataSource([path])
    reader = source._files[0].direct
    source.close()
    assert reader is not None
    with pytest.raises(ValueError, match="closed"):
        reader[0].read(0, 10)


def test_a_dataset_of_very_many_chunks_is_left_to_h5py(tmp_path, monkeypatch):
    """Listing the chunks is a Python call each: past a bound it costs more than it saves."""
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("values", data=np.arange(100, dtype=np.float32), chunks=(10,))
    monkeypatch.setattr("atlasprep.sources._h5direct._MAX_CHUNKS", 9)
    with h5py.File(path, "r") as f:
        assert direct_reader(f["values"], "values") is None
    monkeypatch.setattr("atlasprep.sources._h5direct._MAX_CHUNKS", 10)
    with h5py.File(path, "r") as f:
        assert direct_reader(f["values"], "values") is not None
