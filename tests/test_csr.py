"""The compiled COO -> CSR conversion equals scipy's, in any order, with any joinid layout."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasprep.sources._csr import RowMap, tables_to_csr


@settings(max_examples=80, deadline=None)
@given(
    n_rows=st.integers(1, 40),
    n_cols=st.integers(1, 30),
    nnz=st.integers(0, 300),
    spread=st.sampled_from([1, 3, 1000]),  # contiguous joinids, a lookup table, a hash indexer
    n_tables=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_matches_scipy(n_rows, n_cols, nnz, spread, n_tables, seed):
    rng = np.random.default_rng(seed)
    chunk = np.sort(rng.choice(n_rows * spread, size=n_rows, replace=False)).astype(np.int64)
    if spread == 1:
        chunk = np.arange(n_rows, dtype=np.int64) + 17
    rows = rng.integers(0, n_rows, nnz)
    cols = rng.integers(0, n_cols, nnz)
    data = rng.integers(1, 50, nnz).astype(np.float32)
    splits = np.sort(rng.integers(0, nnz + 1, n_tables - 1))
    tables = [
        pa.table({"soma_dim_0": chunk[r], "soma_dim_1": c, "soma_data": d})
        for r, c, d in zip(
            np.split(rows, splits), np.split(cols, splits), np.split(data, splits), strict=True
        )
    ]
    got = tables_to_csr(tables, RowMap(chunk), n_rows, n_cols)
    want = sp.csr_matrix((data, (rows, cols)), shape=(n_rows, n_cols))
    assert got.has_canonical_format
    assert np.array_equal(got.indptr, want.indptr)
    assert np.array_equal(got.indices, want.indices)
    assert np.array_equal(got.data, want.data)


def test_column_map_selects_genes():
    chunk = np.array([5, 6], dtype=np.int64)
    table = pa.table(
        {"soma_dim_0": [5, 6, 6], "soma_dim_1": [10, 3, 10], "soma_data": np.ones(3, np.float32)}
    )
    lut = np.full(11, -1, dtype=np.int64)
    lut[[3, 10]] = [0, 1]
    got = tables_to_csr([table], RowMap(chunk), 2, 2, lut)
    assert got.toarray().tolist() == [[0, 1], [1, 1]]


@settings(max_examples=60, deadline=None)
@given(n_cols=st.integers(1, 40), nnz=st.integers(0, 300), keep=st.floats(0, 1), seed=st.integers(0, 2**16))
def test_column_map_drops_unwanted_columns(n_cols, nnz, keep, seed):
    """A read of every column keeps only the mapped genes, renumbered, in the map's order."""
    rng = np.random.default_rng(seed)
    n_rows = 7
    chunk = np.arange(n_rows, dtype=np.int64) + 3
    cell = rng.integers(0, n_rows * n_cols, nnz)
    cell = np.unique(cell)  # TileDB holds one value per (row, column)
    rows, cols = np.divmod(cell, n_cols)
    data = rng.integers(1, 50, len(cell)).astype(np.float32)
    wanted = np.flatnonzero(rng.random(n_cols) < keep)
    wanted = rng.permutation(wanted)  # output columns in any order of X columns
    lut = np.full(n_cols, -1, dtype=np.int64)
    lut[wanted] = np.arange(len(wanted))
    shuffled = rng.permutation(len(cell))
    table = pa.table(
        {"soma_dim_0": chunk[rows][shuffled], "soma_dim_1": cols[shuffled], "soma_data": data[shuffled]}
    )
    got = tables_to_csr([table], RowMap(chunk), n_rows, len(wanted), lut)
    want = sp.csr_matrix((data, (rows, cols)), shape=(n_rows, n_cols))[:, wanted]
    want.sort_indices()
    assert got.has_canonical_format
    assert np.array_equal(got.indptr, want.indptr)
    assert np.array_equal(got.indices, want.indices)
    assert np.array_equal(got.data, want.data)


@pytest.mark.parametrize("share", [0.3, 0.9])
def test_gene_selection_read_either_way_gives_the_same_counts(small_census, monkeypatch, share):
    """A gene list is read as column ranges or as every column with the rest dropped: the
    counts are the same either way."""
    import atlasprep.sources.soma as soma_source
    from atlasprep.sources import SourceSpec, open_source

    source = open_source(SourceSpec(census_uri=str(small_census)))
    try:
        n_var = len(source.var())
        rng = np.random.default_rng(3)
        genes = rng.permutation(n_var)[: int(share * n_var)]
        cells = np.sort(rng.choice(source.n_cells, 300, replace=False))
        got = {}
        for ranges_up_to in (0.0, 1.0):
            monkeypatch.setattr(soma_source, "RANGES_UP_TO", ranges_up_to)
            batches = source.iter_batches(cells, var_positions=genes, batch_size=128)
            got[ranges_up_to] = sp.vstack([b.X for b in batches]).tocsr()
        whole = sp.vstack(
            [b.X for b in source.iter_batches(cells, var_positions=None, batch_size=128)]
        ).tocsr()[:, genes]
        whole.sort_indices()
        for matrix in got.values():
            assert matrix.has_canonical_format
            assert (matrix != whole).nnz == 0
            assert np.array_equal(matrix.indices, whole.indices)
    finally:
        source.close()
