"""Write an AnnData store (h5ad or zarr) batch by batch, atomically.

X rows are appended to an on-disk CSR as batches arrive; obs rows are spilled to an Arrow
IPC file beside the output and written column by column at the end, strings a slice at a time
(:mod:`atlasprep.slice._obs`), so peak memory is one batch, or one obs column in Arrow, never
the slice's Python objects. Everything goes to ``<out>.tmp-<pid>`` first and
is renamed into place only when complete; a failure (a bad batch, permission denied, a full
disk) leaves neither the output nor a temporary file.

A full disk must never reach HDF5 while it writes. When a dataset's close fails to flush its
chunk cache (ENOSPC), HDF5 frees the dataset but keeps its ID; the next close of the file, or
HDF5's own clean-up at interpreter exit, closes that ID again: a segmentation fault (seen with
h5py 3.16 / HDF5 2.0.0, reproduced by slicing onto a 3 MiB tmpfs). h5py only prints a warning
when such a close fails while an object is garbage-collected, so the data would also be lost
without an error. So before each h5ad write the free space is compared with what the write
needs (the values are stored uncompressed: their bytes, plus chunk and metadata slack), and a
batch that would not fit is refused with ENOSPC before HDF5 sees it; on abort the temporary
file is truncated before HDF5 closes it, so that its last flush finds room. A disk that another
process fills during one batch's write can still reach HDF5 (turning off the chunk cache or
writing through Python file objects would avoid that, but changes the bytes of every h5ad).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
from collections.abc import Mapping
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

from atlasprep._io import TempOutput, check_new_output, remove_path, sweep_stale_temps, temp_path
from atlasprep.errors import AtlasprepError, UsageError
from atlasprep.slice._obs import Categories, ObsTypes, merge_categories, write_obs
from atlasprep.sources.counts import check_counts

__all__ = ["AnnDataWriter", "StoreFormat", "format_of", "os_error_at", "require_free_space"]

log = logging.getLogger("atlasprep.slice")

StoreFormat = Literal["h5ad", "zarr"]
_ID_COLUMN = "_index"
# room an h5ad write needs beyond its values' bytes: partial chunks (2**16 values) of
# data/indices/indptr, HDF5 metadata, the obs spill's framing
_SLACK_BYTES = 8 * 2**20
_ERRNO_IN_TEXT = re.compile(r"errno\s*=?\s*\[?(\d+)", re.IGNORECASE)


def format_of(path: Path) -> StoreFormat:
    if path.suffix == ".h5ad":
        return "h5ad"
    if path.suffix == ".zarr":
        return "zarr"
    raise UsageError(f"out {path}: the name must end in .h5ad or .zarr")


def os_error_at(exc: BaseException, path: Path) -> OSError | None:
    """An OS failure inside a writing library (h5py, pyarrow, zarr) as a plain ``OSError`` naming
    ``path``, the output the user asked for, not the temporary name written (h5py and pyarrow
    put the errno inside a long message and name no file). None when ``exc`` is no ``OSError``
    and its message holds no errno (a bug, to surface as it is)."""
    code = getattr(exc, "errno", None) if isinstance(exc, OSError) else None
    if not code:
        found = _ERRNO_IN_TEXT.search(str(exc))
        code = int(found.group(1)) if found else None
    if not code:
        return exc if isinstance(exc, OSError) else None
    # a builtin error's (or our own) strerror is plain; a library's is its whole message
    plain = exc.strerror if isinstance(exc, OSError) and exc.filename is not None else None
    return OSError(code, plain or os.strerror(code), str(path))


def require_free_space(path: Path, n_bytes: int) -> None:
    """Refuse (``OSError`` ENOSPC naming ``path``) a write of about ``n_bytes`` into ``path``'s
    directory that the free space there would not hold, before any of it is written."""
    need = int(n_bytes * 1.25) + _SLACK_BYTES
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return  # no answer from the file system: the write itself will tell
    if free < need:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device (about {_mib(need)} needed, {_mib(free)} free)",
            str(path),
        )


def _mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:,.1f} MiB"


# X's codec by store: h5py's filters for h5ad, zarr's codecs for zarr (whose default is zstd)
COMPRESSIONS: dict[str, tuple[str, ...]] = {"h5ad": ("gzip", "lzf"), "zarr": ("gzip", "zstd")}


# values a chunk of X's arrays holds, whatever the batches: h5ad's (appendable) as h5py reads
# them well; zarr's a file each, so larger (1 MiB of float32 values). zarr's own guess followed
# the first batch: chunks of 56,779 values and 65 cell pointers for 64-cell batches.
X_CHUNKS = {"h5ad": 2**16, "zarr": 2**18}


def x_dataset_kwargs(out: Path, compression: str | None) -> dict[str, Any]:
    """How X's arrays are created: in chunks of :data:`X_CHUNKS` values (appendable), compressed
    with ``compression`` where given (refused where the store's format has no such codec)."""
    store_format = format_of(out)
    if compression is not None and compression not in COMPRESSIONS[store_format]:
        codecs = " or ".join(COMPRESSIONS[store_format])
        raise UsageError(f"compression = {compression!r}: {store_format} stores take {codecs}")
    chunks = (X_CHUNKS[store_format],)
    if store_format == "h5ad":
        return {"chunks": chunks, **({"compression": compression} if compression else {})}
    if compression == "gzip":
        from zarr.codecs import GzipCodec

        return {"chunks": chunks, "compressors": GzipCodec()}
    return {"chunks": chunks}


def _open_store(path: Path, store_format: StoreFormat) -> Any:
    if store_format == "h5ad":
        return h5py.File(path, "w")
    return zarr.open_group(path, mode="w", zarr_format=3)


class AnnDataWriter:
    """Append :class:`~atlasprep.sources.base.CellBatch` rows; :meth:`finish` makes the store.

    ``counts`` names the matrix the rows come from ("raw.X of a.h5ad"): each batch is refused
    when it holds negative or non-finite values. None: the caller checked them. ``obs_types``:
    how obs text is typed (:data:`~atlasprep.slice._obs.ObsTypes`: the source's categoricals
    and text, the same without unused categories, or every text column a sorted categorical).
    ``index_name``: the name of obs's index (the cell IDs), as anndata reads it back (None:
    unnamed).
    """

    def __init__(
        self,
        out: Path,
        *,
        var: pd.DataFrame,
        overwrite: bool = False,
        counts: str | None = "X",
        compression: str | None = None,
        obs_types: ObsTypes = "sorted",
        index_name: str | None = None,
    ) -> None:
        self.out = out
        self._obs_types: ObsTypes = obs_types
        self._index_name = index_name
        self._categories: dict[str, Categories | None] = {}  # None: text, not categories
        self._x_kwargs = x_dataset_kwargs(out, compression)
        self.format = format_of(out)
        check_new_output(out, overwrite=overwrite)
        self._counts = counts
        self._output: TempOutput | None = None
        self._spill_path = temp_path(out, suffix=".obs.arrow")  # swept with the store's temp
        self._var = var
        self._n_obs = 0
        self._x_started = False
        self._spill: pa.ipc.RecordBatchFileWriter | None = None
        self._spill_schema: pa.Schema | None = None
        self._root: Any = None
        self._opened = False
        with self._writing():
            sweep_stale_temps(out)
            self._output = TempOutput.begin(out)
            self._root = _open_store(self._output.tmp, self.format)
            self._root.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        self._opened = True

    @contextlib.contextmanager
    def _writing(self) -> Any:
        """An OS failure of a write as one ``OSError`` naming the output; on any failure in the
        constructor the writer cleans up itself (later, the caller calls :meth:`abort`)."""
        try:
            yield
        except BaseException as exc:
            if not self._opened:
                self.abort()
            if isinstance(exc, AtlasprepError) or not isinstance(exc, OSError | RuntimeError):
                raise
            error = os_error_at(exc, self.out)
            if error is None or error is exc:
                raise
            raise error from None

    # -- rows -----------------------------------------------------------------------------
    def append(self, cell_ids: np.ndarray, obs: pa.Table, X: sp.csr_matrix) -> None:
        if X.shape[1] != len(self._var):
            raise ValueError(f"batch has {X.shape[1]} columns, var has {len(self._var)}")
        if self._counts is not None:
            check_counts(X, where=self._counts)
        stored = X.dtype
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused below
            X = sp.csr_matrix(X, dtype=np.float32)
        if self._counts is not None and stored != np.float32:
            check_counts(X, where=f"{self._counts} (stored as float32)")
        with self._writing():
            if self.format == "h5ad":
                rows = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
                require_free_space(self.out, rows + obs.nbytes + int(cell_ids.nbytes))
            with ad.settings.override(auto_shard_zarr_v3=False):
                if not self._x_started:
                    write_elem(self._root, "X", X, dataset_kwargs=self._x_kwargs)
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
            # (None kept: the column was text in a batch, so it stays text)
            if self._obs_types != "sorted" and self._categories.get(name, ()) is not None:
                self._categories[name] = merge_categories(self._categories.get(name), col)
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
    def finish(self, uns: dict[str, Any], obsm: Mapping[str, np.ndarray] | None = None) -> Path:
        """Write obs, var, uns and ``obsm`` (per-cell arrays, rows in the order cells were
        appended), then rename the store into place."""
        if not self._x_started:
            self.append(
                np.array([], dtype=str), pa.table({}), sp.csr_matrix((0, len(self._var)), dtype=np.float32)
            )
        with self._writing():
            if self._spill is not None:
                self._spill.close()
            if self.format == "h5ad":
                spilled = self._spill_path.stat().st_size if self._spill is not None else 0
                require_free_space(self.out, spilled + int(self._var.memory_usage(deep=True).sum()))
            with ad.settings.override(auto_shard_zarr_v3=False):
                write_obs(
                    self._root,
                    self._spill_path if self._spill is not None else None,
                    _ID_COLUMN,
                    types=self._obs_types,
                    categories=self._categories,
                    index_name=self._index_name,
                )
            var = self._var.copy()
            var.index = var.index.astype(str)
            with ad.settings.override(auto_shard_zarr_v3=False):
                write_elem(self._root, "var", var)
                write_elem(self._root, "uns", uns)
                write_elem(self._root, "obsm", dict(obsm or {}))
                for key in ("varm", "obsp", "varp", "layers"):
                    write_elem(self._root, key, {})
            self._close_root()
            remove_path(self._spill_path)
            assert self._output is not None
            self._output.commit()
        log.info("wrote %s (%d cells x %d genes)", self.out, self._n_obs, len(self._var))
        return self.out

    def abort(self) -> None:
        """Drop everything written so far (the output path is untouched). Never raises: the
        error that made the caller abort is the one to report."""
        if self._spill is not None:
            with contextlib.suppress(Exception):
                self._spill.close()
        if isinstance(self._root, h5py.File) and self._root.id.valid and self._output is not None:
            # the file is dropped anyway: its bytes go first, so that HDF5's flush on close
            # finds room even on a full disk
            with contextlib.suppress(OSError):
                os.truncate(self._output.tmp, 0)
        with contextlib.suppress(Exception):
            self._close_root()
        with contextlib.suppress(OSError):
            remove_path(self._spill_path)
        if self._output is not None:
            self._output.discard()

    def _close_root(self) -> None:
        if isinstance(self._root, h5py.File) and self._root.id.valid:
            self._root.close()
