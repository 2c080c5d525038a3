from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasprep.tokenize import raw_encode


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), max_len=st.integers(1, 40))
def test_matches_a_per_cell_reference(seed, max_len):
    rng = np.random.default_rng(seed)
    dense = rng.integers(0, 6, (25, 30)) * (rng.random((25, 30)) < 0.5)
    tokens = np.where(rng.random(30) < 0.8, np.arange(30) + 100, -1).astype(np.int32)
    got = raw_encode(sp.csr_matrix(dense.astype(np.float32)), tokens, max_len=max_len)
    for i, row in enumerate(dense):
        total = row.sum()
        cols = [c for c in range(30) if row[c] and tokens[c] >= 0]
        vals = [np.log1p(row[c] / total * 10_000) for c in cols]
        order = sorted(range(len(cols)), key=lambda j: (-vals[j], j))[:max_len]
        s, e = got.offsets[i], got.offsets[i + 1]
        assert got.input_ids[s:e].tolist() == [int(tokens[cols[j]]) for j in order]
        assert np.allclose(got.values[s:e], [vals[j] for j in order])
