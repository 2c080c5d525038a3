"""The pieces of shards a consumer still needs, in sequence order (see :mod:`atlasprep.loader.dataset`).

Pieces are held while some cell in them is still to be sent; the emission order moves each cell
at most ``buffer_size`` places, so a piece is released as soon as the smallest position still to
come is past its end.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Piece", "Window", "locate"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Piece:
    """Cells ``first .. first + n - 1`` of a consumer's sequence, as views of their shard."""

    first: int
    n: int
    ids: np.ndarray  # flat tokens (may be the whole shard's buffer)
    offsets: np.ndarray  # n + 1 positions into ``ids``
    values: np.ndarray | None
    cell_ids: np.ndarray  # object array of str
    meta: dict[str, np.ndarray]  # column -> str (single cells) or int64 labels (batches)


class Window:
    """The pieces still needed, in sequence order, loaded on demand."""

    def __init__(self, pieces: Iterator[Piece], *, begin: int) -> None:
        self._source = pieces
        self._pieces: list[Piece] = []
        self._loaded = begin  # positions below this are loaded (or never needed)

    def ensure(self, last: int) -> None:
        while self._loaded <= last:
            piece = next(self._source)
            self._pieces.append(piece)
            self._loaded = piece.first + piece.n

    def release(self, below: int) -> None:
        self._pieces = [p for p in self._pieces if p.first + p.n > below]

    def locate(self, positions: np.ndarray) -> list[tuple[Piece, np.ndarray, np.ndarray]]:
        """For each piece holding some of ``positions``: (piece, rows in ``positions``, rows in piece)."""
        return locate(self._pieces, positions)


def locate(pieces: Sequence[Piece], positions: np.ndarray) -> list[tuple[Piece, np.ndarray, np.ndarray]]:
    """For each of ``pieces`` (in sequence order) holding some of ``positions``: (piece, rows in
    ``positions``, rows in the piece)."""
    firsts = np.array([p.first for p in pieces], dtype=np.int64)
    which = np.searchsorted(firsts, positions, side="right") - 1
    found = []
    for k in np.unique(which).tolist():  # once per piece, not per cell
        rows = np.flatnonzero(which == k)
        piece = pieces[k]
        found.append((piece, rows, positions[rows] - piece.first))
    return found
