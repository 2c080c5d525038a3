"""Epoch after epoch of a loader, for the benchmarks (numpy-free: runs in annbatch's environment too)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

__all__ = ["epochs"]

T = TypeVar("T")


def epochs(epoch: Callable[[int], Iterable[T]]) -> Iterator[T]:
    """The batches of ``epoch(0)``, then ``epoch(1)``, … (the caller stops when its time is up);
    ends if an epoch yields nothing."""
    for k in itertools.count():
        empty = True
        for item in epoch(k):
            empty = False
            yield item
        if empty:
            return
