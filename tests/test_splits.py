from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasprep.errors import UsageError
from atlasprep.tokenize.splits import SplitLeakError, assign_splits


@settings(max_examples=60, deadline=None)
@given(n_groups=st.integers(1, 60), seed=st.integers(0, 1000), data=st.data())
def test_whole_groups_deterministic_and_near_the_fractions(n_groups, seed, data):
    sizes = data.draw(st.lists(st.integers(1, 50), min_size=n_groups, max_size=n_groups))
    labels = pd.Series(np.repeat([f"donor{i}" for i in range(n_groups)], sizes))
    plan = assign_splits(labels, column="donor_id", seed=seed)
    again = assign_splits(labels, column="donor_id", seed=seed)
    assert plan.groups == again.groups
    assert set(plan.groups) == set(labels)
    splits = labels.map(plan.groups).to_numpy()
    plan.check(labels, splits)  # no leak
    assert sum(plan.n_cells.values()) == len(labels)
    # greedy by deficit: no split ends more than one group's cells away from its target
    for name, fraction in zip(("train", "val", "test"), (0.8, 0.1, 0.1), strict=True):
        assert abs(plan.n_cells[name] - fraction * len(labels)) <= max(sizes)


def test_holdouts_go_to_test_and_unknown_holdout_is_refused():
    labels = pd.Series(["liver"] * 10 + ["lung"] * 30 + ["blood"] * 60)
    plan = assign_splits(labels, column="tissue", holdout=["liver"], fractions=(0.9, 0.1, 0.0))
    assert plan.groups["liver"] == "test"
    assert plan.groups_in("test") == ["liver"]
    with pytest.raises(UsageError, match="no cell has"):
        assign_splits(labels, column="tissue", holdout=["kidney"])
    with pytest.raises(UsageError, match="sum to 1"):
        assign_splits(labels, column="tissue", fractions=(0.5, 0.2, 0.2))


def test_a_leak_is_caught():
    labels = pd.Series(["a", "a", "b"])
    plan = assign_splits(labels, column="donor_id")
    with pytest.raises(SplitLeakError):
        plan.check(labels, np.array(["train", "test", "train"]))


def test_seed_changes_the_plan():
    labels = pd.Series(np.repeat([f"d{i}" for i in range(40)], 5))
    plans = {
        tuple(sorted(assign_splits(labels, column="donor_id", seed=s).groups_in("test"))) for s in range(5)
    }
    assert len(plans) > 1
