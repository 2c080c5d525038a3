from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasprep.sources import sample_positions


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 400),
    n_groups=st.integers(1, 7),
    per_group=st.integers(1, 50),
    seed=st.integers(0, 2**16),
)
def test_per_group_caps_each_group_and_keeps_small_groups_whole(n, n_groups, per_group, seed):
    rng = np.random.default_rng(seed)
    positions = np.sort(rng.choice(10_000, size=n, replace=False)).astype(np.int64)
    groups = rng.integers(0, n_groups, size=n).astype(str)
    chosen = sample_positions(positions, groups=groups, per_group=per_group, seed=seed)
    assert np.all(np.diff(chosen) > 0)
    assert set(chosen) <= set(positions)
    by_group = pd.Series(groups, index=positions)
    got = by_group.loc[chosen].value_counts()
    want = by_group.value_counts().clip(upper=per_group)
    assert got.sort_index().equals(want.sort_index())


def test_same_seed_same_cells_other_seed_other_cells():
    positions = np.arange(0, 50_000, 3, dtype=np.int64)
    a = sample_positions(positions, max_cells=1_000, seed=7)
    b = sample_positions(positions, max_cells=1_000, seed=7)
    c = sample_positions(positions, max_cells=1_000, seed=8)
    assert len(a) == 1_000
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_max_cells_after_per_group_and_no_op_when_small():
    positions = np.arange(100, dtype=np.int64)
    groups = np.repeat(["a", "b"], 50)
    both = sample_positions(positions, groups=groups, per_group=30, max_cells=40, seed=1)
    assert len(both) == 40
    assert np.array_equal(sample_positions(positions, max_cells=1_000, seed=1), positions)


def test_missing_group_labels_form_their_own_group():
    positions = np.arange(6, dtype=np.int64)
    groups = pd.Series(["a", None, None, "a", None, "b"])
    chosen = sample_positions(positions, groups=groups, per_group=1, seed=0)
    assert len(chosen) == 3
