"""Writing the Census layout with tiledbsoma: the tree, obs and X batch by batch, then the rest.

Categorical columns are never written through the handle ``add_new_dataframe`` returns: in
tiledbsoma 2.3 that handle loses the category values (TileDB-SOMA #2879), so every DataFrame
is created, closed, and reopened for writing. Each obs batch carries only the categories it
uses; TileDB extends the column's enumeration as new ones arrive, which takes a new handle per
batch at a later timestamp (see ``CensusWriter._write``: the same tie of schema timestamps is
most likely what #2879 is).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import tiledbsoma as soma

from atlasprep.demo._catalog import Catalog
from atlasprep.demo._expression import Counts
from atlasprep.demo._plan import RowCodes, observation_joinids
from atlasprep.demo._schema import (
    OBS_PLATFORM_CONFIG,
    VAR_PLATFORM_CONFIG,
    X_PLATFORM_CONFIG,
    Field,
    arrow_schema,
)

__all__ = ["CellStats", "CensusWriter", "obs_table", "table", "x_batch"]

_GLOBAL_ORDER = soma.TileDBWriteOptions(sort_coords=False)


def table(fields: Sequence[Field], columns: Mapping[str, Any], schema: pa.Schema | None = None) -> pa.Table:
    """An Arrow table of ``fields`` (in their order) from plain column values."""
    schema = schema or arrow_schema(fields)
    arrays = []
    for f in fields:
        value, type_ = columns[f.name], schema.field(f.name).type
        arrays.append(value.cast(type_) if isinstance(value, pa.Array) else pa.array(value, type=type_))
    return pa.Table.from_arrays(arrays, schema=schema)


@dataclass(frozen=True, slots=True, kw_only=True)
class CellStats:
    """The Census's per-cell statistics of some consecutive cells."""

    nnz: npt.NDArray[np.int64]
    raw_sum: npt.NDArray[np.float64]
    sum_sq: npt.NDArray[np.float64]

    @classmethod
    def of(cls, counts: Counts) -> CellStats:
        n, rows = counts.n_rows, counts.rows
        square = np.square(counts.data, dtype=np.float64)
        return cls(
            nnz=np.bincount(rows, minlength=n),
            raw_sum=np.bincount(rows, weights=counts.data, minlength=n).astype(np.float64),
            sum_sq=np.bincount(rows, weights=square, minlength=n).astype(np.float64),
        )

    @classmethod
    def concat(cls, parts: Sequence[CellStats]) -> CellStats:
        return cls(
            **{k: np.concatenate([getattr(p, k) for p in parts]) for k in ("nnz", "raw_sum", "sum_sq")}
        )


def x_batch(counts: Counts, first_row: int) -> pa.RecordBatch:
    """X["raw"] COO values of ``counts``, whose row 0 is soma_joinid ``first_row``."""
    return pa.RecordBatch.from_arrays(
        [pa.array(counts.rows + first_row), pa.array(counts.cols), pa.array(counts.data)],
        names=["soma_dim_0", "soma_dim_1", "soma_data"],
    )


def obs_table(
    cat: Catalog,
    rows: RowCodes,
    stats: CellStats,
    *,
    seed: int,
    n_measured_vars: npt.NDArray[np.int64],
    schema: pa.Schema,
) -> pa.Table:
    """obs for ``rows``, with the statistics of the same cells."""
    keys = {"dataset": rows.dataset, "donor": rows.donor, "tissue": rows.tissue, "cell_type": rows.cell_type}
    nnz, raw_sum = stats.nnz, stats.raw_sum
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(nnz > 0, raw_sum / nnz, 0.0)
        variance = np.where(nnz > 1, (stats.sum_sq - raw_sum * mean) / (nnz - 1), 0.0)
    arrays: dict[str, pa.Array] = {
        "soma_joinid": pa.array(np.arange(rows.start, rows.start + len(nnz), dtype=np.int64)),
        "is_primary_data": pa.array(rows.is_primary),
        "observation_joinid": observation_joinids(seed, rows.source),
        "raw_sum": pa.array(raw_sum),
        "nnz": pa.array(nnz.astype(np.int64)),
        "raw_mean_nnz": pa.array(mean),
        "raw_variance_nnz": pa.array(np.maximum(variance, 0.0)),
        "n_measured_vars": pa.array(n_measured_vars[rows.dataset]),
    }
    for name, column in cat.columns.items():
        codes = column.codes[keys[column.key]]
        present = np.unique(codes)  # only the categories this batch uses
        index_type = schema.field(name).type.index_type
        indices = pa.array(np.searchsorted(present, codes), type=index_type)
        values = pa.array([column.vocabulary[i] for i in present], type=pa.large_string())
        arrays[name] = pa.DictionaryArray.from_arrays(indices, values)
    return pa.Table.from_arrays([arrays[f.name] for f in schema], schema=schema)


class CensusWriter:
    """The Census tree at ``root``; obs and X["raw"] are written batch by batch, then the rest."""

    def __init__(self, root: Path, *, n_cells: int, n_var: int, obs_schema: pa.Schema) -> None:
        self.root = root
        census: soma.Collection[Any]
        with soma.Collection.create(str(root)) as census:
            census.add_new_collection("census_info")
            data = census.add_new_collection("census_data")
            experiment = data.add_new_collection("homo_sapiens", soma.Experiment)
            obs = experiment.add_new_dataframe(
                "obs",
                schema=obs_schema,
                index_column_names=["soma_joinid"],
                domain=[(0, n_cells - 1)],
                platform_config=OBS_PLATFORM_CONFIG,
            )
            obs_uri = obs.uri
            obs.close()  # the trap: reopen below rather than write through this handle
            rna = experiment.add_new_collection("ms").add_new_collection("RNA", soma.Measurement)
            raw = rna.add_new_collection("X").add_new_sparse_ndarray(
                "raw", type=pa.float32(), shape=(n_cells, n_var), platform_config=X_PLATFORM_CONFIG
            )
            raw_uri = raw.uri
        self._obs_uri, self._raw_uri = obs_uri, raw_uri
        self._timestamp = time.time_ns() // 1_000_000  # not before obs's schema was created
        # TileDB compresses and writes without the GIL: one batch is written while the next is
        # generated (a third less wall time on 2 cores), and never more than one is pending.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atlasprep-demo-write")
        self._pending: Future[None] | None = None

    def write_batch(self, obs: pa.Table, x: Sequence[pa.RecordBatch]) -> None:
        """obs rows and their X values (in TileDB's global order), written in the background."""
        self._wait()
        self._pending = self._pool.submit(self._write, obs, pa.Table.from_batches(x))

    def _write(self, obs: pa.Table, x: pa.Table) -> None:
        # A handle writes every fragment, and every enumeration extension, at the timestamp it was
        # opened with: two extensions through one handle make two schema versions with the same
        # timestamp, and readers then pick one of them at random - half the time the older one,
        # whose categories miss the newer values ("Index out of bounds" on read). So each batch
        # gets its own handles, opened at a strictly later millisecond than the last.
        self._timestamp = max(time.time_ns() // 1_000_000, self._timestamp + 1)
        with soma.DataFrame.open(self._obs_uri, "w", tiledb_timestamp=self._timestamp) as frame:
            frame.write(obs)
        with soma.SparseNDArray.open(self._raw_uri, "w", tiledb_timestamp=self._timestamp) as raw:
            # one write, one fragment; tiledbsoma submits the chunks in turn without concatenating
            raw.write(x, platform_config=_GLOBAL_ORDER)

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def finish(
        self,
        *,
        var: pa.Table,
        presence: npt.NDArray[np.bool_],
        info: Mapping[str, pa.Table],
    ) -> None:
        """Finish obs and X, then write var, the presence matrix and the census_info tables."""
        self.close()
        census: soma.Collection[Any]
        with soma.Collection.open(str(self.root), "w") as census:
            rna: soma.Measurement = census["census_data"]["homo_sapiens"].ms["RNA"]
            _new_dataframe(rna, "var", var, VAR_PLATFORM_CONFIG)
            datasets, genes = np.nonzero(presence)
            with rna.add_new_sparse_ndarray(
                "feature_dataset_presence_matrix", type=pa.bool_(), shape=presence.shape
            ) as matrix:
                matrix.write(
                    pa.table(
                        {
                            "soma_dim_0": pa.array(datasets.astype(np.int64)),
                            "soma_dim_1": pa.array(genes.astype(np.int64)),
                            "soma_data": pa.array(np.ones(len(genes), dtype=bool)),
                        }
                    )
                )
            for key, tbl in info.items():
                _new_dataframe(census["census_info"], key, tbl, None)

    def close(self) -> None:
        """Wait for the pending batch, raising its error."""
        try:
            self._wait()
        finally:
            self._pool.shutdown(wait=True)


def _new_dataframe(
    parent: soma.Collection[Any] | soma.Measurement,
    key: str,
    tbl: pa.Table,
    platform_config: dict[str, Any] | None,
) -> None:
    frame = parent.add_new_dataframe(
        key,
        schema=tbl.schema,
        index_column_names=["soma_joinid"],
        domain=[(0, max(tbl.num_rows - 1, 0))],
        platform_config=platform_config,
    )
    uri = frame.uri
    frame.close()
    with soma.DataFrame.open(uri, "w") as writer:
        writer.write(tbl)
