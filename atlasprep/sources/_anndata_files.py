"""Opening AnnData files safely: a ``FILE:modality`` spec, an h5ad, zarr or zipped zarr checked as
it is opened (a damaged or truncated file is one line naming it), obs read a column at a time,
CSR rows read straight from the file."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from atlasprep.errors import AtlasprepError, InputFormatError, SourceError, UsageError
from atlasprep.sources._csc import CsrCopy
from atlasprep.sources._h5elem import read_elem

log = logging.getLogger("atlasprep.sources")


@dataclass(frozen=True, slots=True, kw_only=True)
class _File:
    path: Path
    handle: Any  # h5py.File | zarr.Group (+ a ZipStore to close)
    store: Any
    matrix: str  # "X" or "raw/X"
    X: Any  # _SparseOnDisk, a CsrCopy (of a CSC) or a dense array
    offset: int
    colmap: np.ndarray  # file column -> union var position
    indptr: np.ndarray | None  # int64 row pointers (sparse X: 8 bytes a cell), None for dense
    elem: Any  # the matrix's own group (sparse) or array (dense)


@dataclass(frozen=True, slots=True, kw_only=True)
class _ObsFile:
    """One file's obs, its columns read when asked for (a legacy, pre-0.7 structured array is
    read whole)."""

    elem: Any  # the obs group (None when read whole)
    n_rows: int
    columns: tuple[str, ...]
    whole: pd.DataFrame | None = None

    @classmethod
    def open(cls, elem: Any) -> tuple[_ObsFile, pd.Index]:
        """The file's obs and its index (the cell names: the caller keeps them as it needs)."""
        attrs = getattr(elem, "attrs", {})
        if not hasattr(elem, "keys") or attrs.get("encoding-type") != "dataframe":
            frame = read_frame(elem)
            return cls(elem=None, n_rows=len(frame), columns=tuple(frame.columns), whole=frame), frame.index
        key = str(attrs["_index"])
        index = pd.Index(read_elem(elem[key]), name=None if key == "_index" else key)  # as anndata names it
        columns = tuple(str(c) for c in attrs.get("column-order", ()))
        return cls(elem=elem, n_rows=len(index), columns=columns), index

    def read(self, columns: Sequence[str]) -> pd.DataFrame:
        """These of its columns (those it has) as a frame with a RangeIndex, as anndata reads them."""
        mine = [c for c in columns if c in self.columns]
        rows = pd.RangeIndex(self.n_rows)
        if self.whole is not None:
            return self.whole[mine].set_axis(rows, axis=0)
        return pd.DataFrame({c: read_elem(self.elem[c]) for c in mine}, index=rows, columns=mine)


def _modality_group(handle: Any, path: Path, modality: str | None) -> Any:
    """The AnnData group to read: the file's root, or one modality of a MuData file."""
    if modality is None:
        if path.suffix == ".h5mu":
            names = ", ".join(f"{path}:{m}" for m in handle["mod"]) if "mod" in handle else ""
            raise UsageError(f"inputs {path} is a MuData file: name one modality ({names})")
        return handle
    if "mod" not in handle or modality not in handle["mod"]:
        found = ", ".join(handle["mod"]) if "mod" in handle else "none"
        raise InputFormatError(f"{path} has no modality {modality!r} (it has: {found})")
    return handle["mod"][modality]


def _open_group(path: Path) -> tuple[Any, Any]:
    """The file's root group and the store to close with it (a zip's); a file that is not
    HDF5 or zarr, or is damaged, is an :class:`InputFormatError` saying which and why."""
    if not path.exists():
        raise SourceError(f"inputs {path}: no such file or directory")
    if not os.access(path, os.R_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    if path.is_dir() or path.suffix == ".zip":
        return _open_zarr(path)
    if not h5py.is_hdf5(path):
        raise InputFormatError(
            f"inputs {path}: not an HDF5 file, so not an h5ad; is it damaged or in another format? "
            "(a zarr store is a directory or a .zip)"
        )
    try:
        return h5py.File(path, "r"), None
    except OSError as exc:
        sizes = re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", str(exc))
        if sizes:
            raise InputFormatError(
                f"inputs {path}: truncated: it ends at byte {int(sizes[1]):,} of {int(sizes[2]):,}; "
                "copy or download it again"
            ) from None
        raise InputFormatError(f"inputs {path}: cannot open it as HDF5 ({_reason(exc)})") from None


def _open_zarr(path: Path) -> tuple[Any, Any]:
    """A zarr store (a directory) or a zipped one (``.zip``), and the zip's store to close.
    zarr is opened without its consolidated metadata, which still lists an X whose directory
    is gone, and zarr reads missing chunks as zeros: a store of empty cells, silently. zarr is
    imported here, not with the module: an h5ad build never loads it (0.1 s)."""
    import zarr

    if path.is_dir():
        try:
            return zarr.open_group(path, mode="r", use_consolidated=False), None
        except (OSError, ValueError, KeyError) as exc:
            raise InputFormatError(f"inputs {path}: not a zarr AnnData store ({_reason(exc)})") from None
    try:  # (a ZipStore that failed to open cannot be closed; one that opened is, when collected)
        store = zarr.storage.ZipStore(path, mode="r")
        return zarr.open_group(store, mode="r", use_consolidated=False), store
    except (zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        raise InputFormatError(
            f"inputs {path}: not a zipped zarr AnnData store; is it damaged? ({_reason(exc)})"
        ) from None


def _read_parts(group: Any, matrix: str, path: Path) -> tuple[pd.DataFrame, _ObsFile, pd.Index, Any, Any]:
    """var, obs, the cell names, the backed matrix and its row pointers; a file without them,
    or one they cannot be read from, is an :class:`InputFormatError` naming it."""
    var_name = "raw/var" if matrix == "raw/X" else "var"
    with damaged_file(path):
        missing = [name for name in ("obs", var_name, matrix) if name not in group]
        if missing:
            found = ", ".join(sorted(group.keys())) or "nothing"
            raise InputFormatError(
                f"{path}: not an AnnData file: it has no {' and no '.join(missing)} (it has: {found})"
            )
        var = read_frame(group[var_name])
        obs, obs_names = _ObsFile.open(group["obs"])
        X = _backed_matrix(group[matrix], path, matrix)
        return var, obs, obs_names, X, _row_pointers(group[matrix], X)


@contextlib.contextmanager
def damaged_file(path: Path) -> Iterator[None]:
    """An error reading the file's structure (metadata that does not parse, a group that cannot
    be opened) as an :class:`InputFormatError` naming it; atlasprep's own errors pass."""
    try:
        yield
    except (AtlasprepError, MemoryError):
        raise
    except Exception as exc:  # h5py, zarr, anndata on damaged data: their errors share no base class
        raise InputFormatError(
            f"{path}: cannot read it as AnnData; is it damaged? ({_reason(exc)})"
        ) from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _close(handle: Any, store: Any, X: Any = None) -> None:
    if isinstance(X, CsrCopy):
        X.close()
    if isinstance(handle, h5py.File):
        handle.close()
    if store is not None:
        store.close()


def _matrix_path(handle: Any, layer: str | None, path: Path) -> str:
    if layer is None:
        return "raw/X" if "raw" in handle and "X" in handle["raw"] else "X"
    if layer == "X":
        return "X"
    if layer == "raw":
        if "raw" not in handle:
            raise InputFormatError(f"layer = 'raw': {path} has no raw")
        return "raw/X"
    if "layers" not in handle or layer not in handle["layers"]:
        found = ", ".join(handle["layers"].keys()) if "layers" in handle else "none"
        raise InputFormatError(f"{path}: no layer {layer!r} (layers: {found}; or use X / raw)")
    return f"layers/{layer}"


def read_frame(elem: Any) -> pd.DataFrame:
    """obs/var as a DataFrame, also from the legacy (pre-0.7) structured-array encoding."""
    frame = read_elem(elem)
    if isinstance(frame, pd.DataFrame):
        return frame
    records = pd.DataFrame.from_records(np.asarray(frame))
    for column in records.columns:
        if records[column].dtype == object and len(records) and isinstance(records[column].iloc[0], bytes):
            records[column] = records[column].str.decode("utf-8")
    index = "index" if "index" in records.columns else records.columns[0]
    log.info("legacy AnnData encoding: read %s as a structured array", elem.name)
    return records.set_index(index)


def _backed_matrix(elem: Any, path: Path, name: str) -> Any:
    encoding = elem.attrs.get("encoding-type", "array" if not hasattr(elem, "keys") else "")
    if encoding in ("csr_matrix", "csc_matrix"):
        missing = [part for part in ("data", "indices", "indptr") if part not in elem]
        if missing:
            raise InputFormatError(
                f"{path}: {name} is a sparse matrix without {', '.join(missing)}; is it damaged?"
            )
        return _SparseOnDisk(elem) if encoding == "csr_matrix" else CsrCopy(elem, f"{path}: {name}")
    if encoding == "array" or not hasattr(elem, "keys"):
        return elem
    raise InputFormatError(f"{path}: {name} has unsupported encoding {encoding!r}")


class _SparseOnDisk:
    """A CSR matrix in the file: its shape and dtype read from the group; rows that are not
    one run are read through anndata's backed sparse dataset, made (and anndata imported) the
    first time they are asked for. A run of rows is read from data and indices directly
    (:func:`_read_rows`)."""

    def __init__(self, elem: Any) -> None:
        self._elem = elem
        n_rows, n_cols = (int(n) for n in elem.attrs["shape"])
        self.shape = (n_rows, n_cols)
        self.dtype = np.dtype(elem["data"].dtype)
        self._backed: Any = None

    def __getitem__(self, rows: Any) -> Any:
        if self._backed is None:
            from anndata.io import sparse_dataset

            self._backed = sparse_dataset(self._elem)
        return self._backed[rows]


def _row_pointers(elem: Any, X: Any) -> np.ndarray | None:
    """A sparse matrix's row pointers (8 bytes a cell): a CSR's indptr, a CSC's counted
    (:class:`CsrCopy`); None for a dense one."""
    if isinstance(X, CsrCopy):
        return X.indptr
    if hasattr(elem, "keys") and "indptr" in elem:
        return np.asarray(elem["indptr"][:], dtype=np.int64)
    return None


def _check_rows(f: _File, pointers: np.ndarray, indices: np.ndarray, first: int) -> None:
    """Refuse rows of a damaged CSR matrix (:class:`InputFormatError`): row pointers that go
    back or past the stored values, or column indices outside the matrix, which scipy would
    take without a word (a slice would then hold a gene that is not in var)."""
    n_values, n_columns = f.elem["indices"].shape[0], f.X.shape[1]
    if len(pointers) and (pointers[0] < 0 or pointers[-1] > n_values or (np.diff(pointers) < 0).any()):
        raise InputFormatError(
            f"{f.path}: {f.matrix}'s row pointers (indptr) around row {first:,} go back or past its "
            f"{n_values:,} stored values; the file is damaged: write it again from its source"
        )
    if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= n_columns):
        raise InputFormatError(
            f"{f.path}: {f.matrix} has a column index outside its {n_columns:,} columns in the rows "
            f"from {first:,}; the file is damaged: write it again from its source"
        )


def _read_rows(f: _File, rows: np.ndarray) -> sp.csr_matrix:
    """The matrix's ``rows`` as CSR; a read that fails on damaged data (a truncated or
    overwritten chunk: the codec's or h5py's error) is an :class:`InputFormatError` naming them."""
    try:
        return _rows(f, rows)
    except (AtlasprepError, MemoryError):
        raise
    except Exception as exc:  # h5py, zarr and the codecs: their errors share no base class
        where = f"rows {int(rows[0]):,}-{int(rows[-1]):,}" if len(rows) else "rows"
        raise InputFormatError(
            f"{f.path}: cannot read {f.matrix} {where}; is the file damaged? ({_reason(exc)})"
        ) from None


def _rows(f: _File, rows: np.ndarray) -> sp.csr_matrix:
    if isinstance(f.X, CsrCopy):
        return f.X.rows(rows)
    contiguous = len(rows) > 0 and rows[-1] - rows[0] + 1 == len(rows)
    if contiguous and f.indptr is not None:  # one slice of data and indices, read as stored
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        pointers = f.indptr[lo : hi + 1]
        a, b = int(pointers[0]), int(pointers[-1])
        data, indices = f.elem["data"][a:b], f.elem["indices"][a:b]
        _check_rows(f, pointers, indices, lo)
        return sp.csr_matrix((data, indices, pointers - a), shape=(hi - lo, f.X.shape[1]))
    if contiguous:
        block = f.X[int(rows[0]) : int(rows[-1]) + 1]
    elif isinstance(f.X, h5py.Dataset):
        block = f.X[rows]
    elif hasattr(f.X, "oindex"):  # a zarr.Array: orthogonal indexing
        block = f.X.oindex[rows]
    else:
        block = f.X[rows]
    return sp.csr_matrix(block)
