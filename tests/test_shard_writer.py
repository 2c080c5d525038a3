"""Shards: every cell exactly once, in its split, shuffled by seed, the same bytes every time."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from atlasprep.shard import FORMATS, ShardLayout, ShardWriter, ragged, read_shard


def _build(store, splits, *, batch, cells_per_shard=7, seed=3, shuffle=True, fmt="arrow"):
    layout = ShardLayout.plan(splits, cells_per_shard=cells_per_shard, seed=seed, shuffle=shuffle)
    writer = ShardWriter(store, layout, fmt=fmt)
    n = len(splits)
    for start in range(0, n, batch):
        cells = np.arange(start, min(start + batch, n))
        lengths = cells % 5 + 1
        offsets = np.r_[0, np.cumsum(lengths)]
        ids = np.repeat(cells, lengths).astype(np.int32)  # tokens encode their cell
        table = pa.table(
            {"cell_id": pa.array(cells.astype(str)), "input_ids": ragged(ids, offsets, pa.int32())}
        )
        writer.add(start, table)
    return writer.finish()


def _read(store, info):
    return read_shard(store, info.path)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("shuffle", [True, False])
def test_every_cell_once_in_its_split(tmp_path, shuffle, fmt):
    rng = np.random.default_rng(0)
    splits = rng.choice(np.array(["train", "val", "test"]), size=100, p=[0.7, 0.2, 0.1])
    shards = _build(tmp_path, splits, batch=13, shuffle=shuffle, fmt=fmt)
    assert all(info.path.endswith(FORMATS[fmt].suffix) for info in shards)
    seen = []
    for info in shards:
        table = _read(tmp_path, info)
        ids = [int(c) for c in table["cell_id"].to_pylist()]
        assert info.n_cells == len(ids) <= 7
        assert all(splits[c] == info.split for c in ids)
        for c, tokens in zip(ids, table["input_ids"].to_pylist(), strict=True):
            assert tokens == [c] * (c % 5 + 1)
        assert info.n_tokens == sum(c % 5 + 1 for c in ids)
        seen += ids
    assert sorted(seen) == list(range(100))
    train = [int(c) for i in shards if i.split == "train" for c in _read(tmp_path, i)["cell_id"].to_pylist()]
    assert (train == sorted(train)) != shuffle  # shuffled across the whole split, or source order


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_same_bytes_whatever_the_batching_and_other_bytes_for_another_seed(tmp_path, fmt):
    splits = np.array(["train"] * 60 + ["test"] * 15)
    for name in "abc":
        (tmp_path / name).mkdir()
    a = _build(tmp_path / "a", splits, batch=9, fmt=fmt)
    b = _build(tmp_path / "b", splits, batch=40, fmt=fmt)
    c = _build(tmp_path / "c", splits, batch=9, seed=4, fmt=fmt)
    assert [(i.path, i.sha256) for i in a] == [(i.path, i.sha256) for i in b]
    assert [i.sha256 for i in a] != [i.sha256 for i in c]
    assert not (tmp_path / "a" / ".work").exists()


def test_a_shard_is_assembled_with_one_spill_open_at_a_time(tmp_path, monkeypatch):
    """A corpus of thousands of spills must not hold them all open (memory-mapped) while a
    shard is gathered from them: the file handles would run out (a soft limit of 1,024 is
    common) and every spill's touched pages would stay mapped, growing RSS with the corpus."""
    opened: list[pa.MemoryMappedFile] = []
    most = 0
    real = pa.memory_map

    def counting(path, *args, **kwargs):
        nonlocal most
        most = max(most, 1 + sum(not m.closed for m in opened))
        opened.append(real(path, *args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(pa, "memory_map", counting)
    splits = np.array(["train"] * 90)
    shards = _build(tmp_path, splits, batch=5, cells_per_shard=30)  # 18 spills, 3 shards
    assert len(opened) > 18  # the shards read the spills (cells shuffled across them) again and again
    assert most == 1
    monkeypatch.setattr(pa, "memory_map", real)
    ids = sorted(int(c) for info in shards for c in _read(tmp_path, info)["cell_id"].to_pylist())
    assert ids == list(range(90))


def test_splits_given_as_codes_lay_out_cells_as_their_names_do():
    """Codes (a byte a cell, in any name order, unused names allowed) give the very layout, so
    the very shards, that the split names give."""
    splits = np.random.default_rng(1).choice(np.array(["train", "val", "test"]), size=200)
    by_name = ShardLayout.plan(splits, cells_per_shard=7, seed=3)
    names = ["val", "unused", "train", "test"]
    codes = np.array([names.index(s) for s in splits])
    by_code = ShardLayout.plan_codes(codes, names, cells_per_shard=7, seed=3)
    assert by_name.names == by_code.names == ("test", "train", "val")
    assert np.array_equal(by_name.codes, by_code.codes)
    assert by_code.codes.itemsize == 1
    assert np.array_equal(by_name.slots, by_code.slots)
    assert dict(by_code.n_per_split) == {n: int((splits == n).sum()) for n in by_name.names}
    assert np.array_equal(np.array(by_code.names)[by_code.codes], splits)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("batches_a_spill", [1, 3])
def test_a_shard_gathers_the_spilled_rows_in_key_order(tmp_path, seed, batches_a_spill):
    """Rows spread over spills (some written as several record batches), a key range with keys
    never spilled: the gathered shard holds each spilled row of the range once, in key order,
    with its declared types (token lists spilled as uint16 come back as int32)."""
    from atlasprep.shard.spill import find_runs, gather_runs, spill_key, write_spill

    rng = np.random.default_rng(seed)
    slots = rng.permutation(400)[:300]  # 100 slots never spilled: gaps in every range
    expected = {}
    spills = []
    for k, part in enumerate(np.array_split(slots, 5)):
        lengths = rng.integers(0, 9, len(part))
        ids = [rng.integers(0, 60_000, n).astype(np.int32) for n in lengths]
        values = [rng.random(n).astype(np.float32) for n in lengths]
        table = pa.table(
            {
                "cell_id": pa.array([f"c{s}" for s in part]),
                "input_ids": pa.array(ids, type=pa.list_(pa.int32())),
                "values": pa.array(values, type=pa.list_(pa.float32())),
                "n": pa.array(lengths.astype(np.int64)),
            }
        )
        path = tmp_path / f"{k}.arrow"
        spill = write_spill(path, table, np.zeros(len(part), dtype=np.uint8), part, by_size=False)
        if batches_a_spill > 1:  # the same rows as several record batches
            with pa.OSFile(str(path)) as source:  # read into memory, not mapped: the file is rewritten
                rows = pa.ipc.open_file(source).read_all()
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, rows.schema) as writer:
                writer.write_table(rows, max_chunksize=-(-rows.num_rows // batches_a_spill))
        spills.append((path, spill.keys))
        for slot, a, b, c in zip(part.tolist(), ids, values, lengths.tolist(), strict=True):
            expected[int(spill_key(np.array(0), np.array(slot)))] = (f"c{slot}", a.tolist(), b.tolist(), c)
    assert pa.ipc.open_file(pa.memory_map(str(spills[0][0]))).schema.field("input_ids").type == pa.list_(
        pa.uint16()
    )
    schema = table.schema
    for low, n in [(0, 400), (17, 150), (250, 150)]:
        runs, n_rows = find_runs(spills, low, n)
        shard = gather_runs(schema, runs, n_rows)
        want = [expected[key] for key in range(low, low + n) if key in expected]
        assert shard.schema == schema
        assert shard.num_rows == n_rows == len(want)
        got = zip(*(shard[name].to_pylist() for name in ("cell_id", "input_ids", "values", "n")), strict=True)
        assert list(got) == [(c, a, pytest.approx(b), m) for c, a, b, m in want]
