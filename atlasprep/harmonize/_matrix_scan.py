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
from atlasprep.harmonize._slice import Slice
from atlasprep.harmonize._var_checks import GeneFindings


@dataclass(slots=True)
class _Scan:
    """Per-cell flags gathered while the counts stream by (mutable: filled chunk by chunk)."""

    non_integer: npt.NDArray[np.bool_]
    negative: npt.NDArray[np.bool_]
    has_value: npt.NDArray[np.bool_]
    stored_zero: npt.NDArray[np.bool_]  # cells with explicit zeros
    zero_genes: npt.NDArray[np.bool_]
    flagged: npt.NDArray[np.bool_]  # (n_gene_findings, n_cells): cells counting in flagged genes
    n_zeros: int = 0
    n_nonzero: int = 0


def check_counts(
    part: Slice, gene_findings: GeneFindings, problems: Found, warnings: Found, *, chunk_values: int
) -> None:
    """Stream the counts once: whole, non-negative numbers, a nonzero per cell; cells per gene finding."""
    n_cells, n_genes = len(part.obs), len(part.var)
    elem, name = part.counts, part.counts_name
    layout, shape, dtype = _layout(elem)
    if shape != (n_cells, len(part.raw_var) if part.raw_var is not None else n_genes):
        raise InputFormatError(f"{name} has shape {shape}, but obs × var is {n_cells} × {n_genes}")
    aligned = part.raw_var is None or part.raw_var.index.equals(part.var.index)
    masks = [mask for _, mask in gene_findings] if aligned else []
    scan = _scan(elem, layout, shape, masks, chunk_values)
    for i, (what, mask) in enumerate(gene_findings):
        ids = part.var.index[mask][:N_EXAMPLES]
        problems.add("var_names", what, int(scan.flagged[i].sum()) if aligned else n_cells, ids)
    names = part.obs.index
    hint = " (X holds normalized values and there is no raw.X)" if name == "X" else ""
    for mask, what in (
        (scan.non_integer, f"holds non-integer, NaN or infinite values: raw counts are whole numbers{hint}"),
        (scan.negative, "holds negative values: counts are never below 0"),
        (~scan.has_value, "cells without a single nonzero count (CELLxGENE requires one per cell)"),
    ):
        if mask.any():
            problems.add(name, what, int(mask.sum()), names[mask][:N_EXAMPLES])
    if scan.n_zeros:
        genes = part.var.index[scan.zero_genes[: len(part.var)]] if aligned else pd.Index([])
        what = f"stores {scan.n_zeros:,} explicit zeros in {int(scan.zero_genes.sum())} genes"
        warnings.add(name, what, int(scan.stored_zero.sum()), genes[:N_EXAMPLES])
    if dtype != np.float32:
        warnings.add(name, f"stored as {dtype}: CELLxGENE stores counts as float32", n_cells)
    sparse_enough = scan.n_nonzero * 2 < max(shape[0] * shape[1], 1)
    if layout == "csc" or (layout == "dense" and sparse_enough):
        what = f"stored {layout}: CELLxGENE wants CSR for sparse counts, and atlasprep streams CSR rows"
        warnings.add(name, what, n_cells)


def _layout(elem: Any) -> tuple[str, tuple[int, int], np.dtype[Any]]:
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
) -> _Scan:
    """Per-cell flags over the whole matrix, read ``chunk_values`` stored values (or that many
    values' worth of dense rows) at a time."""
    n_cells, n_genes = shape
    scan = _Scan(
        non_integer=np.zeros(n_cells, bool),
        negative=np.zeros(n_cells, bool),
        has_value=np.zeros(n_cells, bool),
        stored_zero=np.zeros(n_cells, bool),
        zero_genes=np.zeros(n_genes, bool),
        flagged=np.zeros((len(masks), n_cells), bool),
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
    scan: _Scan,
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
    scan.n_nonzero += int(nonzero.sum())
    if explicit and not nonzero.all():
        zero = ~nonzero
        scan.stored_zero[rows[zero]] = True
        scan.zero_genes[cols[zero]] = True
        scan.n_zeros += int(zero.sum())
    for i in range(len(flags)):
        scan.flagged[i, rows[nonzero & flags[i, cols]]] = True
