"""Ragged cells padded into a batch: one vectorized kernel, numpy only (the loaders turn its
arrays into torch tensors; :meth:`atlasprep.tokenize.Tokenizer.__call__` returns them as they are
when torch is absent).

A batch is described as :class:`RaggedRows` parts: for a set of batch rows, where each cell's
tokens start in a flat buffer and how long it is. :func:`pad_parts` fills the ``batch × L``
output with one ``take`` per part: the source of position ``(row, i)`` is ``start[row] + i`` (a
broadcast sum, clipped to the buffer), kept where ``i < length[row]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["RaggedRows", "as_tensors", "batch_dict", "pad_parts"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RaggedRows:
    """Batch rows ``rows``: cell ``i`` is ``ids[starts[i] : starts[i] + lengths[i]]`` (same for values)."""

    rows: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    ids: np.ndarray
    values: np.ndarray | None = None


def _gather(part: RaggedRows, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Source positions (``rows × width``, clipped into the buffer) and which of them are real tokens."""
    columns = np.arange(width, dtype=np.int64)
    source = part.starts.astype(np.int64)[:, None] + columns[None, :]
    return source, columns[None, :] < part.lengths[:, None]


def pad_parts(
    parts: Sequence[RaggedRows],
    *,
    n_rows: int,
    pad_id: int = 0,
    pad_to: int | None = None,
    labels: Mapping[str, np.ndarray] | None = None,
    cell_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The batch as numpy arrays: ``input_ids`` (int64, ``n_rows × L``), ``attention_mask``
    (bool), ``values`` (float32, 0 where padded) when the parts carry values, one int64 array per
    label column, and ``cell_id`` (a list) when given. ``L`` is ``pad_to`` if given (longer cells
    are truncated), else the longest cell."""
    longest = max((int(p.lengths.max()) for p in parts if len(p.lengths)), default=0)
    width = pad_to if pad_to is not None else longest
    ids = np.full((n_rows, width), pad_id, dtype=np.int64)
    attention = np.zeros((n_rows, width), dtype=bool)
    has_values = any(p.values is not None for p in parts)
    values = np.zeros((n_rows, width), dtype=np.float32) if has_values else None
    for part in parts:
        if part.ids.size == 0 or width == 0:  # only empty cells: nothing to copy
            continue
        source, real = _gather(part, width)
        ids[part.rows] = np.where(real, part.ids.take(source, mode="clip"), pad_id)
        attention[part.rows] = real
        if values is not None and part.values is not None:
            values[part.rows] = np.where(real, part.values.take(source, mode="clip"), 0)
    return batch_dict(ids, attention, values, labels=labels, cell_ids=cell_ids)


def batch_dict(
    ids: np.ndarray,
    attention: np.ndarray,
    values: np.ndarray | None,
    *,
    labels: Mapping[str, np.ndarray] | None = None,
    cell_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The batch dict of padded arrays: ``values`` only where the cells carry values, one int64
    array per label column, ``cell_id`` (a list) when given."""
    batch: dict[str, Any] = {"input_ids": ids, "attention_mask": attention}
    if values is not None:
        batch["values"] = values
    for column, codes in (labels or {}).items():
        batch[column] = np.asarray(codes, dtype=np.int64)
    if cell_ids is not None:
        batch["cell_id"] = list(cell_ids)
    return batch


def as_tensors(batch: Mapping[str, Any]) -> dict[str, Any]:
    """A padded batch's arrays as torch tensors (zero-copy) when torch is installed, as the
    loaders give them; the arrays themselves without torch. Other entries stay as they are."""
    try:
        import torch
    except ImportError:  # pragma: no cover - exercised only without torch
        return dict(batch)
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}
