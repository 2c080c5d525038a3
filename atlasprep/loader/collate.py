"""Padding ragged cells into batches: one vectorized kernel behind both loader paths.

A batch is described as :class:`RaggedRows` parts: for a set of batch rows, where each cell's
tokens start in a flat buffer and how long it is. The flat buffer is whatever the cells live
in — a memory-mapped Arrow shard, a slice read from Zarr, or the per-cell arrays of
:class:`ShardCollator` concatenated — so the fast path (``ShardDataset(batch_size=B)``)
gathers straight from the shard without building per-cell arrays. :func:`collate_parts` fills
the ``batch × L`` output row by row in one numba pass (:mod:`atlasprep.loader._pad`): position
``(row, i)`` is ``start[row] + i`` of the buffer where ``i < length[row]``, padding after.

Metadata columns become int64 labels through label maps (column → sorted values, index =
label) that the dataset builds once from the whole split, so a label means the same value in
every batch and every worker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atlasprep.errors import InputFormatError, UsageError
from atlasprep.loader._pad import pad_batch
from atlasprep.tokenize.padding import RaggedRows, as_tensors

__all__ = ["RaggedRows", "ShardCollator", "collate_parts", "encode_labels"]


def collate_parts(
    parts: Sequence[RaggedRows],
    *,
    n_rows: int,
    pad_id: int = 0,
    pad_to: int | None = None,
    labels: Mapping[str, np.ndarray] | None = None,
    cell_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The batch as tensors: ``input_ids`` (int64, ``n_rows × L``), ``attention_mask`` (bool),
    ``values`` (float32, 0 where padded) when the parts carry values, one int64 tensor per
    label column, and ``cell_id`` (a list) when given. ``L`` is ``pad_to`` if given (longer cells
    are truncated), else the longest cell: :func:`atlasprep.tokenize.padding.pad_parts`'s batch,
    made in one pass (:func:`atlasprep.loader._pad.pad_batch`)."""
    padded = pad_batch(parts, n_rows=n_rows, pad_id=pad_id, pad_to=pad_to, labels=labels, cell_ids=cell_ids)
    return as_tensors(padded)


def label_lookup(label_maps: Mapping[str, Sequence[str]]) -> dict[str, dict[str, int]]:
    return {column: {value: i for i, value in enumerate(values)} for column, values in label_maps.items()}


def encode_labels(values: np.ndarray, lookup: Mapping[str, int], column: str) -> np.ndarray:
    """Labels of ``values`` (strings) by ``lookup``; one dictionary lookup per distinct value."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    distinct, inverse = np.unique(np.asarray(values, dtype=object), return_inverse=True)
    missing = [str(v) for v in distinct if v not in lookup]
    if missing:
        raise InputFormatError(f"{column}: value(s) {missing[:5]} are not in the label map")
    return np.array([lookup[v] for v in distinct], dtype=np.int64)[inverse.reshape(-1)]


@dataclass(frozen=True, slots=True)
class ShardCollator:
    """Collate per-cell dicts (what ``ShardDataset(batch_size=None)`` yields) into a batch.

    ``label_maps`` (column → values, index = label; use ``dataset.label_maps``) is required for
    every column in ``columns``, so labels agree across batches and workers.
    """

    pad_id: int = 0
    pad_to: int | None = None
    columns: tuple[str, ...] = ()
    label_maps: Mapping[str, Sequence[str]] | None = None
    _lookup: dict[str, dict[str, int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        maps = self.label_maps or {}
        absent = [c for c in self.columns if c not in maps]
        if absent:
            raise UsageError(
                f"no label map for {absent}: pass label_maps=dataset.label_maps "
                "(built once from the whole split, so labels agree across batches)"
            )
        if self.pad_to is not None and self.pad_to < 1:
            raise UsageError(f"pad_to must be positive, not {self.pad_to}")
        object.__setattr__(self, "_lookup", label_lookup({c: maps[c] for c in self.columns}))

    def __call__(self, cells: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        lengths = np.array([len(cell["input_ids"]) for cell in cells], dtype=np.int64)
        flat = np.concatenate([np.asarray(c["input_ids"]) for c in cells]) if cells else np.zeros(0)
        values = None
        if cells and "values" in cells[0]:
            values = np.concatenate([np.asarray(c["values"], dtype=np.float32) for c in cells])
        part = RaggedRows(
            rows=np.arange(len(cells)),
            starts=np.cumsum(lengths) - lengths,
            lengths=lengths,
            ids=flat,
            values=values,
        )
        labels = {
            column: encode_labels(np.array([c[column] for c in cells], dtype=object), lookup, column)
            for column, lookup in self._lookup.items()
        }
        return collate_parts(
            [part],
            n_rows=len(cells),
            pad_id=self.pad_id,
            pad_to=self.pad_to,
            labels=labels,
            cell_ids=[str(c["cell_id"]) for c in cells] if cells and "cell_id" in cells[0] else None,
        )
