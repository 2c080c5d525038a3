"""`slice`'s memory bounds as properties, not timings: TileDB's tables released read by read, a
batch's CSR built in place when obs says each cell's values, one batch held by the writer's
loop, ontology files dropped once the terms are resolved, obs strings written in slices."""

from __future__ import annotations

import platform
import sys
import weakref

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.sparse as sp
import zarr
from anndata.io import write_elem
from hypothesis import given, settings
from hypothesis import strategies as st

import atlasprep.slice.api as slice_api
from atlasprep._heap import map_large_allocations
from atlasprep.slice import SliceConfig, _obs, slice_cells
from atlasprep.sources import CellFilter, SourceSpec, _csr, open_census, resolve_filter
from atlasprep.sources.soma import SomaSource, tiledb_config_for_batches


def _tables(n_rows: int, n_cols: int, nnz: int, n_tables: int, seed: int):  # type: ignore[no-untyped-def]
    """Random SOMA X tables over joinids 10.., unique (row, column) pairs in tile-like order."""
    rng = np.random.default_rng(seed)
    cells = np.unique(rng.integers(0, n_rows * n_cols, nnz))
    rows, cols = np.divmod(cells, n_cols)
    data = rng.integers(1, 50, len(cells)).astype(np.float32)
    order = rng.permutation(len(cells))
    splits = np.sort(rng.integers(0, len(cells) + 1, n_tables - 1))
    chunk = np.arange(n_rows, dtype=np.int64) + 10
    parts = [np.sort(p) for p in np.split(order, splits)]  # each table in row order inside
    tables = [
        pa.table({"soma_dim_0": chunk[rows[p]], "soma_dim_1": cols[p], "soma_data": data[p]}) for p in parts
    ]
    return chunk, tables, np.bincount(rows, minlength=n_rows)


@settings(max_examples=60, deadline=None)
@given(
    n_rows=st.integers(1, 30),
    n_cols=st.integers(1, 25),
    nnz=st.integers(0, 300),
    n_tables=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_sized_conversion_equals_the_general_one(n_rows, n_cols, nnz, n_tables, seed):
    chunk, tables, sizes = _tables(n_rows, n_cols, nnz, n_tables, seed)
    want = _csr.tables_to_csr(tables, _csr.RowMap(chunk), n_rows, n_cols)
    got = _csr.sized_tables_to_csr(tables, _csr.RowMap(chunk), n_rows, n_cols, sizes)
    assert got is not None
    assert got.has_canonical_format
    for name in ("indptr", "indices", "data"):
        assert np.array_equal(getattr(got, name), getattr(want, name))
        assert getattr(got, name).dtype == getattr(want, name).dtype
    # sizes that overstate rows: the rows are moved together, the arrays cut to the values
    loose = _csr.sized_tables_to_csr(
        tables, _csr.RowMap(chunk), n_rows, n_cols, np.minimum(sizes + 2, n_cols)
    )
    assert loose is not None
    assert (loose != want).nnz == 0
    assert len(loose.data) == want.nnz
    absurd = sizes.copy()
    absurd[0] = n_cols + 1  # no row holds more values than there are columns: nothing allocated
    assert _csr.sized_tables_to_csr(iter(()), _csr.RowMap(chunk), n_rows, n_cols, absurd) is None
    if nnz and sizes.max() > 0:  # a row with more values than its size: None, nothing guessed
        short = sizes.copy()
        short[np.argmax(sizes)] -= 1
        assert _csr.sized_tables_to_csr(tables, _csr.RowMap(chunk), n_rows, n_cols, short) is None


def test_each_table_is_released_before_the_next_is_read(monkeypatch):
    """A batch of several incomplete reads holds one read's tables at a time (20 bytes a value),
    in both conversions, and the sized one builds no per-table pieces."""
    chunk, tables, sizes = _tables(20, 15, 250, 4, seed=3)
    columns = [{name: t[name].to_numpy() for name in t.column_names} for t in tables]
    del tables

    def lazily(seen):  # type: ignore[no-untyped-def]
        for cols in columns:
            if seen:
                assert seen[-1]() is None, "the previous read's table is still held"
            table = pa.table(cols)
            seen.append(weakref.ref(table))
            yield table
            del table

    want = _csr.tables_to_csr(lazily([]), _csr.RowMap(chunk), 20, 15)

    def no_pieces(*args):  # type: ignore[no-untyped-def]
        raise AssertionError("the sized conversion built a per-table piece")

    monkeypatch.setattr(_csr, "_piece", no_pieces)
    got = _csr.sized_tables_to_csr(lazily([]), _csr.RowMap(chunk), 20, 15, sizes)
    assert got is not None
    assert (got != want).nnz == 0


def test_source_builds_batches_in_place_and_rereads_when_nnz_is_wrong(small_census, monkeypatch):
    source = open_census(census_uri=str(small_census))
    try:
        positions = source.select(source.compile(resolve_filter(CellFilter())))[:300]
        batches = [b.X for b in source.iter_batches(positions, var_positions=None, batch_size=64)]
        want, n = sp.vstack(batches), len(batches)
        assert n > 2
        calls = {"sized": 0, "general": 0}
        sized, general = _csr.sized_tables_to_csr, _csr.tables_to_csr

        def count(name, real):  # type: ignore[no-untyped-def]
            def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
                calls[name] += 1
                return real(*args, **kwargs)

            return wrapper

        monkeypatch.setattr("atlasprep.sources.soma.sized_tables_to_csr", count("sized", sized))
        monkeypatch.setattr("atlasprep.sources.soma.tables_to_csr", count("general", general))
        got = sp.vstack([b.X for b in source.iter_batches(positions, var_positions=None, batch_size=64)])
        assert (got != want).nnz == 0
        assert calls == {"sized": n, "general": 0}  # obs nnz is right: built in place, read once

        plan = SomaSource._plan_chunks

        def understated(self, positions, batch_size):  # type: ignore[no-untyped-def]
            chunks, sizes = plan(self, positions, batch_size)
            return chunks, [np.maximum(s - 1, 0) for s in sizes]

        monkeypatch.setattr(SomaSource, "_plan_chunks", understated)
        calls.update(sized=0, general=0)
        got = sp.vstack([b.X for b in source.iter_batches(positions, var_positions=None, batch_size=64)])
        assert (got != want).nnz == 0
        assert calls == {"sized": n, "general": n}  # each batch read again, converted by table
    finally:
        source.close()


def test_read_buffers_are_small_and_the_reader_budget_unchanged():
    config = tiledb_config_for_batches(4_096)
    assert config["soma.init_buffer_bytes"] == 4 * 2**20  # two in memory: one filled, one converted
    assert config["sm.mem.total_budget"] == 2 * 4_096 * 2_000 * 8  # tile offsets of a large array
    assert tiledb_config_for_batches(100_000)["soma.init_buffer_bytes"] == 16 * 2**20
    assert "sm.mem.malloc_trim" not in config  # slice: TileDB trims the heaps (bounded peak)


def test_heap_policies_apply_on_glibc_and_can_be_left_out(monkeypatch):
    """glibc's mmap threshold is fixed for slice, one kept heap for tokenize; elsewhere, or
    with ATLASPREP_MALLOC=system, nothing is changed and the calls say so."""
    from atlasprep import _heap

    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert map_large_allocations() is expected
    assert _heap.keep_allocations() is expected
    monkeypatch.setenv("ATLASPREP_MALLOC", "system")
    _heap._mallopt.cache_clear()
    try:
        assert map_large_allocations() is False
        assert _heap.keep_allocations() is False
    finally:
        _heap._mallopt.cache_clear()


def test_slice_holds_one_batch_and_no_ontology_while_streaming(small_census, tmp_path, monkeypatch):
    """While the next batch is read, the writer's loop holds no earlier batch; the ontology
    files the filter needed are gone before the first batch."""
    from cellxgene_ontology_guide.supported_versions import load_ontology_file

    opened = slice_api.open_source
    released: list[bool] = []

    def watched(spec):  # type: ignore[no-untyped-def]
        source = opened(spec)
        real = source.iter_batches

        def iter_batches(*args, **kwargs):  # type: ignore[no-untyped-def]
            previous = None
            for batch in real(*args, **kwargs):
                released.append(load_ontology_file.cache_info().currsize == 0)
                if previous is not None:
                    assert previous() is None, "the previous batch is still held"
                previous = weakref.ref(batch.X)
                yield batch
                del batch

        source.iter_batches = iter_batches
        return source

    monkeypatch.setattr(slice_api, "open_source", watched)
    spec = SourceSpec(census_uri=str(small_census), filter=CellFilter(tissue=("lung",)), batch_size=50)
    result = slice_cells(SliceConfig(source=spec, out=tmp_path / "lung.h5ad"))
    assert result.n_cells > 100
    assert len(released) > 2
    assert all(released)


@pytest.mark.parametrize("suffix", ["h5ad", "zarr"])
def test_obs_strings_are_written_in_slices_as_anndata_writes_them(tmp_path, monkeypatch, suffix):
    values = ["b", None, "é", "a", "", "b", "日本", None, "z", "a", "B"]
    column = pa.chunked_array([pa.array(values[:4]), pa.array(values[4:])]).cast(pa.large_string())
    categorical = pd.Categorical(values, categories=sorted({v for v in values if v is not None}))
    ids = np.array([f"cell{i}" for i in range(len(values))], dtype=object)
    sizes: list[int] = []

    class Sliced:  # records how many values each slice turns into Python objects
        def __init__(self, array):  # type: ignore[no-untyped-def]
            self.array = array

        def __len__(self) -> int:
            return len(self.array)

        def slice(self, start, length):  # type: ignore[no-untyped-def]
            part = self.array.slice(start, length)
            sizes.append(len(part))
            return part

    monkeypatch.setattr(_obs, "STRING_SLICE", 3)
    ours_path, theirs_path = tmp_path / f"ours.{suffix}", tmp_path / f"theirs.{suffix}"
    ours = h5py.File(ours_path, "w") if suffix == "h5ad" else zarr.open_group(ours_path, mode="w")
    theirs = h5py.File(theirs_path, "w") if suffix == "h5ad" else zarr.open_group(theirs_path, mode="w")
    with ad.settings.override(auto_shard_zarr_v3=False):
        _obs.write_strings(ours, "ids", Sliced(pa.array(ids.tolist(), type=pa.large_string())))
        _obs._write_categorical(ours, "kind", column)
        write_elem(theirs, "ids", ids)
        write_elem(theirs, "kind", categorical)
    # h5py: 3 at a time; zarr: whole chunks of its own size (250,000 strings at a million)
    bound = 3 if suffix == "h5ad" else max(3, ours["ids"].chunks[0])
    assert sizes
    assert max(sizes) <= bound
    assert sum(sizes) == len(ids)
    assert suffix == "zarr" or len(sizes) == 4
    for name in ("ids", "kind", "kind/codes", "kind/categories"):
        assert dict(ours[name].attrs) == dict(theirs[name].attrs)
    for name in ("ids", "kind/codes", "kind/categories"):
        a, b = ours[name], theirs[name]
        assert a.shape == b.shape
        assert a.dtype == b.dtype
        assert a.chunks == b.chunks
        assert np.array_equal(np.asarray(a[()], dtype=object), np.asarray(b[()], dtype=object))
    if suffix == "h5ad":
        ours.close()
        theirs.close()


def test_each_command_gets_its_heap_policy_before_it_loads(monkeypatch):
    from atlasprep import _heap
    from atlasprep.cli import _app

    called: list[str] = []
    monkeypatch.setattr(_heap, "keep_allocations", lambda: called.append("keep"))
    monkeypatch.setattr(_heap, "map_large_allocations", lambda: called.append("map"))
    for command in (["tokenize"], ["run"], ["slice"], ["validate"], None):
        _app._heap_policy(command)
    assert called == ["keep", "keep", "map"]
