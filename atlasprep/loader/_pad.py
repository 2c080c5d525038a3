"""The loaders' padding kernel: what :func:`atlasprep.tokenize.padding.pad_parts` makes, in one pass.

``pad_parts`` builds a ``rows × L`` index array, gathers through it, masks with ``np.where`` and
scatters the result: five passes over the batch, 85% of the time a loader spends on it. Here a
numba kernel writes each output row once, straight from the flat buffers: the cell's tokens,
then the padding. The arrays are equal, element for element (a test checks it against
``pad_parts``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numba
import numpy as np

from atlasprep.tokenize.padding import RaggedRows, batch_dict

__all__ = ["Arena", "building_in", "pad_batch"]

_ALIGN = 64


class Arena:
    """Bump allocation in one byte buffer (a DataLoader worker's shared-memory slot), so a batch
    is padded where it will be sent from, not copied there."""

    def __init__(self, buffer: np.ndarray) -> None:
        self.buffer, self.used = buffer, 0

    def empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray | None:
        """An uninitialized array in the buffer, or None when it does not fit."""
        dtype = np.dtype(dtype)
        start = -(-self.used // _ALIGN) * _ALIGN
        stop = start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if stop > len(self.buffer):
            return None
        self.used = stop
        return self.buffer[start:stop].view(dtype).reshape(shape)


_arena: Arena | None = None  # where pad_batch puts its arrays, while building_in says so


@contextmanager
def building_in(arena: Arena | None) -> Iterator[None]:
    """Batches padded meanwhile (in this process) go into ``arena`` as far as they fit."""
    global _arena
    before, _arena = _arena, arena
    try:
        yield
    finally:
        _arena = before


def _empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    placed = _arena.empty(shape, dtype) if _arena is not None else None
    return placed if placed is not None else np.empty(shape, dtype=dtype)


@numba.njit(cache=True, nogil=True)
def _fill(  # type: ignore[no-untyped-def]  # pragma: no cover
    ids, mask, values, covered, rows, starts, lengths, flat_ids, flat_values, pad_id, with_values
):
    width, last = ids.shape[1], flat_ids.shape[0] - 1
    for k in range(rows.shape[0]):
        row, start = rows[k], starts[k]
        n = min(max(lengths[k], 0), width)
        covered[row] = True
        for i in range(n):
            ids[row, i] = flat_ids[min(start + i, last)]  # clipped into the buffer, as np.take(mode="clip")
            mask[row, i] = True
        for i in range(n, width):
            ids[row, i] = pad_id
            mask[row, i] = False
        if with_values:
            for i in range(n):
                values[row, i] = flat_values[min(start + i, last)]
            for i in range(n, width):
                values[row, i] = 0


def pad_batch(
    parts: Sequence[RaggedRows],
    *,
    n_rows: int,
    pad_id: int = 0,
    pad_to: int | None = None,
    labels: Mapping[str, np.ndarray] | None = None,
    cell_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Exactly :func:`atlasprep.tokenize.padding.pad_parts`'s batch (numpy arrays)."""
    longest = max((int(p.lengths.max()) for p in parts if len(p.lengths)), default=0)
    width = pad_to if pad_to is not None else longest
    has_values = any(p.values is not None for p in parts)
    ids = _empty((n_rows, width), np.int64)
    mask = _empty((n_rows, width), np.bool_)
    values = _empty((n_rows, width), np.float32) if has_values else np.empty((n_rows, 0), np.float32)
    covered = np.zeros(n_rows, dtype=bool)
    no_values = np.zeros(1, dtype=np.float32)
    for part in parts:
        if part.ids.size == 0 or width == 0:  # only empty cells: left as padding below
            continue
        with_values = has_values and part.values is not None
        rows, starts, lengths = (
            np.ascontiguousarray(a, dtype=np.int64) for a in (part.rows, part.starts, part.lengths)
        )
        flat_values = part.values if with_values else no_values
        _fill(ids, mask, values, covered, rows, starts, lengths, part.ids, flat_values, pad_id, with_values)
        if has_values and not with_values:
            values[part.rows] = 0
    if not covered.all():
        ids[~covered], mask[~covered] = pad_id, False
        if has_values:
            values[~covered] = 0
    return batch_dict(ids, mask, values if has_values else None, labels=labels, cell_ids=cell_ids)
