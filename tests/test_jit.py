"""numba's start-up, moved off the first batch."""

from __future__ import annotations

import numpy as np

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
