"""The raw-counts scan: ``raw.X`` (else ``X``) of an h5ad, zarr or zipped zarr store, CSR, CSC or
dense, streamed once in slices of its stored values (sparse) or rows (dense), never loaded whole.
It flags cells with non-integer, negative or no nonzero counts, counts the cells that express
genes the var checks flagged, and notes explicit zeros, dtype and layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from atlasprep.errors import InputFormatError
from atlasprep.harmonize._report import N_EXAMPLES, Found
from atlasprep.harmonize._schema_rules import MAX_SPARSITY
from atlasprep.harmonize._slice import Slice
from atlasprep.harmonize._var_checks import GeneFindings


@dataclass(slots=True)
class Scan:
    """Per-cell flags gathered while the counts stream by (mutable: filled chunk by chunk)."""

    non_integer: npt.NDArray[np.bool_]
    negative: npt.NDArray[np.bool_]
    has_value: npt.NDArray[np.bool_]
    stored_zero: npt.NDArray[np.bool_]  # cells with explicit zeros
    gene_nonzero: npt.NDArray[np.int64]  # per gene, its nonzero values
    zero_genes: npt.NDArray[np.bool_]
    flagged: npt.NDArray[np.bool_]  # (n_gene_findings, n_cells): cells counting in flagged genes
    row_hash: npt.NDArray[np.uint64]  # per cell, a hash of its nonzero (gene, value) pairs
    n_zeros: int = 0
    n_nonzero: int = 0


def check_counts(
    part: Slice,
    gene_findings: GeneFindings,
    problems: Found,
    warnings: Found,
    *,
    chunk_values: int,
    needs_value: npt.NDArray[np.bool_] | None = None,
    raw_rules: bool = True,
) -> Scan:
    """Stream the counts once: whole, non-negative numbers, a nonzero per cell (of those in
    ``needs_value``, default all); cells per gene finding. Returns what the scan found.
    ``raw_rules`` False (ATAC or methylation data): the raw-count rules are warnings, as the
    schema applies them to RNA only."""
    n_cells, n_genes = len(part.obs), len(part.var)
    elem, name = part.counts, part.counts_name
    layout, shape, dtype = layout_of(elem)
    if shape != (n_cells, len(part.raw_var) if part.raw_var is not None else n_genes):
        raise InputFormatError(f"{name} has shape {shape}, but obs × var is {n_cells} × {n_genes}")
    aligned = part.raw_var is None or part.raw_var.index.equals(part.var.index)
    masks = [mask for _, mask in gene_findings] if aligned else []
    scan = _scan(elem, layout, shape, masks, chunk_values)
    for i, (what, mask) in enumerate(gene_findings):
        ids = part.var.index[mask][:N_EXAMPLES]
        problems.add("var_names", what, int(scan.flagged[i].sum()) if aligned else n_cells, ids)
    _check_duplicates(part, scan.row_hash, name, problems)
    needs = np.ones(n_cells, bool) if needs_value is None else needs_value
    if raw_rules:
        _check_raw(part, scan, (name, dtype), needs, problems, "")
    else:
        _check_raw(part, scan, (name, dtype), needs, warnings, " (not required of ATAC or methylation data)")
    if scan.n_zeros:
        genes = part.var.index[scan.zero_genes[: len(part.var)]] if aligned else pd.Index([])
        what = f"stores {scan.n_zeros:,} explicit zeros in {int(scan.zero_genes.sum())} genes"
        warnings.add(name, what, int(scan.stored_zero.sum()), genes[:N_EXAMPLES])
    check_layout(name, layout, shape, scan.n_nonzero, problems)
    return scan


def _check_raw(
    part: Slice,
    scan: Scan,
    matrix: tuple[str, np.dtype[Any]],
    needs: npt.NDArray[np.bool_],
    found: Found,
    note: str,
) -> None:
    """The schema's raw-count rules: whole, non-negative, float32, a nonzero in every cell that needs one."""
    (name, dtype), names = matrix, part.obs.index
    hint = " (X holds normalized values and there is no raw.X)" if name == "X" else ""
    for mask, what in (
        (scan.non_integer, f"holds non-integer, NaN or infinite values: raw counts are whole numbers{hint}"),
        (scan.negative, "holds negative values: counts are never below 0"),
        (~scan.has_value & needs, "cells without a single nonzero count (CELLxGENE requires one per cell)"),
    ):
        if mask.any():
            found.add(name, what + note, int(mask.sum()), names[mask][:N_EXAMPLES])
    if dtype != np.float32:
        found.add(name, f"stored as {dtype}: raw counts must be float32{note}", len(names))


def check_layout(name: str, layout: str, shape: tuple[int, int], n_nonzero: int, problems: Found) -> None:
    """CSR, or dense while at most half its values are zero (schema: ``sparsity``)."""
    sparsity = 1 - n_nonzero / max(shape[0] * shape[1], 1)
    if layout == "csc":
        problems.add(name, "stored CSC: sparse matrices must be CSR", shape[0])
    elif layout == "dense" and sparsity > MAX_SPARSITY:
        what = f"stored dense with sparsity {sparsity:.2f} (over {MAX_SPARSITY}): it must be CSR"
        problems.add(name, what, shape[0])


def _check_duplicates(part: Slice, row_hash: npt.NDArray[np.uint64], name: str, problems: Found) -> None:
    """Cells whose counts repeat another cell's exactly (spots out of tissue left aside)."""
    keep = np.ones(len(row_hash), bool)
    if "in_tissue" in part.obs:
        keep = np.asarray(part.obs["in_tissue"] != 0)
    hashes = pd.Series(row_hash[keep])
    dup = np.asarray(hashes.duplicated(keep=False))
    if dup.any():
        names = part.obs.index[keep][dup]
        problems.add(
            name, "cells repeat another cell's counts exactly (duplicated rows)", int(dup.sum()), names[:3]
        )


def check_normalized(
    part: Slice, elem: Any, raw: Scan, problems: Found, warnings: Found, *, chunk_values: int
) -> None:
    """X beside raw.X: its layout, and var's feature_is_filtered against it (warnings, as
    cellxgene-schema gives them): a filtered gene is all zero in X, and a gene all zero in X is
    filtered or all zero in raw.X too."""
    layout, shape, _ = layout_of(elem)
    scan = _scan(elem, layout, shape, [], chunk_values)
    check_layout("X", layout, shape, scan.n_nonzero, problems)
    flags = part.var.get("feature_is_filtered")
    if flags is None or not pd.api.types.is_bool_dtype(flags) or len(raw.gene_nonzero) != shape[1]:
        return
    filtered, in_x = flags.to_numpy(bool), scan.gene_nonzero > 0
    names, where = part.var.index, "var['feature_is_filtered']"
    if (filtered & in_x).any():
        what = "True for genes with nonzero values in X: a filtered gene is all zero there"
        warnings.add(where, what, len(part.obs), names[filtered & in_x][:N_EXAMPLES])
    unmarked = ~in_x & ~filtered & (raw.gene_nonzero > 0)
    if unmarked.any():
        what = "False for genes all zero in X but not in raw.X: mark them filtered (or zero them in raw.X)"
        warnings.add(where, what, len(part.obs), names[unmarked][:N_EXAMPLES])


def check_layer(name: str, elem: Any, problems: Found, *, chunk_values: int) -> None:
    """A layer: CSR, or dense and not too sparse."""
    layout, shape, _ = layout_of(elem)
    n_nonzero = _scan(elem, layout, shape, [], chunk_values).n_nonzero if layout == "dense" else 0
    check_layout(name, layout, shape, n_nonzero, problems)


def layout_of(elem: Any) -> tuple[str, tuple[int, int], np.dtype[Any]]:
    encoding = str(elem.attrs.get("encoding-type", ""))
    if encoding in ("csr_matrix", "csc_matrix"):
        shape = tuple(int(s) for s in elem.attrs["shape"])
        return encoding[:3], (shape[0], shape[1]), np.dtype(elem["data"].dtype)
    if hasattr(elem, "keys") or len(elem.shape) != 2:
        raise InputFormatError(
            f"counts matrix {elem.name} has an encoding atlasprep cannot read ({encoding!r})"
        )
    return "dense", (int(elem.shape[0]), int(elem.shape[1])), np.dtype(elem.dtype)


def _scan(
    elem: Any,
    layout: str,
    shape: tuple[int, int],
    masks: list[npt.NDArray[np.bool_]],
    chunk_values: int,
) -> Scan:
    """Per-cell flags over the whole matrix, read ``chunk_values`` stored values (or that many
    values' worth of dense rows) at a time."""
    n_cells, n_genes = shape
    scan = Scan(
        non_integer=np.zeros(n_cells, bool),
        negative=np.zeros(n_cells, bool),
        has_value=np.zeros(n_cells, bool),
        gene_nonzero=np.zeros(n_genes, np.int64),
        stored_zero=np.zeros(n_cells, bool),
        zero_genes=np.zeros(n_genes, bool),
        flagged=np.zeros((len(masks), n_cells), bool),
        row_hash=np.zeros(n_cells, np.uint64),
    )
    flags = np.zeros((len(masks), n_genes), bool)
    for i, mask in enumerate(masks):
        flags[i, : len(mask)] = mask[:n_genes]
    if layout == "dense":
        rows_per_read = max(1, chunk_values // max(n_genes, 1))
        for start in range(0, n_cells, rows_per_read):
            block = np.asarray(elem[start : start + rows_per_read])
            rows, cols = np.nonzero(block)  # NaN counts as nonzero
            _mark(scan, rows + start, cols, block[rows, cols], flags, explicit=False)
        return scan
    indptr = np.asarray(elem["indptr"][:], dtype=np.int64)
    data, indices = elem["data"], elem["indices"]
    for start in range(0, int(indptr[-1]), chunk_values):
        stop = min(start + chunk_values, int(indptr[-1]))
        major = np.searchsorted(indptr, np.arange(start, stop), side="right") - 1
        minor = np.asarray(indices[start:stop], dtype=np.int64)
        rows, cols = (major, minor) if layout == "csr" else (minor, major)
        _mark(scan, rows, cols, np.asarray(data[start:stop]), flags, explicit=True)
    return scan


def _mark(
    scan: Scan,
    rows: npt.NDArray[np.int64],
    cols: npt.NDArray[np.int64],
    values: npt.NDArray[Any],
    flags: npt.NDArray[np.bool_],
    *,
    explicit: bool,
) -> None:
    """Fold one slice of stored values (with their cell and gene) into the scan."""
    if np.issubdtype(values.dtype, np.floating):
        scan.non_integer[rows[~np.isfinite(values) | (values != np.trunc(values))]] = True
    scan.negative[rows[values < 0]] = True
    nonzero = values != 0
    scan.has_value[rows[nonzero]] = True
    scan.gene_nonzero += np.bincount(cols[nonzero], minlength=len(scan.gene_nonzero))
    scan.n_nonzero += int(nonzero.sum())
    if explicit and not nonzero.all():
        zero = ~nonzero
        scan.stored_zero[rows[zero]] = True
        scan.zero_genes[cols[zero]] = True
        scan.n_zeros += int(zero.sum())
    for i in range(len(flags)):
        scan.flagged[i, rows[nonzero & flags[i, cols]]] = True
    _fold_hash(scan.row_hash, rows[nonzero], cols[nonzero], values[nonzero])


_GOLDEN, _M1, _M2 = (
    np.uint64(0x9E3779B97F4A7C15),
    np.uint64(0xBF58476D1CE4E5B9),
    np.uint64(0x94D049BB133111EB),
)


def _fold_hash(
    acc: npt.NDArray[np.uint64],
    rows: npt.NDArray[np.int64],
    cols: npt.NDArray[np.int64],
    values: npt.NDArray[Any],
) -> None:
    """Add each stored (gene, value) pair's splitmix64 hash to its cell's sum (wrapping uint64)."""
    if not len(rows):
        return
    x = (cols.astype(np.uint64) * _GOLDEN) ^ values.astype(np.float64).view(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    x ^= x >> np.uint64(31)
    if np.all(rows[1:] >= rows[:-1]):  # CSR and dense reads come row by row
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        acc[rows[starts]] += np.add.reduceat(x, starts)
    else:
        np.add.at(acc, rows, x)
