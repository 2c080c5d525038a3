"""Write an AnnData store (h5ad or zarr) batch by batch, atomically.

X rows are appended to an on-disk CSR as batches arrive; obs rows are spilled to an Arrow
IPC file beside the output and written column by column at the end, so peak memory is one
batch plus one obs column, never the slice. Everything goes to ``<out>.tmp-<pid>`` first and
is renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
import zarr
from anndata.io import sparse_dataset, write_elem

from atlasprep.errors import OutputExistsError, UsageError

__all__ = ["AnnDataWriter", "StoreFormat", "format_of", "remove_path", "sweep_stale_temps"]

log = logging.getLogger("atlasprep.slice")

StoreFormat = Literal["h5ad", "zarr"]
_ID_COLUMN = "_index"


def format_of(path: Path) -> StoreFormat:
    if path.suffix == ".h5ad":
        return "h5ad"
    if path.suffix == ".zarr":
        return "zarr"
    raise UsageError(f"--out {path}: the name must end in .h5ad or .zarr")


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class AnnDataWriter:
    """Append :class:`~atlasprep.sources.base.CellBatch` rows; :meth:`finish` makes the store."""

    def __init__(self, out: Path, *, var: pd.DataFrame, overwrite: bool = False) -> None:
        self.out = out
        self.format = format_of(out)
        if out.exists() and not overwrite:
            raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
        if not out.parent.exists():
            raise UsageError(f"--out {out}: directory {out.parent} does not exist")
        self._sweep_stale_temps()
        self._tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
        self._spill_path = out.with_name(f"{out.name}.obs-{os.getpid()}.arrow")
        remove_path(self._tmp)
        self._var = var
        self._n_obs = 0
        self._x_started = False
        self._spill: pa.ipc.RecordBatchFileWriter | None = None
        self._spill_schema: pa.Schema | None = None
        if self.format == "h5ad":
            self._root: Any = h5py.File(self._tmp, "w")
        else:
            self._root = zarr.open_group(self._tmp, mode="w", zarr_format=3)
        self._root.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})

    # -- rows -----------------------------------------------------------------------------
    def append(self, cell_ids: np.ndarray, obs: pa.Table, X: sp.csr_matrix) -> None:
        if X.shape[1] != len(self._var):
            raise ValueError(f"batch has {X.shape[1]} columns, var has {len(self._var)}")
        X = sp.csr_matrix(X, dtype=np.float32)
        with ad.settings.override(auto_shard_zarr_v3=False):
            if not self._x_started:
                kwargs = {"chunks": (2**16,)} if self.format == "h5ad" else {}
                write_elem(self._root, "X", X, dataset_kwargs=kwargs)
                self._x_started = True
            elif X.shape[0]:
                sparse_dataset(self._root["X"]).append(X)
        self._spill_rows(cell_ids, obs)
        self._n_obs += X.shape[0]

    def _spill_rows(self, cell_ids: np.ndarray, obs: pa.Table) -> None:
        # Dictionaries differ batch to batch and the IPC file format allows no replacement:
        # spill plain values, re-encode categoricals once at the end.
        columns = {_ID_COLUMN: pa.array(cell_ids.astype(str), type=pa.large_string())}
        for name in obs.column_names:
            col = obs[name]
            if pa.types.is_dictionary(col.type):
                col = col.cast(col.type.value_type)
            if pa.types.is_string(col.type):
                col = col.cast(pa.large_string())
            columns[name] = col
        table = pa.table(columns)
        if self._spill is None:
            self._spill_schema = table.schema
            self._spill = pa.ipc.new_file(str(self._spill_path), table.schema)
        self._spill.write_table(table.cast(self._spill_schema))

    # -- the end --------------------------------------------------------------------------
    def finish(self, uns: dict[str, Any]) -> Path:
        """Write obs, var and uns, then rename the store into place."""
        if not self._x_started:
            self.append(
                np.array([], dtype=str), pa.table({}), sp.csr_matrix((0, len(self._var)), dtype=np.float32)
            )
        if self._spill is not None:
            self._spill.close()
        self._write_obs()
        var = self._var.copy()
        var.index = var.index.astype(str)
        with ad.settings.override(auto_shard_zarr_v3=False):
            write_elem(self._root, "var", var)
            write_elem(self._root, "uns", uns)
            for key in ("obsm", "varm", "obsp", "varp", "layers"):
                write_elem(self._root, key, {})
        self._close_root()
        remove_path(self._spill_path)
        if self.out.exists():
            remove_path(self.out)
        os.replace(self._tmp, self.out)
        log.info("wrote %s (%d cells x %d genes)", self.out, self._n_obs, len(self._var))
        return self.out

    def _write_obs(self) -> None:
        group = self._root.create_group("obs")
        if self._spill is None:
            group.attrs.update(
                {
                    "encoding-type": "dataframe",
                    "encoding-version": "0.2.0",
                    "_index": _ID_COLUMN,
                    "column-order": [],
                }
            )
            write_elem(group, _ID_COLUMN, np.array([], dtype=object))
            return
        with pa.memory_map(str(self._spill_path), "r") as source:
            reader = pa.ipc.open_file(source)
            names = reader.schema.names
            group.attrs.update(
                {
                    "encoding-type": "dataframe",
                    "encoding-version": "0.2.0",
                    "_index": _ID_COLUMN,
                    "column-order": [n for n in names if n != _ID_COLUMN],
                }
            )
            for name in names:  # one column in memory at a time
                column = pa.chunked_array(
                    [reader.get_batch(i).column(name) for i in range(reader.num_record_batches)],
                    type=reader.schema.field(name).type,
                )
                with ad.settings.override(auto_shard_zarr_v3=False):
                    write_elem(group, name, _to_anndata_column(name, column))

    def abort(self) -> None:
        """Drop everything written so far (the output path is untouched)."""
        if self._spill is not None:
            # already failing; the cleanup must not hide the first error
            with contextlib.suppress(Exception):
                self._spill.close()
        self._close_root()
        remove_path(self._spill_path)
        remove_path(self._tmp)

    def _close_root(self) -> None:
        if isinstance(self._root, h5py.File) and self._root.id.valid:
            self._root.close()

    def _sweep_stale_temps(self) -> None:
        sweep_stale_temps(self.out, extra=(f"{self.out.name}.obs-*.arrow",))


def sweep_stale_temps(out: Path, *, extra: tuple[str, ...] = ()) -> None:
    """Remove ``<out>.tmp-<pid>`` (and ``extra`` patterns) left by crashed runs writing ``out``:
    those whose process is gone."""
    for pattern in (f"{out.name}.tmp-*", *extra):
        for stale in out.parent.glob(pattern):
            pid = stale.name.rsplit("-", 1)[-1].split(".")[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                log.info("removing %s left by an interrupted run", stale)
                remove_path(stale)


def _to_anndata_column(name: str, column: pa.ChunkedArray) -> Any:
    if name == _ID_COLUMN:
        return column.to_numpy().astype(str).astype(object)
    kind = column.type
    if pa.types.is_large_string(kind) or pa.types.is_string(kind):
        encoded = column.dictionary_encode().combine_chunks()
        categorical = pd.Categorical.from_codes(
            encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32),
            categories=pd.Index(encoded.dictionary.to_pylist(), dtype=object),
        )
        # sorted categories: the same cells give the same file whatever order batches came in
        return categorical.reorder_categories(sorted(categorical.categories))
    if pa.types.is_boolean(kind):
        return column.to_numpy().astype(bool)
    return column.to_numpy()
