"""SOMA batches end on X's tile rows where the budgets allow (a read that ends inside a tile row
decodes that row's tiles again for the next batch)."""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasprep.sources import CellFilter, open_census, resolve_filter
from atlasprep.sources.base import NNZ_PER_CELL, TILE_SLACK, plan_chunks
from atlasprep.sources.soma import _row_tile


def _ends_on_tile_rows(chunks: list[np.ndarray], tile: int) -> list[bool]:
    return [int(a[-1]) // tile != int(b[0]) // tile for a, b in itertools.pairwise(chunks)]


def test_a_slice_that_starts_inside_a_tile_row_reaches_the_next_and_then_keeps_to_whole_rows():
    positions = np.arange(87_176, 96_862)  # starts 1,160 cells into a 2,048-cell tile row
    nnz = np.full(len(positions), 2_008)  # just over the budget's 2,000 a cell
    chunks = plan_chunks(positions, 4_096, nnz, tile=2_048)
    assert [len(c) for c in chunks] == [2_936, 4_096, 2_654]
    assert all(_ends_on_tile_rows(chunks, 2_048))
    # without tiles, the budgets alone: every cut inside a tile row
    plain = plan_chunks(positions, 4_096, nnz)
    assert not any(_ends_on_tile_rows(plain, 2_048))


def test_dense_cells_end_their_batch_early_even_off_a_tile_row():
    positions = np.arange(10_000)
    nnz = np.full(len(positions), 6 * NNZ_PER_CELL)  # a batch's values in 683 cells
    chunks = plan_chunks(positions, 4_096, nnz, tile=2_048)
    assert max(len(c) for c in chunks) <= 4_096 // 6 * (1 + TILE_SLACK)
    assert np.array_equal(np.concatenate(chunks), positions)


def test_without_a_tile_the_plan_is_the_budgets_alone():
    positions = np.arange(5)
    assert [len(c) for c in plan_chunks(positions, 2)] == [2, 2, 1]
    assert [len(c) for c in plan_chunks(positions, 2, tile=None)] == [2, 2, 1]
    assert [len(c) for c in plan_chunks(positions, 2, tile=2)] == [2, 2, 1]  # rows {0,1} {2,3} {4}


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 3_000),
    st.integers(0, 5_000),
    st.integers(1, 600),
    st.sampled_from([1, 7, 64, 256, 2_048]),
    st.integers(0, 2**32 - 1),
    st.booleans(),
    st.booleans(),
)
def test_tile_plans_cover_every_cell_in_order_within_the_budgets(
    n, first, batch_size, tile, seed, with_nnz, gaps
):
    rng = np.random.default_rng(seed)
    steps = rng.integers(1, 4, n) if gaps else np.ones(n, dtype=np.int64)
    positions = first + np.cumsum(steps) - steps[0]
    nnz = rng.integers(0, 5 * NNZ_PER_CELL, n) if with_nnz else None
    chunks = plan_chunks(positions, batch_size, nnz, tile=tile)
    assert all(len(c) for c in chunks)
    assert np.array_equal(np.concatenate(chunks), positions)
    budget = batch_size * NNZ_PER_CELL * (1 + TILE_SLACK)
    start = 0
    for chunk in chunks:
        assert len(chunk) <= batch_size  # the cells never over
        if nnz is not None and len(chunk) > 1:  # one cell alone may hold more than a batch's values
            assert nnz[start : start + len(chunk)].sum() <= budget
        start += len(chunk)
    if nnz is None and batch_size >= 2 * tile and not gaps:  # a row always fits: every cut on one
        assert all(_ends_on_tile_rows(chunks, tile))


def test_the_source_reads_its_tile_rows_from_the_schema_and_batches_on_them(small_census):
    source = open_census(census_uri=str(small_census))
    try:
        assert _row_tile(source._X) == 2_048  # the demo store's soma_dim_0 extent
        positions = source.select(source.compile(resolve_filter(CellFilter())))[37:]
        source._tile = None
        want = sp.vstack([b.X for b in source.iter_batches(positions, var_positions=None, batch_size=100)])
        source._tile = 64
        batches = list(source.iter_batches(positions, var_positions=None, batch_size=100))
        ids = [b.cell_ids.astype(np.int64) for b in batches]
        nnz = [b.X.getnnz(axis=1) for b in batches]
        for on_row, values, after in zip(_ends_on_tile_rows(ids, 64), nnz, nnz[1:], strict=False):
            # off a tile row only where the values filled the batch (dense demo cells)
            assert on_row or values.sum() + after[0] > 100 * NNZ_PER_CELL
        assert sum(_ends_on_tile_rows(ids, 64)) >= len(batches) // 2
        assert np.array_equal(np.concatenate(ids), positions)
        assert (sp.vstack([b.X for b in batches]) != want).nnz == 0
    finally:
        source.close()


def test_the_next_incomplete_read_is_under_way_while_one_is_converted(small_census):
    """TileDB fills the next read while the caller converts this one, and never more than that."""
    import threading
    import time

    source = open_census(census_uri=str(small_census))
    fetched: list[int] = []
    wanted = threading.Event()

    class Read:
        def tables(self):  # type: ignore[no-untyped-def]
            for i in range(4):
                fetched.append(i)
                if i == 1:
                    wanted.set()
                yield i

    try:
        source._X = type("X", (), {"read": lambda self, coords: Read()})()
        tables = source._tables((np.arange(3),))
        assert next(tables) == 0
        assert wanted.wait(5)  # the second read started before the first was handed back
        time.sleep(0.05)
        assert fetched == [0, 1]  # and no third while the caller holds the first
        assert list(tables) == [1, 2, 3]
        tables.close()
    finally:
        source._X = None
        source.close()


def test_an_nnz_column_that_is_no_count_plans_by_cells(small_census, monkeypatch):
    """A store whose obs nnz holds missing or negative values: batches by cells alone (the
    values cannot budget them), read and converted as if it had no nnz."""
    import pandas as pd

    source = open_census(census_uri=str(small_census))
    try:
        positions = source.select(source.compile(resolve_filter(CellFilter())))
        want = sp.vstack([b.X for b in source.iter_batches(positions, var_positions=None, batch_size=100)])
        real = source.obs_values
        for bad in (np.nan, -1.0):

            def broken(where, columns, bad=bad):  # type: ignore[no-untyped-def]
                frame = real(where, columns)
                if "nnz" in columns:
                    frame["nnz"] = pd.array(np.where(np.arange(len(frame)) % 7 == 3, bad, 5.0))
                return frame

            monkeypatch.setattr(source, "obs_values", broken)
            chunks, sizes = source._plan_chunks(positions, 100)
            assert [len(c) for c in chunks] == [len(c) for c in plan_chunks(positions, 100, tile=2_048)]
            assert sizes == [None] * len(chunks)
            got = sp.vstack([b.X for b in source.iter_batches(positions, var_positions=None, batch_size=100)])
            assert (got != want).nnz == 0
    finally:
        source.close()
