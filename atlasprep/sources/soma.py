"""Cells from a SOMA Experiment (the Census, a local copy, the demo atlas), streamed in batches.

Memory is bounded by the batch, not by the query: each batch reads its own obs rows and X
coordinates with small TileDB read buffers, converted read by read (tiledbsoma's defaults, 1 GiB
in the Census settings, would dominate the footprint otherwise), and the next batch is read on a
background thread while the current one is consumed.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import tiledbsoma as soma

from atlasprep.errors import InputFormatError, SourceError, UsageError
from atlasprep.sources._csr import RowMap, sized_tables_to_csr, tables_to_csr
from atlasprep.sources.base import (
    NNZ_PER_CELL,
    CellBatch,
    SourceInfo,
    plan_chunks,
    read_ahead,
    read_buffer_bytes,
)
from atlasprep.sources.filters import CompiledFilter, ResolvedFilter, compile_filter
from atlasprep.sources.where import arrow_column_type, check_columns, check_types, columns_of

__all__ = ["SomaSource", "tiledb_config_for_batches"]

log = logging.getLogger("atlasprep.sources")

_MiB = 1024**2
# batches read ahead of the consumer: one, read while the consumer works on its batch. Each
# batch in flight costs its CSR matrix (8 bytes a value), one incomplete read's tables and
# TileDB's tiles (it cost its whole Arrow tables too, about 400 MB for 8,192 Census-density
# cells, before reads were converted one by one), and a second read ahead gained no speed on
# 2 cores (a 43,588-cell slice read: 1,672 MB peak with two ahead and an 8x budget, 930 MB with one and 2x).
READ_AHEAD = 1
# A gene selection is read as TileDB column ranges only while it is at most this share of X's
# columns; beyond that every column is read and the rest dropped while converting, which costs
# less than a range per gene (20,032 of 21,265 genes: 0.98 s against 0.75 s per 8,192 cells).
RANGES_UP_TO = 0.5
# var's gene ID column, by preference: the Census's, then tiledbsoma.io.from_anndata's default
_GENE_ID_COLUMNS = ("feature_id", "var_id")


def tiledb_config_for_batches(
    batch_size: int, *, mean_nnz_per_cell: int = NNZ_PER_CELL, trim: bool = True
) -> dict[str, Any]:
    """TileDB settings for reading batches of ``batch_size`` cells.

    tiledbsoma allocates ``soma.init_buffer_bytes`` for each column it reads (two int64
    coordinates and the value for X); a batch that does not fit is read in several incomplete
    reads, each converted and released while TileDB fills the next (:mod:`atlasprep.sources._csr`),
    so a buffer needs to hold only a sixteenth of a batch at a typical Census density (4 MiB at
    the default 4,096 cells; 64 MiB buffers cost about 100 MB more a batch, with no speed gain
    measurable on a shared 2-core machine). TileDB's reader keeps its tiles within
    ``sm.mem.total_budget``, twice a whole batch's buffer, as before: the tile offsets of a
    large array must fit in it.

    ``trim=False`` stops TileDB calling ``malloc_trim`` as each query ends (``sm.mem.malloc_trim``),
    which hands every heap's free memory back to the system, so the next read's buffers fault
    in again, zero-filled: in three interleaved pairs of 100,000-cell StreamDataset epochs (rank,
    no workers) 23.7-27.5k cells/s against 17.9-20.9k, 0.27-0.31M page faults against
    0.83-0.95M, at 1.53-1.56 GB peak RSS instead of 1.34-1.36 GB (the freed memory stays with
    each thread's heap). For a loader, not for ``slice``, whose peak is bounded.
    """
    per_column = batch_size * mean_nnz_per_cell * 8
    batch_buffer = int(min(max(per_column, 16 * _MiB), 256 * _MiB))
    buffer = read_buffer_bytes(batch_size, mean_nnz_per_cell)
    return {
        "soma.init_buffer_bytes": buffer,
        "py.init_buffer_bytes": buffer,
        "sm.mem.total_budget": 2 * batch_buffer,
        "sm.mem.reader.sparse_global_order.ratio_array_data": 0.3,
        **({} if trim else {"sm.mem.malloc_trim": "false"}),
    }


class SomaSource:
    """A :class:`~atlasprep.sources.base.CellSource` over ``experiment`` (opened for read).

    ``owner`` is the object to close with the source (the Census collection it came from).
    """

    def __init__(
        self,
        experiment: soma.Experiment,
        *,
        info: SourceInfo,
        measurement: str = "RNA",
        X_name: str = "raw",
        owner: Any = None,
    ) -> None:
        self.info = info
        self._exp = experiment
        self._owner = owner if owner is not None else experiment
        if measurement not in experiment.ms:
            raise SourceError(
                f"{info.uri}: no measurement {measurement!r} (found: {', '.join(experiment.ms.keys())})"
            )
        self._ms = experiment.ms[measurement]
        if X_name not in self._ms.X:
            layers = sorted(self._ms.X.keys())
            fix = f"; name one with --layer (it has: {', '.join(layers)})" if layers else " (it has none)"
            raise SourceError(f"{info.uri}: no X layer {X_name!r} in ms[{measurement!r}]{fix}")
        X = self._ms.X[X_name]
        if not isinstance(X, soma.SparseNDArray):
            raise SourceError(f"{info.uri}: X[{X_name!r}] is not a sparse array")
        self._X = X
        self._obs_columns = tuple(experiment.obs.schema.names)
        self._tile = _row_tile(X)
        # cached on the source itself: a functools.cache on these methods held every source
        # (its open arrays, and its TileDB context's threads) until the process ended
        self._var: pd.DataFrame | None = None
        self._distinct: dict[str, Sequence[str] | None] = {}

    # -- metadata ---------------------------------------------------------------------------
    @property
    def obs_columns(self) -> tuple[str, ...]:
        return self._obs_columns

    @property
    def n_cells(self) -> int:
        return int(self._exp.obs.count)

    def distinct_values(self, column: str) -> Sequence[str] | None:
        if column not in self._distinct:
            self._distinct[column] = self._enumeration(column)
        return self._distinct[column]

    def _enumeration(self, column: str) -> Sequence[str] | None:
        try:
            values = self._exp.obs.get_enumeration_values([column])[column]
        except Exception:  # not a dictionary column: the values are not known up front
            return None
        return [str(v) for v in values.to_pylist() if v is not None]

    def compile(self, resolved: ResolvedFilter) -> CompiledFilter:
        where = resolved.filter.where_expr
        if where is not None:  # checked against the schema: tiledbsoma's own errors are pybind's
            check_columns(where, self._obs_columns, source=self.info.uri)
            schema = self._exp.obs.schema
            types = {c: arrow_column_type(schema.field(c).type) for c in columns_of(where)}
            check_types(where, types, source=self.info.uri)
        missing = [c for c in resolved.values if c not in self._obs_columns]
        if missing:
            raise InputFormatError(
                f"{self.info.uri}: obs has no column {', '.join(missing)}; "
                "this store does not follow the Census obs schema"
            )
        has_primary = "is_primary_data" in self._obs_columns
        return compile_filter(resolved, self.distinct_values, has_primary=has_primary)

    def select(self, compiled: CompiledFilter) -> np.ndarray:
        value_filter = compiled.value_filter()
        try:
            table = self._exp.obs.read(column_names=["soma_joinid"], value_filter=value_filter).concat()
        except (soma.SOMAError, ValueError, TypeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(
                f"{self.info.uri}: tiledbsoma refused the filter {value_filter!r}: {reason}"
            ) from None
        ids = table["soma_joinid"].to_numpy()
        return np.sort(ids).astype(np.int64, copy=False)

    def obs_values(self, positions: np.ndarray, columns: Sequence[str]) -> pd.DataFrame:
        self._check_columns(columns)
        if len(positions) == 0:
            return pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
        table = self._exp.obs.read(coords=(positions,), column_names=["soma_joinid", *columns]).concat()
        table = _in_order(table, positions)
        return table.select(list(columns)).to_pandas()

    def var(self) -> pd.DataFrame:
        if self._var is None:
            var = self._ms.var.read().concat().to_pandas()
            # the Census names genes feature_id; tiledbsoma.io.from_anndata, var_id
            ids = next((c for c in _GENE_ID_COLUMNS if c in var.columns), None)
            if ids is None:
                raise InputFormatError(
                    f"{self.info.uri}: ms[RNA].var has no gene ID column ({' or '.join(_GENE_ID_COLUMNS)}; "
                    f"it has: {', '.join(map(str, var.columns))})"
                )
            var = var.sort_values("soma_joinid").set_index(ids, drop=True)
            var.index.name = None
            self._var = var
        return self._var

    # -- streaming --------------------------------------------------------------------------
    def iter_batches(
        self,
        positions: np.ndarray,
        *,
        var_positions: np.ndarray | None,
        batch_size: int,
        obs_columns: Sequence[str] | None = None,
    ) -> Iterator[CellBatch]:
        columns = list(obs_columns) if obs_columns is not None else list(self._obs_columns)
        self._check_columns(columns)
        if "soma_joinid" not in columns:
            columns.insert(0, "soma_joinid")
        n_var = int(self._X.shape[1]) if var_positions is None else len(var_positions)
        col_lut = None
        if var_positions is not None:  # X column -> output column
            col_lut = np.full(int(self._X.shape[1]), -1, dtype=np.int64)
            col_lut[var_positions] = np.arange(len(var_positions))
        chunks, sizes = self._plan_chunks(positions, batch_size)
        if not chunks:
            return
        if var_positions is not None:
            sizes = [None] * len(chunks)  # nnz counts every gene: no use for a gene selection
        by_range = var_positions is not None and len(var_positions) <= RANGES_UP_TO * self._X.shape[1]
        # Reads run ahead on worker threads (TileDB releases the GIL), at most READ_AHEAD batches
        # in flight, so the next batches load while this one is consumed, in order.
        with ThreadPoolExecutor(max_workers=READ_AHEAD, thread_name_prefix="atlasprep-soma") as pool:
            pending: deque[Future[CellBatch]] = deque()
            for chunk, size in zip(chunks, sizes, strict=True):
                ranges = var_positions if by_range else None
                pending.append(pool.submit(self._read, chunk, columns, ranges, col_lut, n_var, size))
                if len(pending) > READ_AHEAD:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def _plan_chunks(
        self, positions: np.ndarray, batch_size: int
    ) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        """Batches within the cell and value budgets, from the Census ``nnz`` column where obs
        has it, with each batch's values per cell (None where obs has no usable ``nnz``)."""
        nnz = None
        if "nnz" in self._obs_columns:
            nnz = self.obs_values(positions, ["nnz"])["nnz"].to_numpy(dtype=np.float64, na_value=np.nan)
            if not (np.all(np.isfinite(nnz)) and np.all(nnz >= 0)):
                nnz = None  # not counts: batches by cells alone, each read converted table by table
        chunks = plan_chunks(positions, batch_size, nnz, tile=self._tile)
        if nnz is None:
            return chunks, [None] * len(chunks)
        ends = np.cumsum([len(c) for c in chunks])
        return chunks, list(np.split(nnz.astype(np.int64), ends[:-1]))

    def _read(
        self,
        chunk: np.ndarray,
        columns: list[str],
        var_positions: np.ndarray | None,
        col_lut: np.ndarray | None,
        n_var: int,
        sizes: np.ndarray | None = None,
    ) -> CellBatch:
        """The cells of ``chunk``: X read at ``var_positions`` (None: every column), converted
        through ``col_lut``; ``sizes``: each cell's values (obs ``nnz``), when known."""
        obs = self._exp.obs.read(coords=(chunk,), column_names=columns).concat()
        obs = _in_order(obs, chunk)
        coords = (chunk,) if var_positions is None else (chunk, var_positions)
        # each incomplete read is converted and released while TileDB fills the next (never a list)
        X = None
        if sizes is not None:
            with contextlib.closing(self._tables(coords)) as tables:
                X = sized_tables_to_csr(tables, RowMap(chunk), len(chunk), n_var, sizes)
        if X is None:  # no sizes, or obs nnz was wrong: a second read, converted table by table
            with contextlib.closing(self._tables(coords)) as tables:
                X = tables_to_csr(tables, RowMap(chunk), len(chunk), n_var, col_lut)
        return CellBatch(cell_ids=chunk.astype(str), obs=obs, X=X)

    def _tables(self, coords: tuple[Any, ...]) -> Generator[pa.Table, None, None]:
        """X's tables at ``coords``, TileDB's next incomplete read running on a thread of its
        own while the caller converts this one (one read's buffers more in memory)."""
        yield from read_ahead(self._X.read(coords=coords).tables())

    def _check_columns(self, columns: Sequence[str]) -> None:
        missing = [c for c in columns if c not in self._obs_columns]
        if missing:
            raise InputFormatError(
                f"{self.info.uri}: obs has no column {', '.join(missing)} "
                f"(it has: {', '.join(self._obs_columns)})"
            )

    def presence(self, positions: np.ndarray | None = None) -> tuple[tuple[str, ...], np.ndarray]:
        """(dataset ids, datasets × var bool): which genes each dataset of the cells at
        ``positions`` measured (the Census's ``feature_dataset_presence_matrix``); nothing for a
        store without it."""
        owner: Any = self._owner
        measurement: Any = self._ms
        try:
            matrix = measurement["feature_dataset_presence_matrix"]
            table = owner["census_info"]["datasets"]
        except (KeyError, TypeError):
            return (), np.ones((0, int(self._X.shape[1])), dtype=bool)
        chosen = np.arange(self.n_cells) if positions is None else positions
        wanted = self._datasets_of(chosen)
        ids = table.read(column_names=["soma_joinid", "dataset_id"]).concat().to_pandas()
        rows = ids.set_index("dataset_id").loc[wanted, "soma_joinid"].to_numpy(dtype=np.int64)
        out = np.zeros((len(wanted), int(self._X.shape[1])), dtype=bool)
        if len(rows):
            coo = matrix.read(coords=(rows,)).tables().concat()
            row = pd.Index(rows).get_indexer(coo["soma_dim_0"].to_numpy())
            out[row, coo["soma_dim_1"].to_numpy()] = coo["soma_data"].to_numpy()
        return tuple(wanted), out

    def _datasets_of(self, positions: np.ndarray) -> list[str]:
        """The distinct ``dataset_id`` of the cells at ``positions``, sorted: deduplicated in
        Arrow, so a million cells never become a million Python strings."""
        if len(positions) == 0:
            return []
        column = self._exp.obs.read(coords=(positions,), column_names=["dataset_id"]).concat()["dataset_id"]
        if pa.types.is_dictionary(column.type):
            column = column.unify_dictionaries()
        distinct = pc.unique(column)  # of the codes, for a dictionary column: no string a cell
        if pa.types.is_dictionary(distinct.type):
            distinct = distinct.cast(distinct.type.value_type)
        return sorted(str(v) for v in distinct.to_pylist() if v is not None)

    def citations(self, positions: np.ndarray) -> list[dict[str, Any]]:
        """The Census datasets the cells at ``positions`` come from, with what CELLxGENE asks
        users to cite (``census_info/datasets``: title, collection DOI, citation); none for a
        store without that table."""
        owner: Any = self._owner
        try:
            table = owner["census_info"]["datasets"]
        except (KeyError, TypeError):
            return []
        wanted = self._datasets_of(positions)
        columns = ["dataset_id", "dataset_title", "collection_name", "collection_doi", "citation"]
        present = [c for c in columns if c in table.schema.names]
        frame = table.read(column_names=present).concat().to_pandas()
        frame = frame[frame["dataset_id"].astype(str).isin(wanted)].sort_values("dataset_id")
        rows = frame.to_dict("records")
        return [{str(k): (None if v == "" else str(v)) for k, v in row.items()} for row in rows]

    def close(self) -> None:
        self._owner.close()


def _row_tile(X: soma.SparseNDArray) -> int | None:
    """The rows of one of ``X``'s tiles (its ``soma_dim_0`` extent), or None where the schema
    does not say (batches then ignore tiles)."""
    try:
        extent = json.loads(X.schema_config_options().dims)["soma_dim_0"]["tile"]
        tile = int(extent)
    except Exception:  # any other layout, or a tiledbsoma without the call
        return None
    return tile if tile > 0 else None


def _in_order(table: pa.Table, positions: np.ndarray) -> pa.Table:
    """Rows of ``table`` (which has soma_joinid) in the order of ``positions``."""
    ids = table["soma_joinid"].to_numpy()
    if len(ids) != len(positions):
        raise SourceError(f"obs read returned {len(ids)} rows for {len(positions)} soma_joinids")
    if np.array_equal(ids, positions):
        return table
    order = soma.IntIndexer(ids).get_indexer(positions)
    return table.take(pa.array(order))
