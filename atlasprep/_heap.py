"""glibc's malloc and the large, short-lived buffers of a streamed read.

glibc serves an allocation of at least ``M_MMAP_THRESHOLD`` bytes with its own ``mmap``, which
goes back to the system when freed; but the threshold is dynamic: each time such a block is
freed, it rises to that block's size (up to 32 MiB). After the first batch, TileDB's read
buffers and the numpy arrays of a batch (a few MiB to tens of MiB each) then come from the
heaps of the threads that made them, and freed memory there stays in the process: a slice of
43,588 demo cells peaked at 795 MB with 8 MiB TileDB buffers, 571 MB with a fixed threshold.
:func:`map_large_allocations` fixes the threshold (which also turns off its adjustment), so
that every buffer of 256 KiB or more is returned when it is freed.
"""

from __future__ import annotations

import ctypes
import functools
import sys

__all__ = ["MMAP_THRESHOLD", "map_large_allocations"]

MMAP_THRESHOLD = 256 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt's parameter, glibc's malloc.h


@functools.cache
def map_large_allocations() -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD` for this process (once); False
    where the C library is not glibc's (then nothing changes)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl's mallopt does nothing
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
