"""The shard format conformance suite: every format in the registry passes every test here.

A new format joins :data:`atlasprep.shard.format.FORMATS` and runs this suite as it is (as each
zarr-python store backend runs one store suite). The tables encode their own coordinates: cell
``i`` has tokens ``i * 100 + j`` and values ``i + j / 10``, so every read is checked exactly.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlasprep.errors import InputFormatError
from atlasprep.shard import (
    FORMATS,
    ShardFormat,
    ShardLayout,
    ShardReader,
    ShardWriter,
    format_for,
    read_shard,
)
from atlasprep.shard.format import NA, sha256_of
from atlasprep.shard.store import shard_n_cells

_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)  # any unicode but surrogates


@pytest.fixture(params=sorted(FORMATS))
def fmt(request: pytest.FixtureRequest) -> ShardFormat:
    return FORMATS[request.param]


def _table(lengths: list[int], names: list[str | None] | None = None, *, categories: int = 3) -> pa.Table:
    """Cells with ``lengths`` tokens (zero allowed); ``names`` (null allowed) as ``cell_type``."""
    n = len(lengths)
    cells = np.repeat(np.arange(n), lengths)
    within = np.arange(len(cells)) - np.repeat(np.r_[0, np.cumsum(lengths)][:-1], lengths)
    offsets = pa.array(np.r_[0, np.cumsum(lengths)].astype(np.int32))
    ids = pa.array((cells * 100 + within).astype(np.int32))
    values = pa.array((cells + within / 10).astype(np.float32))
    if names is None:
        names = [None if i % 4 == 3 else f"cell type {i % 3} é 細胞" for i in range(n)]
    return pa.table(
        {
            "cell_id": pa.array([f"c{i}-ü" for i in range(n)], pa.string()),
            "input_ids": pa.ListArray.from_arrays(offsets, ids),
            "values": pa.ListArray.from_arrays(offsets, values),
            "cell_type": pa.array(names, pa.string()),
            "tissue": pa.array([f"t{i % categories}" for i in range(n)], pa.string()).dictionary_encode(),
            "n_genes": pa.array(np.arange(n, dtype=np.int64) * 7),
            "is_primary_data": pa.array(np.arange(n) % 2 == 0),
        }
    )


LENGTHS = [3, 0, 5, 1, 0, 0, 7, 2, 4, 0, 1]


def _write(fmt: ShardFormat, directory: Path, table: pa.Table, stem: str = "s") -> Path:
    path = directory / f"{stem}{fmt.suffix}"
    fmt.write(path, table, "input_ids")
    return path


def _expected_strings(column: pa.ChunkedArray) -> list[str]:
    return [NA if v is None else str(v) for v in column.to_pylist()]


def _check_ragged(reader: ShardReader, table: pa.Table, start: int, stop: int) -> None:
    for name in ("input_ids", "values"):
        flat, offsets = reader.ragged(name, start, stop)
        assert offsets.dtype == np.int64
        assert len(offsets) == stop - start + 1
        got = [flat[offsets[i] : offsets[i + 1]].tolist() for i in range(stop - start)]
        want = table[name].slice(start, stop - start).to_pylist()
        assert got == want, (name, start, stop)  # float32 values compare exactly: the same widening


def _check_shard(fmt: ShardFormat, path: Path, table: pa.Table) -> None:
    reader = fmt.open(path)
    assert reader.n_cells == table.num_rows
    assert reader.columns() == table.column_names
    for name in ("cell_id", "cell_type", "tissue"):
        assert reader.strings(name).tolist() == _expected_strings(table[name])
    back = reader.read_table()
    assert back.column_names == table.column_names
    assert back.num_rows == table.num_rows
    for name in table.column_names:
        assert back[name].to_pylist() == table[name].to_pylist(), name
        if not pa.types.is_dictionary(table[name].type):
            assert back[name].type == table[name].type, name
    assert back["cell_type"].null_count == table["cell_type"].null_count
    _check_ragged(reader, table, 0, table.num_rows)


# -- one table, every read --------------------------------------------------------------------


def test_a_shard_reads_back_as_written(fmt, tmp_path):
    table = _table(LENGTHS)
    _check_shard(fmt, _write(fmt, tmp_path, table), table)


def test_ragged_over_every_range(fmt, tmp_path):
    table = _table(LENGTHS)
    reader = fmt.open(_write(fmt, tmp_path, table))
    for start in range(table.num_rows + 1):
        for stop in range(start, table.num_rows + 1):
            _check_ragged(reader, table, start, stop)


def test_a_zarr_shard_looks_up_each_array_once(tmp_path):
    """Each group lookup reads the array's metadata (a request in object storage): a reader
    opens its flat arrays once, whatever the number of windows read."""
    table = _table(LENGTHS)
    reader = FORMATS["zarr"].open(_write(FORMATS["zarr"], tmp_path, table))
    looked_up: list[str] = []
    group = reader.group

    class Counting:
        attrs = group.attrs

        def __getitem__(self, name: str):  # type: ignore[no-untyped-def]
            looked_up.append(name)
            return group[name]

    reader.group = Counting()
    for start in range(0, table.num_rows, 3):
        _check_ragged(reader, table, start, min(start + 3, table.num_rows))
    assert looked_up.count("input_ids") == 1
    assert looked_up.count("values") == 1


@pytest.mark.parametrize("ahead", [True, False])
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32, np.uint16])
def test_zarr_chunks_decoded_from_their_files_are_what_zarr_reads(tmp_path, monkeypatch, dtype, ahead):
    """A local zarr shard's flat arrays are decoded chunk by chunk from their files, not through
    zarr-python: every window, read in order (keeping the last chunk) and at random, equals
    zarr's own read, across chunk edges, the last, padded chunk and a chunk of zeros that zarr
    writes no file for."""
    import zarr

    import atlasprep.shard.zarr as zarr_shard

    monkeypatch.setattr(zarr_shard, "_CHUNK", 64)
    monkeypatch.setattr(zarr_shard, "_READ_AHEAD", ahead)  # the next chunk decoded on a thread
    rng = np.random.default_rng(11)
    lengths = rng.integers(0, 40, 120)
    lengths[30:40] = 30  # 300 zeros: chunks 8-11 hold none but zeros
    flat = rng.integers(1, 1000, int(lengths.sum())).astype(dtype)
    starts = np.r_[0, np.cumsum(lengths)]
    flat[starts[30] : starts[40]] = 0
    offsets = pa.array(starts.astype(np.int32))
    table = pa.table(
        {
            "input_ids": pa.ListArray.from_arrays(offsets, pa.array(flat)),
            "values": pa.ListArray.from_arrays(offsets, pa.array(flat.astype(np.float32))),
            "cell_id": pa.array([f"c{i}" for i in range(len(lengths))]),
        }
    )
    path = tmp_path / "s.zarr"
    zarr_shard.write_zarr_shard(path, table, "input_ids")
    stored = sorted(int(p.name) for p in (path / "input_ids" / "c").iterdir())
    assert len(stored) < -(-len(flat) // 64)  # a chunk of zeros has no file
    whole = zarr.open_group(str(path), mode="r")["input_ids"][:]
    reader = zarr_shard.ZarrReader(path)
    windows = [(a, min(a + 7, len(lengths))) for a in range(0, len(lengths), 7)]
    windows += [tuple(sorted(rng.integers(0, len(lengths) + 1, 2))) for _ in range(40)]
    for start, stop in windows:
        data, offs = reader.ragged("input_ids", int(start), int(stop))
        assert data.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(data[offs[0] : offs[-1]], whole[starts[start] : starts[stop]])
        _check_ragged(reader, table, int(start), int(stop))
    chunks = reader._chunks["input_ids"]
    assert chunks is not None  # read from the files, not through zarr
    assert (chunks._ahead is not None) == ahead


def test_a_forked_process_never_waits_for_its_parents_read_ahead(tmp_path, monkeypatch):
    """A reader forked (a loader worker) while its parent decodes a chunk ahead reads that
    chunk itself: the parent's thread is not in the child, and its result never comes there."""
    import multiprocessing

    import atlasprep.shard.zarr as zarr_shard

    monkeypatch.setattr(zarr_shard, "_CHUNK", 64)
    lengths = np.full(50, 20)
    flat = np.arange(1000, dtype=np.int32)
    table = pa.table(
        {
            "input_ids": pa.ListArray.from_arrays(
                pa.array(np.r_[0, np.cumsum(lengths)].astype(np.int32)), pa.array(flat)
            )
        }
    )
    zarr_shard.write_zarr_shard(tmp_path / "s.zarr", table, "input_ids")
    from concurrent.futures import Future

    class Elsewhere:  # the parent's decoding thread, as a child sees it: its result never comes
        def submit(self, *args):  # type: ignore[no-untyped-def]
            return Future()

    monkeypatch.setattr(zarr_shard, "_decoder", Elsewhere)
    reader = zarr_shard.ZarrReader(tmp_path / "s.zarr")
    reader.ragged("input_ids", 0, 3)  # chunk 0 read, chunk 1 "decoding" on the parent's thread
    assert not reader._chunks["input_ids"]._ahead[2].done()

    def child(queue):  # type: ignore[no-untyped-def]
        data, offsets = reader.ragged("input_ids", 3, 50)
        queue.put(bool(np.array_equal(data[offsets[0] : offsets[-1]], flat[60:])))

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=child, args=(queue,))
    process.start()
    process.join(timeout=30)
    assert process.exitcode == 0, "the child hung or failed"
    assert queue.get(timeout=5) is True


def test_strings_over_ranges(fmt, tmp_path):
    table = _table(LENGTHS)
    reader = fmt.open(_write(fmt, tmp_path, table))
    for start, stop in [(0, 1), (2, 5), (3, 4), (5, None), (7, 7)]:
        for name in ("cell_id", "cell_type", "tissue"):
            got = reader.strings(name, start, stop)
            assert got.dtype == object
            end = table.num_rows if stop is None else stop
            assert got.tolist() == _expected_strings(table[name].slice(start, end - start)), name


def test_the_cheap_count_is_the_real_count(fmt, tmp_path):
    table = _table(LENGTHS)
    path = _write(fmt, tmp_path, table)
    reader = fmt.open(path)
    _, offsets = reader.ragged("input_ids", 0, reader.n_cells)
    assert shard_n_cells(path) == reader.n_cells == len(offsets) - 1 == reader.read_table().num_rows


def test_the_same_table_gives_the_same_bytes(fmt, tmp_path):
    table = _table(LENGTHS)
    first = _write(fmt, tmp_path, table, "a")
    second = _write(fmt, tmp_path, table, "b")
    assert sha256_of(first) == sha256_of(second)
    other = _write(fmt, tmp_path, _table(LENGTHS[:-1]), "c")
    assert sha256_of(other) != sha256_of(first)


def test_a_shard_of_no_tokens_and_no_cells(fmt, tmp_path):
    for stem, lengths in (("empty-cells", [0, 0, 0]), ("no-cells", [])):
        table = _table(lengths)
        _check_shard(fmt, _write(fmt, tmp_path, table, stem), table)


def test_a_slice_of_a_table_is_written_as_its_rows(fmt, tmp_path):
    table = _table(LENGTHS).slice(3, 6)
    _check_shard(fmt, _write(fmt, tmp_path, table), table)


def test_the_suffix_names_the_format(fmt, tmp_path):
    assert format_for(tmp_path / f"train-00000{fmt.suffix}") is fmt
    assert fmt.name in FORMATS
    assert FORMATS[fmt.name] is fmt
    with pytest.raises(InputFormatError, match="not a shard"):
        format_for(tmp_path / "train-00000.parquet")


def test_the_writer_writes_every_format_through_it(fmt, tmp_path):
    splits = np.array(["train"] * 9 + ["test"] * 2)
    writer = ShardWriter(tmp_path, ShardLayout.plan(splits, cells_per_shard=4, seed=1), fmt=fmt.name)
    writer.add(0, _table(LENGTHS))
    shards = writer.finish()
    assert all(s.path.endswith(fmt.suffix) for s in shards)
    assert sorted(c for s in shards for c in read_shard(tmp_path, s.path)["cell_id"].to_pylist()) == sorted(
        _table(LENGTHS)["cell_id"].to_pylist()
    )
    for shard in shards:
        assert sha256_of(tmp_path / shard.path) == shard.sha256
        assert shard_n_cells(tmp_path / shard.path) == shard.n_cells


# -- random tables, random ranges -------------------------------------------------------------


@st.composite
def _tables(draw: st.DrawFn) -> tuple[pa.Table, list[tuple[int, int]]]:
    lengths = draw(st.lists(st.integers(0, 6), max_size=25))
    names = draw(st.lists(st.none() | _TEXT, min_size=len(lengths), max_size=len(lengths)))
    bounds = st.integers(0, len(lengths))
    ranges = draw(st.lists(st.tuples(bounds, bounds).map(sorted), max_size=6))
    return _table(lengths, names, categories=draw(st.integers(1, 4))), [(a, b) for a, b in ranges]


@pytest.mark.parametrize("name", sorted(FORMATS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=_tables())
def test_random_tables_round_trip(name, drawn):
    fmt = FORMATS[name]
    table, ranges = drawn
    with tempfile.TemporaryDirectory() as directory:
        path = _write(fmt, Path(directory), table)
        _check_shard(fmt, path, table)
        reader = fmt.open(path)
        for start, stop in ranges:
            _check_ragged(reader, table, start, stop)
            assert reader.strings("cell_type", start, stop).tolist() == _expected_strings(
                table["cell_type"].slice(start, stop - start)
            )
        again = _write(fmt, Path(directory), table, "again")
        assert sha256_of(again) == sha256_of(path)


def test_a_zarr_shard_keeps_the_nulls_of_every_per_cell_column(tmp_path):
    """Nulls in booleans, integers and floats (nullable obs columns of an h5ad) as in strings: a
    mask beside the filled values, read back as nulls, the same table as an Arrow shard's."""
    from atlasprep.shard import FORMATS
    from atlasprep.shard.format import ShardFormatName, ragged

    table = pa.table(
        {
            "cell_id": pa.array(["a", "b", "c"]),
            "input_ids": ragged(np.arange(5, dtype=np.int32), np.array([0, 2, 3, 5]), pa.int32()),
            "flag": pa.array([True, None, False]),
            "count": pa.array([None, 2**60, -1], type=pa.int64()),
            "score": pa.array([0.5, None, None], type=pa.float32()),
            "label": pa.array([None, "x", "y"]),
        }
    )
    from atlasprep.shard.format import NA

    tables, strings = {}, {}
    for name in (ShardFormatName.arrow, ShardFormatName.zarr):
        fmt = FORMATS[name]
        path = tmp_path / f"s{fmt.suffix}"
        fmt.write(path, table, "input_ids")
        tables[name] = fmt.open(path).read_table()
        reader = fmt.open(path)
        strings[name] = {c: reader.strings(c).tolist() for c in ("flag", "count", "score", "label")}
    assert strings[ShardFormatName.zarr] == strings[ShardFormatName.arrow]  # per-cell reads alike
    assert strings[ShardFormatName.zarr]["flag"] == ["true", NA, "false"]
    for column in ("flag", "count", "score", "label"):
        assert tables[ShardFormatName.zarr][column].to_pylist() == table[column].to_pylist(), column
        assert tables[ShardFormatName.zarr][column].type == table[column].type, column
