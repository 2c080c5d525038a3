"""numba's start-up, moved off the first batch."""

from __future__ import annotations

import importlib

import numba
import numpy as np
import pytest

from atlasprep._jit import warm_up
from atlasprep.tokenize._rank_kernels import ranked_lengths


def test_warm_up_finishes_and_kernels_run_after_it() -> None:
    thread = warm_up()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert thread.daemon  # never holds the process open
    lengths = np.empty(2, dtype=np.int64)
    indptr = np.array([0, 2, 3])
    ranked_lengths(
        indptr,
        np.array([0, 1, 1], np.int32),
        np.array([1, 0, 2], np.float32),
        np.array([False, True]),  # the first cell's total is 0: its stored zero is not ranked
        np.array([5, 6], np.int32),
        0,
        2,
        lengths,
    )
    assert lengths.tolist() == [1, 1]


@pytest.mark.parametrize(
    ("kernel", "args"),
    [
        ("atlasprep.sources.counts._tally_floats", (np.ones(64, np.float32), 0, 64)),
        ("atlasprep.sources.counts._tally_floats", (np.ones(64, np.float64), 0, 64)),
        (
            "atlasprep.tokenize.binning._padded",
            (np.arange(2), 4, np.array([0, 2, 4]), np.ones(4, np.float32)),
        ),
    ],
)
def test_streaming_loops_load_contiguous_vectors(kernel: str, args: tuple[object, ...]) -> None:
    """Loops over a run of values index views from 0: an index that may be negative (``data[i]``
    for ``i`` in ``range(start, stop)``) wraps around, and LLVM then loads with gathers (float32
    counts took 1.8x the time). Compiled afresh, as the on-disk cache keeps no IR."""
    module, name = kernel.rsplit(".", 1)
    fresh = numba.njit(nogil=True)(getattr(importlib.import_module(module), name).py_func)
    fresh(*args)
    ir = fresh.inspect_llvm(fresh.signatures[0])
    assert "vector" in ir  # it vectorized
    assert "masked.gather" not in ir
