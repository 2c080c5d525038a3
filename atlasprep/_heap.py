"""glibc's malloc and the large, short-lived buffers of a streamed stage: two policies.

Every batch of a stage allocates the same few large buffers again (TileDB's read buffers, the
batch's CSR arrays, a tokenizer's sort arrays). glibc serves an allocation of at least
``M_MMAP_THRESHOLD`` bytes with its own ``mmap``, returned to the system when freed, so the next
batch's buffer is new memory and each of its pages faults in, zero-filled; smaller blocks come
from per-thread heaps that keep freed memory. The threshold is dynamic: it rises to the size of
each mapped block freed (up to 32 MiB), so after the first batch most buffers come from heaps.
What suits a stage depends on what it keeps:

* :func:`map_large_allocations` (``slice``): a fixed threshold twice the TileDB read buffer, so
  the read buffers are reused from the heap while a batch's arrays, larger, go back to the
  system when freed. A 43,588-cell slice (batch 4,096) peaked at 622–629 MB with glibc's
  dynamic threshold, 549–558 MB at 16 MiB, at the same speed and +16% page faults; at
  256 KiB, 518–527 MB but 2.5x the page faults and about 25% slower. With two reads in
  flight and 4 MiB read buffers (since), 16 MiB costs time: 572–608 MB against 604–655 MB, but
  4.2–4.9 s against 3.8–4.1 s and 1.5x the page faults (32 MiB: 684–687 MB; 8 MiB: no better).
* :func:`keep_allocations` (``tokenize``): one heap, nothing mapped or trimmed, so each batch
  reuses the pages of the one before: a 250,000-cell rank build made 1.1M page faults instead
  of 3.9–4.3M and took 18.7–19.3 s instead of 22.1–23.2 s, at 1.05–1.18 GB instead of
  1.13 GB peak. The process keeps its high-water mark until it exits.

Both change the whole process, so only the command line applies them, in a command's own
process before any library loads (``atlasprep tokenize`` and ``run``: the second; ``slice``: the
first); the library functions leave a caller's process as it is. ``ATLASPREP_MALLOC=system``
leaves glibc alone; elsewhere than glibc (musl, macOS) nothing changes.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from typing import Any

__all__ = ["MMAP_THRESHOLD", "keep_allocations", "map_large_allocations"]

MMAP_THRESHOLD = 16 * 1024 * 1024  # the largest TileDB read buffer, four times the default
# slice batch's (sources.base.read_buffer_bytes: 4 MiB for 4,096 cells)
# mallopt's parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -2, -3, -8
_GiB = 1024**3


@functools.cache
def _mallopt() -> Any:
    """glibc's mallopt, or None (not glibc, or ``ATLASPREP_MALLOC=system``)."""
    if not sys.platform.startswith("linux") or os.environ.get("ATLASPREP_MALLOC") == "system":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl's mallopt does nothing
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def map_large_allocations(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes (which also turns off its adjustment):
    blocks that large go back to the system when freed. False where nothing changed."""
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, int(threshold)))


def keep_allocations() -> bool:
    """One heap for every thread, no block mapped on its own (up to 1 GiB), nothing trimmed
    and 256 MiB of headroom: freed buffers serve the next batch's. False where nothing changed."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    settings = {
        _M_ARENA_MAX: 1,
        _M_MMAP_THRESHOLD: _GiB,
        _M_TRIM_THRESHOLD: 2 * _GiB - 1,
        _M_TOP_PAD: _GiB // 4,
    }
    applied = [bool(mallopt(parameter, value)) for parameter, value in settings.items()]  # each one
    return all(applied)
