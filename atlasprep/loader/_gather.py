"""Batches and single cells gathered from the pieces that hold them (see :mod:`atlasprep.loader.dataset`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from atlasprep.loader._sampled import DrawnPiece
from atlasprep.loader._window import Piece
from atlasprep.loader.collate import RaggedRows, collate_parts

__all__ = ["Found", "by_shard", "collate_found", "per_batch", "row_blocks", "single_cells"]

# a piece, the batch rows it fills, and the rows of the piece that fill them
Found = tuple[Piece, np.ndarray, np.ndarray]


def collate_found(
    found: Sequence[Found], n_rows: int, *, columns: Sequence[str], pad_id: int, pad_to: int | None
) -> dict[str, Any]:
    """One padded batch straight from the pieces' flat buffers (no per-cell Python)."""
    parts = []
    labels = {c: np.zeros(n_rows, dtype=np.int64) for c in columns}
    cell_ids = np.empty(n_rows, dtype=object)
    for piece, rows, at in found:
        local = _rows(piece, at)
        starts = piece.offsets[local]
        parts.append(
            RaggedRows(
                rows=rows,
                starts=starts,
                lengths=piece.offsets[local + 1] - starts,
                ids=piece.ids,
                values=piece.values,
            )
        )
        for column in columns:
            labels[column][rows] = piece.meta[column][local]
        cell_ids[rows] = piece.cell_ids[local]
    return collate_parts(
        parts, n_rows=n_rows, pad_id=pad_id, pad_to=pad_to, labels=labels, cell_ids=cell_ids.tolist()
    )


def _rows(piece: Piece, at: np.ndarray) -> np.ndarray:
    """The rows of ``piece``'s cells at its positions ``at`` (a drawn piece repeats rows)."""
    return piece.rows[at] if isinstance(piece, DrawnPiece) else at


def single_cells(found: Sequence[Found], n: int, columns: Sequence[str]) -> Iterator[dict[str, Any]]:
    """One dict per cell, in row order."""
    piece_of = np.empty(n, dtype=np.int64)
    row_of = np.empty(n, dtype=np.int64)
    for k, (piece, rows, at) in enumerate(found):
        piece_of[rows] = k
        row_of[rows] = _rows(piece, at)
    for k, row in zip(piece_of.tolist(), row_of.tolist(), strict=True):
        piece = found[k][0]
        a, b = int(piece.offsets[row]), int(piece.offsets[row + 1])
        cell: dict[str, Any] = {"input_ids": np.array(piece.ids[a:b]), "cell_id": str(piece.cell_ids[row])}
        if piece.values is not None:
            cell["values"] = np.array(piece.values[a:b])
        for column in columns:
            cell[column] = str(piece.meta[column][row])
        yield cell


def by_shard(cells: np.ndarray, starts: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Cells (indices into the split, shards laid end to end from ``starts``) by shard:
    (shard, positions in ``cells``, rows in the shard)."""
    shard_of = np.searchsorted(starts, cells, side="right") - 1
    for shard in np.unique(shard_of).tolist():
        rows = np.flatnonzero(shard_of == shard)
        yield shard, rows, cells[rows] - starts[shard]


def row_blocks(rows: np.ndarray, block: int) -> Iterator[tuple[int, np.ndarray]]:
    """Sorted ``rows`` cut where they enter a new block of ``block`` rows: (first index, rows)."""
    cuts = np.flatnonzero(np.diff(rows // block)) + 1
    yield from zip(np.r_[0, cuts].tolist(), np.split(rows, cuts), strict=True)


def per_batch(parts: Sequence[tuple[Piece, np.ndarray]], size: int, n_batches: int) -> Iterator[list[Found]]:
    """Consecutive batches of ``size`` cells from pieces holding them at the given places
    (place ``p`` is row ``p % size`` of batch ``p // size``)."""
    batch_of = [places // size for _, places in parts]
    for j in range(n_batches):  # once per batch and piece, not per cell
        found = []
        for (piece, places), which in zip(parts, batch_of, strict=True):
            picked = np.flatnonzero(which == j)
            if len(picked):
                found.append((piece, places[picked] - j * size, picked))
        yield found
