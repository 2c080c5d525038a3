"""Cells grouped by how many values they hold, so one numpy call serves each group."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np

__all__ = ["length_groups"]


def length_groups(lengths: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(k, rows) for every distinct nonzero ``k`` in ``lengths``; ``rows`` ascending."""
    by_length = np.argsort(lengths, kind="stable")
    sorted_lengths = lengths[by_length]
    bounds = np.flatnonzero(np.r_[True, sorted_lengths[1:] != sorted_lengths[:-1], True])
    for a, b in itertools.pairwise(bounds):
        if sorted_lengths[a] > 0:
            yield int(sorted_lengths[a]), by_length[a:b]
