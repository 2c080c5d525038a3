"""numba's first kernel call in a process loads its typing and lowering registries, about a
quarter of a second whichever kernel makes it. :func:`warm_up` makes that call in a background
thread, so that it overlaps the work before the first kernel is needed (opening a source,
reading obs) instead of delaying the first batch."""

from __future__ import annotations

import threading

import numba
import numpy as np

__all__ = ["warm_up"]


@numba.njit(cache=True, nogil=True)
def _first(values):  # type: ignore[no-untyped-def]  # pragma: no cover
    return values[0]


def warm_up() -> threading.Thread:
    """Start loading numba's registries in a daemon thread; kernels called meanwhile wait for it."""
    thread = threading.Thread(
        target=_first, args=(np.zeros(1, dtype=np.float64),), name="atlasprep-jit-warm-up", daemon=True
    )
    thread.start()
    return thread
