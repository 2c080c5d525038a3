"""Cells from AnnData files (h5ad, zarr, zipped zarr), read backed: X row blocks are read per
batch; of obs, the cell names and the columns a run uses (to filter, or to store) are read, a
column at a time when first needed, and held in memory.

Several files form one source: var is the union of their feature IDs (first-seen order),
with every file's columns (:func:`_joined_var`), cells keep their obs names (prefixed with the
file's stem when two files share a name).
When a file has ``raw`` (CELLxGENE puts raw counts in ``raw.X`` when X is normalized), its
raw matrix and raw var are used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from atlasprep._remote import is_url
from atlasprep.errors import InputFormatError, SourceError
from atlasprep.sources._anndata_files import (
    _close,
    _File,
    _matrix_path,
    _modality_group,
    _ObsFile,
    _open_group,
    _read_parts,
    _read_rows,
    damaged_file,
    read_frame,
)
from atlasprep.sources._fetch import split_input, staged
from atlasprep.sources._paths import split_modality
from atlasprep.sources.base import CellBatch, SourceInfo, plan_chunks, read_ahead, remap_columns
from atlasprep.sources.filters import CompiledFilter, ResolvedFilter, compile_filter
from atlasprep.sources.where import check_columns, columns_of

__all__ = ["AnnDataSource", "read_frame", "split_modality"]

log = logging.getLogger("atlasprep.sources")


class _Obs:
    """obs over the files, one column at a time: a column is read from every file the first
    time it is asked for and joined as ``anndata.concat`` joins obs (a file without it gives
    missing values; categoricals as :func:`_joined_categories` says)."""

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
            for column in new if len(parts) > 1 else ():
                dtypes = [p[column].dtype for p in parts if column in p.columns]
                if all(isinstance(d, pd.CategoricalDtype) for d in dtypes):
                    joined[column] = joined[column].astype(_joined_categories(dtypes))
            self._read.update({c: joined[c] for c in new})
        return pd.DataFrame(
            {c: self._read[c] for c in columns}, index=pd.RangeIndex(self.n_rows), columns=list(columns)
        )


def _joined_categories(dtypes: Sequence[pd.CategoricalDtype]) -> pd.CategoricalDtype | type[object]:
    """The dtype ``anndata.concat`` gives a column that is categorical in every file holding it:
    unordered, every file's categories in natural order; ordered, the files' own categories where
    they are all the same; else text."""
    from natsort import natsorted  # (anndata's own dependency, for the same order)

    categories = dtypes[0].categories
    for dtype in dtypes[1:]:
        categories = categories.union(dtype.categories)
    if not any(dtype.ordered for dtype in dtypes):
        return pd.CategoricalDtype(natsorted(categories), ordered=False)
    holding = [dtype for dtype in dtypes if len(dtype.categories)]
    if holding and all(
        dtype.ordered
        and len(dtype.categories) == len(categories)
        and bool(np.all(categories == dtype.categories))
        for dtype in holding
    ):
        return holding[0]
    return object


def _joined_var(parts: Sequence[pd.DataFrame], genes: list[str]) -> pd.DataFrame:
    """Several files' var over the joined ``genes``: every file's columns (first-seen order),
    each gene's value in a column the first one a file holding both gives (a file's missing
    value passes to the next). A column keeps its dtype where every gene has a value (files
    that disagree: pandas' common dtype); with missing values, as :func:`_joined_categories`
    says for categoricals, and as obs is written otherwise: booleans and integers as anndata's
    nullable arrays, text as a categorical of its values, sorted (a string array holds no
    missing value), numbers as floats."""
    index = pd.Index(genes)
    columns = dict.fromkeys(c for part in parts for c in part.columns)
    joined: dict[str, pd.Series] = {}
    for column in columns:
        holding = [part[column] for part in parts if column in part.columns]
        values = np.full(len(index), None, dtype=object)
        given = np.zeros(len(index), dtype=bool)
        for series in holding:
            at = index.get_indexer(series.index)
            new = ~given[at] & series.notna().to_numpy()
            values[at[new]] = series.to_numpy(dtype=object)[new]
            given[at[new]] = True
        dtypes = [series.dtype for series in holding]
        if all(isinstance(d, pd.CategoricalDtype) for d in dtypes):
            joined[column] = pd.Series(values, index=index).astype(_joined_categories(dtypes))
            continue
        common = pd.concat([series.iloc[:0] for series in holding]).dtype
        joined[column] = _with_missing(pd.Series(values, index=index), common, given)
    return pd.DataFrame(joined, index=index, columns=list(columns))


def _with_missing(values: pd.Series, common: Any, given: np.ndarray) -> pd.Series:
    """A joined var column (objects) in ``common``, the files' common dtype, or, where a gene
    has no value, in the dtype anndata writes with missing values."""
    if isinstance(common, pd.CategoricalDtype):  # (some files' categorical, others' not)
        common = np.dtype(object)
    if given.all() or isinstance(common, pd.api.extensions.ExtensionDtype):  # (nullable already)
        return values.astype(common)
    kind = np.dtype(common)
    if kind.kind == "b":
        return values.astype("boolean")
    if kind.kind in "iu":
        return values.astype(f"{'UInt' if kind.kind == 'u' else 'Int'}{8 * kind.itemsize}")
    if kind.kind in "fc":
        return values.astype(kind)
    if all(isinstance(v, str) for v in values[given]):
        return values.astype(pd.CategoricalDtype(sorted(set(values[given]))))
    return values


def _open_file(
    raw_path: str | os.PathLike[str], layer: str | None, offset: int, union: dict[str, int] | None
) -> tuple[_File, _ObsFile, pd.DataFrame, pd.Index]:
    """One input opened: its counts matrix, obs, var and cell names. ``union`` (several inputs):
    the joined var's features so far, extended with this file's (its columns mapped into it)."""
    path, modality = split_modality(str(raw_path))
    handle, store = _open_group(path)
    X = None
    try:
        with damaged_file(path):
            group = _modality_group(handle, path, modality)
            matrix = _matrix_path(group, layer, path)
        var, obs, obs_names, X, indptr = _read_parts(group, matrix, path)
        var.index = var.index.astype(str)
        if union is None:  # nothing to join: keep var as it is, duplicates included
            colmap = np.arange(len(var), dtype=np.int64)
        elif not var.index.is_unique:
            raise InputFormatError(
                f"{path}: var index has duplicate feature IDs, so it cannot be joined with the other "
                "inputs; harmonize it first (atlasprep harmonize maps symbols to Ensembl IDs)"
            )
        else:
            colmap = np.array([union.setdefault(f, len(union)) for f in var.index], dtype=np.int64)
    except BaseException:
        _close(handle, store, X)
        raise
    if matrix == "raw/X":
        log.info("%s: reading raw counts from raw.X", path)
    file = _File(
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
    return file, obs, var, obs_names


class AnnDataSource:
    """A :class:`~atlasprep.sources.base.CellSource` over one or more AnnData files."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]], *, layer: str | None = None) -> None:
        """``layer`` names the counts matrix: ``"X"``, ``"raw"`` (raw.X) or a key of ``layers``;
        by default raw.X where present, else X."""
        if not paths:
            raise SourceError("inputs: no file given")
        given = [os.fspath(p) for p in paths]
        paths = [staged(text) for text in given]  # a URL's local copy (sources/_fetch.py)
        self._files: list[_File] = []
        obs_parts: list[_ObsFile] = []
        var_parts: list[pd.DataFrame] = []
        offset = 0
        names: list[pd.Index] = []
        union: dict[str, int] = {}
        for raw_path in paths:
            try:
                file, obs, var, obs_names = _open_file(
                    raw_path, layer, offset, union if len(paths) > 1 else None
                )
            except BaseException:
                self.close()
                raise
            self._files.append(file)
            names.append(obs_names.astype(str))
            obs_parts.append(obs)
            var_parts.append(var)
            offset += obs.n_rows
        self._cell_ids = _unique_names(names, [f.path for f in self._files])
        # the obs index's name where every file gives it the same, as anndata.concat keeps it
        index_names = {None if n.name is None else str(n.name) for n in names}
        self.obs_index_name: str | None = index_names.pop() if len(index_names) == 1 else None
        self._obs = _Obs(obs_parts)
        self._var = var_parts[0] if len(var_parts) == 1 else _joined_var(var_parts, list(union))
        self.file_genes = tuple(tuple(str(g) for g in v.index) for v in var_parts)  # per file, as read
        # each file as the user named it: a URL (not its cached copy), or the local file
        named = [
            split_input(g)[0] if is_url(split_input(g)[0]) else str(f.path)
            for g, f in zip(given, self._files, strict=True)
        ]
        self.info = SourceInfo(
            kind="anndata",
            uri=", ".join(named),
            extra={"files": named, "matrices": [f.matrix for f in self._files]},
        )

    def presence(self, positions: np.ndarray | None = None) -> tuple[tuple[str, ...], np.ndarray]:
        """(files, files × var bool): which genes each file measured, as the Census's
        ``feature_dataset_presence_matrix`` says it per dataset."""
        index = self._var.index
        if len(self._files) == 1:  # its own var, as it is (repeated IDs too): every gene measured
            return (str(self._files[0].path),), np.ones((1, len(index)), dtype=bool)
        matrix = np.zeros((len(self._files), len(index)), dtype=bool)
        for k, genes in enumerate(self.file_genes):
            found = index.get_indexer(list(genes))
            matrix[k, found[found >= 0]] = True
        return tuple(str(f.path) for f in self._files), matrix

    def measured_cells(self, positions: np.ndarray) -> np.ndarray:
        """Per var gene, how many of the cells at ``positions`` come from a file that measured it."""
        starts = np.array([f.offset for f in self._files])
        per_file = np.bincount(np.searchsorted(starts, positions, side="right") - 1, minlength=len(starts))
        return per_file @ self.presence()[1].astype(np.int64)

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
        has_primary = "is_primary_data" in self._obs.columns
        return compile_filter(resolved, self.distinct_values, has_primary=has_primary)

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
        # one Arrow schema for every batch: a text column that a batch holds no value of (its
        # cells from a file without the column) would otherwise be typed null there
        schema = pa.Schema.from_pandas(obs, preserve_index=False)
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
                X = _as_float32(remap_columns(_read_rows(f, chunk - f.offset), file_columns[k], n_out), f)
                yield CellBatch(
                    cell_ids=self._cell_ids.take(chunk).to_numpy(zero_copy_only=False).astype(str),
                    obs=pa.Table.from_pandas(obs.iloc[chunk], schema=schema, preserve_index=False),
                    X=X,
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
            _close(f.handle, f.store, f.X)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _as_float32(X: sp.csr_matrix, f: _File) -> sp.csr_matrix:
    """A batch's counts as float32 (every stage's), refusing values beyond float32's range,
    which would become inf (and be called non-finite)."""
    if X.dtype == np.float32:
        return X
    if X.dtype.kind == "f" and X.dtype.itemsize > 4 and X.nnz and float(np.abs(X.data).max()) > _FLOAT32_MAX:
        raise InputFormatError(
            f"{f.path}: {f.matrix} holds values beyond float32's range (3.4e38), which atlasprep "
            "stores counts in; raw counts are never that large: point at raw counts (raw.X or a counts layer)"
        )
    return X.astype(np.float32)


def _unique_names(names: list[pd.Index], paths: list[Path]) -> pa.Array:
    """The cells' names, as Arrow strings (their bytes and 8 more a cell, where a numpy string
    array would take 4 bytes a character of the longest name, every cell)."""
    flat = np.concatenate([n.to_numpy(dtype=object) for n in names]) if names else np.array([], dtype=object)
    if not pd.Index(flat).is_unique:
        log.warning("obs names repeat across the inputs; prefixing each with its file's stem")
        flat = np.concatenate(
            [np.char.add(f"{p.stem}:", idx.to_numpy(dtype=str)) for p, idx in zip(paths, names, strict=True)]
        )
    return pa.array(flat, type=pa.large_string())
