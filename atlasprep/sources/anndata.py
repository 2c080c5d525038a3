"""Cells from AnnData files (h5ad, zarr, zipped zarr), read backed: X row blocks are read per
batch; of obs, the cell names and the columns a run uses (to filter, or to store) are read, a
column at a time when first needed, and held in memory.

Several files form one source: var is the union of their feature IDs (first-seen order),
cells keep their obs names (prefixed with the file's stem when two files share a name).
When a file has ``raw`` (CELLxGENE puts raw counts in ``raw.X`` when X is normalized), its
raw matrix and raw var are used.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
import zarr
from anndata import OldFormatWarning
from anndata.io import read_elem, sparse_dataset

from atlasprep.errors import AtlasprepError, InputFormatError, SourceError, UsageError
from atlasprep.sources.base import CellBatch, SourceInfo, plan_chunks, read_ahead, remap_columns
from atlasprep.sources.filters import CompiledFilter, ResolvedFilter, compile_filter
from atlasprep.sources.where import check_columns, columns_of

__all__ = ["AnnDataSource", "read_frame", "split_modality"]

log = logging.getLogger("atlasprep.sources")


@dataclass(frozen=True, slots=True, kw_only=True)
class _File:
    path: Path
    handle: Any  # h5py.File | zarr.Group (+ a ZipStore to close)
    store: Any
    matrix: str  # "X" or "raw/X"
    X: Any  # backed sparse dataset or dense array
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
        index = pd.Index(read_elem(elem[attrs["_index"]]))
        columns = tuple(str(c) for c in attrs.get("column-order", ()))
        return cls(elem=elem, n_rows=len(index), columns=columns), index

    def read(self, columns: Sequence[str]) -> pd.DataFrame:
        """These of its columns (those it has) as a frame with a RangeIndex, as anndata reads them."""
        mine = [c for c in columns if c in self.columns]
        rows = pd.RangeIndex(self.n_rows)
        if self.whole is not None:
            return self.whole[mine].set_axis(rows, axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OldFormatWarning)
            return pd.DataFrame({c: read_elem(self.elem[c]) for c in mine}, index=rows, columns=mine)


class _Obs:
    """obs over the files, one column at a time: a column is read from every file the first
    time it is asked for and joined as ``pd.concat(join="outer")`` joins whole frames (a file
    without it gives missing values)."""

    def __init__(self, files: list[_ObsFile]) -> None:
        self._files = files
        self.columns = tuple(dict.fromkeys(c for f in files for c in f.columns))
        self.n_rows = sum(f.n_rows for f in files)
        self._read: dict[str, pd.Series] = {}

    def frame(self, columns: Sequence[str]) -> pd.DataFrame:
        """The named columns (all of them obs columns), one row per cell, with a RangeIndex."""
        new = [c for c in dict.fromkeys(columns) if c not in self._read]
        if new:
            parts = [f.read(new) for f in self._files]
            joined = pd.concat(parts, ignore_index=True, join="outer") if len(parts) > 1 else parts[0]
            self._read.update({c: joined[c] for c in new})
        return pd.DataFrame(
            {c: self._read[c] for c in columns}, index=pd.RangeIndex(self.n_rows), columns=list(columns)
        )


class AnnDataSource:
    """A :class:`~atlasprep.sources.base.CellSource` over one or more AnnData files."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]], *, layer: str | None = None) -> None:
        """``layer`` names the counts matrix: ``"X"``, ``"raw"`` (raw.X) or a key of ``layers``;
        by default raw.X where present, else X."""
        if not paths:
            raise SourceError("no --input file given")
        self._files: list[_File] = []
        obs_parts: list[_ObsFile] = []
        var_parts: list[pd.DataFrame] = []
        offset = 0
        names: list[pd.Index] = []
        union: dict[str, int] = {}
        for raw_path in paths:
            path, modality = split_modality(str(raw_path))
            handle, store = _open_group(path)
            try:
                group = _modality_group(handle, path, modality)
                matrix = _matrix_path(group, layer, path)
                var, obs, obs_names, X, indptr = _read_parts(group, matrix, path)
                var.index = var.index.astype(str)
                if len(paths) == 1:  # nothing to join: keep var as it is, duplicates included
                    colmap = np.arange(len(var), dtype=np.int64)
                elif not var.index.is_unique:
                    raise InputFormatError(
                        f"{path}: var index has duplicate feature IDs, so it cannot be joined with the other "
                        "--input files; harmonize it first (atlasprep harmonize maps symbols to Ensembl IDs)"
                    )
                else:
                    colmap = np.array([union.setdefault(f, len(union)) for f in var.index], dtype=np.int64)
            except BaseException:
                _close(handle, store)
                self.close()
                raise
            self._files.append(
                _File(
                    path=path,
                    handle=handle,
                    store=store,
                    matrix=matrix,
                    X=X,
                    offset=offset,
                    colmap=colmap,
                    indptr=indptr,
                    elem=group[matrix],
                )
            )
            names.append(obs_names.astype(str))
            obs_parts.append(obs)
            var_parts.append(var)
            offset += obs.n_rows
            if matrix == "raw/X":
                log.info("%s: reading raw counts from raw.X", path)
        self._cell_ids = _unique_names(names, [f.path for f in self._files])
        self._obs = _Obs(obs_parts)
        if len(var_parts) == 1:
            self._var = var_parts[0]
        else:
            var_all = pd.concat(var_parts)
            self._var = var_all[~var_all.index.duplicated()].reindex(list(union))
        self.info = SourceInfo(
            kind="anndata",
            uri=", ".join(str(f.path) for f in self._files),
            extra={"files": [str(f.path) for f in self._files], "matrices": [f.matrix for f in self._files]},
        )

    @property
    def obs_columns(self) -> tuple[str, ...]:
        return self._obs.columns

    @property
    def n_cells(self) -> int:
        return self._obs.n_rows

    def distinct_values(self, column: str) -> Sequence[str] | None:
        if column not in self._obs.columns:
            return None
        return [str(v) for v in pd.unique(self._obs.frame([column])[column].dropna())]

    def compile(self, resolved: ResolvedFilter) -> CompiledFilter:
        where = resolved.filter.where_expr
        if where is not None:  # before any obs column is read
            check_columns(where, self._obs.columns, source=self.info.uri)
        missing = [c for c in resolved.values if c not in self._obs.columns]
        if missing:
            raise InputFormatError(
                f"{self.info.uri}: obs has no column {', '.join(missing)}; "
                "run `atlasprep harmonize` first to add CELLxGENE term columns"
            )
        if resolved.filter.primary_only and "is_primary_data" not in self._obs.columns:
            log.info("obs has no is_primary_data column: every cell counts as primary")
        return compile_filter(resolved, self.distinct_values)

    def select(self, compiled: CompiledFilter) -> np.ndarray:
        flt = compiled.resolved.filter
        needed = [*compiled.columns, *(["is_primary_data"] if flt.primary_only else [])]
        where = flt.where_expr
        if where is not None:
            needed += columns_of(where)
        frame = self._obs.frame([c for c in dict.fromkeys(needed) if c in self._obs.columns])
        return np.flatnonzero(compiled.mask(frame, source=self.info.uri)).astype(np.int64)

    def obs_values(self, positions: np.ndarray, columns: Sequence[str]) -> pd.DataFrame:
        self._check_columns(columns)
        return self._obs.frame(list(columns)).iloc[positions].reset_index(drop=True)

    def var(self) -> pd.DataFrame:
        return self._var

    def iter_batches(
        self,
        positions: np.ndarray,
        *,
        var_positions: np.ndarray | None,
        batch_size: int,
        obs_columns: Sequence[str] | None = None,
    ) -> Iterator[CellBatch]:
        columns = list(obs_columns) if obs_columns is not None else list(self._obs.columns)
        self._check_columns(columns)
        obs = self._obs.frame(columns)
        return read_ahead(self._batches(positions, var_positions, batch_size, obs))

    def _batches(
        self, positions: np.ndarray, var_positions: np.ndarray | None, batch_size: int, obs: pd.DataFrame
    ) -> Iterator[CellBatch]:
        n_union = len(self._var)
        out_of_union = np.arange(n_union, dtype=np.int64)
        if var_positions is not None:
            out_of_union = np.full(n_union, -1, dtype=np.int64)
            out_of_union[var_positions] = np.arange(len(var_positions))
        n_out = n_union if var_positions is None else len(var_positions)
        starts = np.array([f.offset for f in self._files])
        file_columns = [out_of_union[f.colmap] for f in self._files]  # each file's, in X
        as_is = [len(c) == n_out and np.array_equal(c, np.arange(n_out)) for c in file_columns]
        for planned in plan_chunks(positions, batch_size, self._stored_values(positions, starts)):
            which = np.searchsorted(starts, planned, side="right") - 1
            cuts = np.flatnonzero(np.diff(which)) + 1
            for chunk, k in zip(np.split(planned, cuts), which[np.r_[0, cuts]], strict=True):
                f = self._files[k]  # a batch holds one file's cells, so it has one storage
                X = remap_columns(_read_rows(f, chunk - f.offset), file_columns[k], n_out)
                yield CellBatch(
                    cell_ids=self._cell_ids.take(chunk).to_numpy(zero_copy_only=False).astype(str),
                    obs=pa.Table.from_pandas(obs.iloc[chunk], preserve_index=False),
                    X=X.astype(np.float32, copy=False),
                    stored_dtype=np.dtype(f.X.dtype),
                    stored_dense=f.indptr is None,
                    stored_columns=None if as_is[k] else file_columns[k],
                )

    def _stored_values(self, positions: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Each selected cell's stored values (sparse: from indptr; dense: every gene)."""
        nnz = np.empty(len(positions), dtype=np.int64)
        which = np.searchsorted(starts, positions, side="right") - 1
        for k in np.unique(which):
            f = self._files[k]
            mine = which == k
            if f.indptr is None:
                nnz[mine] = len(f.colmap)
            else:
                rows = positions[mine] - f.offset
                nnz[mine] = f.indptr[rows + 1] - f.indptr[rows]
        return nnz

    def _check_columns(self, columns: Sequence[str]) -> None:
        missing = [c for c in columns if c not in self._obs.columns]
        if missing:
            raise InputFormatError(f"{self.info.uri}: obs has no column {', '.join(missing)}")

    def close(self) -> None:
        for f in self._files:
            _close(f.handle, f.store)


def split_modality(spec: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """``file.h5mu:rna`` → (file.h5mu, "rna"); any other path → (path, None). The one parser of
    ``FILE:modality``: a path that exists is never split, and ``:name`` after another existing
    file is split too (``a.h5ad:rna`` → (a.h5ad, "rna")), so its reader can refuse it by name;
    an empty name comes back as ``""``."""
    text = os.fspath(spec)
    head, sep, tail = text.rpartition(":")
    if not sep or "/" in tail or Path(text).exists():
        return Path(text), None
    if head.endswith(".h5mu") or Path(head).exists():
        return Path(head), tail
    return Path(text), None


def _modality_group(handle: Any, path: Path, modality: str | None) -> Any:
    """The AnnData group to read: the file's root, or one modality of a MuData file."""
    if modality is None:
        if path.suffix == ".h5mu":
            names = ", ".join(f"{path}:{m}" for m in handle["mod"]) if "mod" in handle else ""
            raise UsageError(f"--input {path} is a MuData file: name one modality ({names})")
        return handle
    if "mod" not in handle or modality not in handle["mod"]:
        found = ", ".join(handle["mod"]) if "mod" in handle else "none"
        raise InputFormatError(f"{path} has no modality {modality!r} (it has: {found})")
    return handle["mod"][modality]


def _open_group(path: Path) -> tuple[Any, Any]:
    """The file's root group and the store to close with it (a zip's); a file that is not
    HDF5 or zarr, or is damaged, is an :class:`InputFormatError` saying which and why."""
    if not path.exists():
        raise SourceError(f"--input {path}: no such file or directory")
    if not os.access(path, os.R_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    # zarr is opened without its consolidated metadata, which still lists an X whose directory
    # is gone, and zarr reads missing chunks as zeros: a store of empty cells, silently.
    if path.is_dir():
        try:
            return zarr.open_group(path, mode="r", use_consolidated=False), None
        except (OSError, ValueError, KeyError) as exc:
            raise InputFormatError(f"--input {path}: not a zarr AnnData store ({_reason(exc)})") from None
    if path.suffix == ".zip":
        try:  # (a ZipStore that failed to open cannot be closed; one that opened is, when collected)
            store = zarr.storage.ZipStore(path, mode="r")
            return zarr.open_group(store, mode="r", use_consolidated=False), store
        except (zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
            raise InputFormatError(
                f"--input {path}: not a zipped zarr AnnData store; is it damaged? ({_reason(exc)})"
            ) from None
    if not h5py.is_hdf5(path):
        raise InputFormatError(
            f"--input {path}: not an HDF5 file, so not an h5ad; is it damaged or in another format? "
            "(a zarr store is a directory or a .zip)"
        )
    try:
        return h5py.File(path, "r"), None
    except OSError as exc:
        sizes = re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", str(exc))
        if sizes:
            raise InputFormatError(
                f"--input {path}: truncated: it ends at byte {int(sizes[1]):,} of {int(sizes[2]):,}; "
                "copy or download it again"
            ) from None
        raise InputFormatError(f"--input {path}: cannot open it as HDF5 ({_reason(exc)})") from None


def _read_parts(group: Any, matrix: str, path: Path) -> tuple[pd.DataFrame, _ObsFile, pd.Index, Any, Any]:
    """var, obs, the cell names, the backed matrix and its row pointers; a file without them,
    or one they cannot be read from, is an :class:`InputFormatError` naming it."""
    var_name = "raw/var" if matrix == "raw/X" else "var"
    missing = [name for name in ("obs", var_name, matrix) if name not in group]
    if missing:
        found = ", ".join(sorted(group.keys())) or "nothing"
        raise InputFormatError(
            f"{path}: not an AnnData file: it has no {' and no '.join(missing)} (it has: {found})"
        )
    try:
        var = read_frame(group[var_name])
        obs, obs_names = _ObsFile.open(group["obs"])
        X = _backed_matrix(group[matrix], path, matrix)
        return var, obs, obs_names, X, _row_pointers(group[matrix])
    except AtlasprepError:
        raise
    except Exception as exc:  # h5py, zarr, anndata on damaged data: their errors share no base class
        raise InputFormatError(
            f"{path}: cannot read it as AnnData; is it damaged? ({_reason(exc)})"
        ) from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _close(handle: Any, store: Any) -> None:
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
            raise InputFormatError(f"{path}: --counts-layer raw, but the file has no raw")
        return "raw/X"
    if "layers" not in handle or layer not in handle["layers"]:
        found = ", ".join(handle["layers"].keys()) if "layers" in handle else "none"
        raise InputFormatError(f"{path}: no layer {layer!r} (layers: {found}; or use X / raw)")
    return f"layers/{layer}"


def read_frame(elem: Any) -> pd.DataFrame:
    """obs/var as a DataFrame, also from the legacy (pre-0.7) structured-array encoding."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OldFormatWarning)
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
        if encoding == "csc_matrix":
            raise InputFormatError(f"{path}: {name} is CSC; rows cannot be streamed. Rewrite it as CSR")
        missing = [part for part in ("data", "indices", "indptr") if part not in elem]
        if missing:
            raise InputFormatError(
                f"{path}: {name} is a sparse matrix without {', '.join(missing)}; is it damaged?"
            )
        return sparse_dataset(elem)
    if encoding == "array" or not hasattr(elem, "keys"):
        return elem
    raise InputFormatError(f"{path}: {name} has unsupported encoding {encoding!r}")


def _row_pointers(elem: Any) -> np.ndarray | None:
    """A backed CSR matrix's indptr (8 bytes a cell), else None."""
    if hasattr(elem, "keys") and "indptr" in elem:
        return np.asarray(elem["indptr"][:], dtype=np.int64)
    return None


def _read_rows(f: _File, rows: np.ndarray) -> sp.csr_matrix:
    contiguous = len(rows) > 0 and rows[-1] - rows[0] + 1 == len(rows)
    if contiguous and f.indptr is not None:  # one slice of data and indices, read as stored
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        a, b = int(f.indptr[lo]), int(f.indptr[hi])
        return sp.csr_matrix(
            (f.elem["data"][a:b], f.elem["indices"][a:b], f.indptr[lo : hi + 1] - a),
            shape=(hi - lo, f.X.shape[1]),
        )
    if contiguous:
        block = f.X[int(rows[0]) : int(rows[-1]) + 1]
    elif isinstance(f.X, h5py.Dataset):
        block = f.X[rows]
    elif isinstance(f.X, zarr.Array):
        block = f.X.oindex[rows]
    else:
        block = f.X[rows]
    return sp.csr_matrix(block)


def _unique_names(names: list[pd.Index], paths: list[Path]) -> pa.Array:
    """The cells' names, as Arrow strings (their bytes and 8 more a cell, where a numpy string
    array would take 4 bytes a character of the longest name, every cell)."""
    flat = np.concatenate([n.to_numpy(dtype=object) for n in names]) if names else np.array([], dtype=object)
    if not pd.Index(flat).is_unique:
        log.warning("obs names repeat across --input files; prefixing each with its file's stem")
        flat = np.concatenate(
            [np.char.add(f"{p.stem}:", idx.to_numpy(dtype=str)) for p, idx in zip(paths, names, strict=True)]
        )
    return pa.array(flat, type=pa.large_string())
