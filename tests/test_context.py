from __future__ import annotations

import numpy as np

from atlasprep.tokenize.context import insert_context


def test_context_goes_after_cls_and_cells_stay_within_max_len():
    # cells: [cls a b c eos], [cls d eos]
    ids = np.array([2, 10, 11, 12, 3, 2, 13, 3], dtype=np.int32)
    offsets = np.array([0, 5, 8])
    context = np.array([[90, 91], [92, 93]])
    out, off, _ = insert_context(ids, offsets, context, at=1, max_len=6, keep_tail=1)
    cells = [out[off[i] : off[i + 1]].tolist() for i in range(2)]
    assert cells == [[2, 90, 91, 10, 11, 3], [2, 92, 93, 13, 3]]


def test_values_get_fill_and_no_special_tokens():
    ids = np.array([10, 11, 12], dtype=np.int32)
    values = np.array([5.0, 4.0, 3.0], dtype=np.float32)
    out, off, vals = insert_context(ids, np.array([0, 3]), np.array([[90]]), at=0, max_len=3, values=values)
    assert out.tolist() == [90, 10, 11]
    assert vals is not None
    assert vals.tolist() == [0.0, 5.0, 4.0]
    assert off.tolist() == [0, 3]
