from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasprep.errors import UsageError
from atlasprep.tokenize.split_groups import linked_components, sorted_codes
from atlasprep.tokenize.split_holdout import holdout_mask, parse_holdout, resolve_holdouts
from atlasprep.tokenize.split_stratify import composition_record, js_divergence, label_matrix
from atlasprep.tokenize.splits import SPLIT_NAMES, SplitLeakError, _aim, _greedy, assign_splits, plan_splits


@settings(max_examples=60, deadline=None)
@given(n_groups=st.integers(1, 60), seed=st.integers(0, 1000), data=st.data())
def test_whole_groups_deterministic_and_near_the_fractions(n_groups, seed, data):
    sizes = data.draw(st.lists(st.integers(1, 50), min_size=n_groups, max_size=n_groups))
    labels = pd.Series(np.repeat([f"donor{i}" for i in range(n_groups)], sizes))
    # a donor with more than train's share fits no split: accepted here, refused by default
    plan = assign_splits(labels, column="donor_id", seed=seed, fallback=True)
    again = assign_splits(labels, column="donor_id", seed=seed, fallback=True)
    assert plan.groups == again.groups
    assert set(plan.groups) == set(labels)
    splits = labels.map(plan.groups).to_numpy()
    plan.check(labels, splits)  # no leak
    assert sum(plan.n_cells.values()) == len(labels)
    # greedy by deficit: no split ends more than one group's cells away from its target, unless
    # a split it left empty took a group from another (each of two moves at most one group)
    for name, fraction in zip(("train", "val", "test"), (0.8, 0.1, 0.1), strict=True):
        assert abs(plan.n_cells[name] - fraction * len(labels)) <= 3 * max(sizes)
    if n_groups >= 3:  # enough groups: no split is left without cells
        assert all(n > 0 for n in plan.n_cells.values())


def test_holdouts_go_to_test_and_unknown_holdout_is_refused():
    labels = pd.Series(["liver"] * 10 + ["lung"] * 30 + ["blood"] * 60)
    plan = assign_splits(labels, column="tissue", holdout=["liver"], fractions=(1.0, 0.0, 0.0))
    assert plan.groups["liver"] == "test"
    assert plan.groups_in("test") == ["liver"]
    with pytest.raises(UsageError, match="no cell has"):
        assign_splits(labels, column="tissue", holdout=["kidney"])
    with pytest.raises(UsageError, match="sum to 1"):
        assign_splits(labels, column="tissue", fractions=(0.5, 0.2, 0.2))


def test_a_leak_is_caught():
    labels = pd.Series(["a", "a", "b"])
    plan = assign_splits(labels, column="donor_id", fractions=(0.7, 0.3, 0.0))
    with pytest.raises(SplitLeakError):
        plan.check(labels, np.array(["train", "test", "train"]))


def test_seed_changes_the_plan():
    labels = pd.Series(np.repeat([f"d{i}" for i in range(40)], 5))
    plans = {
        tuple(sorted(assign_splits(labels, column="donor_id", seed=s).groups_in("test"))) for s in range(5)
    }
    assert len(plans) > 1


# -- linked groups over several columns ---------------------------------------------------------


def _reference_components(frame: pd.DataFrame, columns: list[str]) -> list[frozenset[tuple[str, str]]]:
    """Connected components by plain union-find over (column, value) nodes: the reference."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(x: tuple[str, str]) -> tuple[str, str]:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for row in frame[columns].itertuples(index=False):
        nodes = [(c, str(v)) for c, v in zip(columns, row, strict=True)]
        for node in nodes[1:]:
            parent[find(node)] = find(nodes[0])
        find(nodes[0])
    groups: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for node in parent:
        groups.setdefault(find(node), set()).add(node)
    return sorted((frozenset(g) for g in groups.values()), key=sorted)


@settings(max_examples=40, deadline=None)
@given(
    n_cells=st.integers(1, 300),
    n_donors=st.integers(1, 30),
    n_datasets=st.integers(1, 8),
    seed=st.integers(0, 10_000),
)
def test_linked_groups_keep_every_donor_and_dataset_on_one_side(n_cells, n_donors, n_datasets, seed):
    rng = np.random.default_rng(seed)
    # most donors in one dataset, some sampled by a second lab: components larger than either
    home = rng.integers(0, n_datasets, n_donors)
    donor = rng.integers(0, n_donors, n_cells)
    away = rng.random(n_cells) < 0.1
    dataset = np.where(away, rng.integers(0, n_datasets, n_cells), home[donor])
    frame = pd.DataFrame({"donor_id": [f"D{d}" for d in donor], "dataset_id": [f"ds{d}" for d in dataset]})
    columns = ["donor_id", "dataset_id"]
    comps = linked_components(frame, columns)
    found = sorted(
        (frozenset((c, v) for c, vs in comps.members(k).items() for v in vs) for k in range(comps.n)),
        key=sorted,
    )
    assert found == _reference_components(frame, columns)
    plan = plan_splits(frame, columns=columns, seed=seed, fallback=True)
    assert plan.cell_splits is not None
    for column in columns:
        per_value = pd.DataFrame({"v": frame[column], "s": plan.cell_splits}).groupby("v")["s"].nunique()
        assert per_value.max() == 1, f"a {column} value is in two splits"
    plan.check(frame, plan.cell_splits)
    assert sum(plan.n_cells.values()) == n_cells
    assert plan.components is not None
    assert plan.components["n"] == comps.n


def test_one_column_is_the_old_assignment_and_seed_matters():
    labels = pd.Series(np.repeat([f"d{i:02d}" for i in range(30)], np.arange(1, 31)))
    plan = assign_splits(labels, column="donor_id", seed=3)
    linked = plan_splits(labels.to_frame("donor_id"), columns=["donor_id"], seed=3)
    assert dict(plan.groups) == dict(linked.groups)
    # the greedy deficit rule, replayed on groups in sorted order: the assignment stores were built with
    names = sorted(set(labels))
    sizes = labels.value_counts()
    cells = np.zeros(3)
    targets = np.array([0.8, 0.1, 0.1]) * len(labels)
    for i in np.random.default_rng(3).permutation(len(names)):
        split = int(np.argmax(targets - cells))
        assert plan.groups[names[i]] == ("train", "val", "test")[split]
        cells[split] += sizes[names[i]]


def test_a_component_too_large_is_named_or_recorded():
    # every donor is linked through the atlas dataset: one component holds all the cells
    frame = pd.DataFrame(
        {
            "donor_id": ["A", "A", "B", "B", "C", "C"] * 10,
            "dataset_id": ["lab1", "atlas", "lab2", "atlas", "lab3", "atlas"] * 10,
        }
    )
    with pytest.raises(
        UsageError,
        match=r"100\.0% of the cells \(donor_id in \{A, B, C\}.*too large for any split.*split_fallback",
    ):
        plan_splits(frame, columns=["donor_id", "dataset_id"])
    plan = plan_splits(frame, columns=["donor_id", "dataset_id"], fallback=True)
    assert plan.components == {"n": 1, "largest_share": 1.0, "largest": plan.components["largest"]}
    assert plan.unmet == ["train = 0.8: got 1", "val = 0.1: got 0", "test = 0.1: got 0"]
    # each column alone is fine
    assert not plan_splits(frame, columns=["donor_id"], fractions=(0.34, 0.33, 0.33)).unmet


def test_a_component_too_large_goes_to_train_and_every_fraction_is_listed():
    # donor A holds 63% of the cells: too large for any split of (0.5, 0.25, 0.25)
    frame = pd.DataFrame({"donor_id": ["A"] * 63 + [f"d{i}" for i in range(37)]})
    for seed in range(6):
        plan = plan_splits(frame, columns=["donor_id"], fractions=(0.5, 0.25, 0.25), seed=seed, fallback=True)
        assert plan.groups["A"] == "train"  # not val or test, whichever turn it came in
        shares = {s: plan.n_cells[s] / 100 for s in SPLIT_NAMES}
        targets = zip(SPLIT_NAMES, (0.5, 0.25, 0.25), strict=True)
        assert plan.unmet == [f"{s} = {t:g}: got {shares[s]:.3g}" for s, t in targets]


def test_a_requested_split_left_empty_is_an_error_unless_fallback():
    frame = pd.DataFrame({"donor_id": ["A"] * 50 + ["B"] * 50})
    with pytest.raises(
        UsageError,
        match=r"test would get no cells \(2 linked group\(s\) of donor_id.*set split_fallback to accept it",
    ):
        plan_splits(frame, columns=["donor_id"], fractions=(0.5, 0.25, 0.25))
    plan = plan_splits(frame, columns=["donor_id"], fractions=(0.5, 0.25, 0.25), fallback=True)
    assert len(plan.unmet) == 3
    assert not plan_splits(frame, columns=["donor_id"], fractions=(0.5, 0.5, 0.0)).unmet


def test_a_holdout_taking_every_cell_is_an_error_unless_fallback():
    frame = pd.DataFrame({"donor_id": [f"d{i % 10}" for i in range(100)]})
    held = np.ones(100, dtype=bool)
    with pytest.raises(
        UsageError, match=r"train and val would get no cells \(the holdout takes 100 of the 100"
    ):
        plan_splits(frame, columns=["donor_id"], held=held)
    plan = plan_splits(frame, columns=["donor_id"], held=held, fallback=True)
    assert plan.n_cells == {"train": 0, "val": 0, "test": 100}
    assert plan.unmet == ["train = 0.8: got 0", "val = 0.1: got 0", "test = 0.1: got 1"]


def test_a_holdout_larger_than_test_leaves_val_its_share_of_the_rest():
    # 40 cells held out (test's share is 10 of 100); the 60 others are 30 donors of 2 cells
    frame = pd.DataFrame({"donor_id": ["H"] * 40 + [f"d{i // 2}" for i in range(60)]})
    held = np.arange(100) < 40
    for seed in range(5):
        plan = plan_splits(frame, columns=["donor_id"], held=held, seed=seed)
        assert plan.n_cells["test"] == 40
        # val aims at 60 * 0.1 / 0.9 cells of the rest (it got none when aiming at 10 of 100)
        assert plan.n_cells["val"] in (6, 8)
        assert plan.n_cells["train"] == 60 - plan.n_cells["val"]
    # a holdout within test's share leaves the fractions as they are (the plans as they were)
    target, sizes = np.array([0.8, 0.1, 0.1]), np.array([6, 4, 90])
    assert _aim(target, np.array([2, -1, -1]), sizes) is target
    assert np.allclose(
        _aim(target, np.array([2, -1, -1]), np.array([40, 30, 30])), [0.6 * 8 / 9, 0.6 / 9, 0.4]
    )


# -- ontology holdouts ----------------------------------------------------------------------------

_LUNG, _LOWER_LEFT_LOBE, _LIVER = "UBERON:0002048", "UBERON:0008953", "UBERON:0002107"


def test_a_tissue_holdout_takes_its_descendants_and_exact_does_not():
    obs = pd.DataFrame({"tissue_ontology_term_id": [_LUNG, _LOWER_LEFT_LOBE, _LIVER, _LIVER]})
    (rule,) = resolve_holdouts(["tissue=lung"], ["donor_id"], exact=False)
    assert rule.column == "tissue_ontology_term_id"
    assert rule.term == _LUNG
    assert _LOWER_LEFT_LOBE in rule.values
    assert _LIVER not in rule.values
    held, records = holdout_mask(obs, [rule])
    assert held.tolist() == [True, True, False, False]
    assert records[0]["n_cells"] == 2
    assert records[0]["n_values"] == len(rule.values) > 100
    (exact,) = resolve_holdouts(["tissue=lung"], ["donor_id"], exact=True)
    assert holdout_mask(obs, [exact])[0].tolist() == [True, False, False, False]
    with pytest.raises(UsageError, match="no cell has that tissue_ontology_term_id"):
        holdout_mask(obs.iloc[2:], [rule])


def test_a_heart_region_holds_out_while_its_neighbours_train():
    # align ccf's column: the septum is held out, the ventricles beside it are not; FMA IDs
    # (a few CCF structures) match verbatim
    septum, left_ventricle, papillary = "UBERON:0002094", "UBERON:0002084", "FMA:7264"
    column = "anatomical_structure_ontology_term_id"
    obs = pd.DataFrame(
        {
            column: [septum, left_ventricle, papillary, septum, left_ventricle, papillary],
            "donor_id": ["d1", "d2", "d3", "d1", "d2", "d3"],
        }
    )
    (rule,) = resolve_holdouts([f"{column}={septum}"], ["donor_id"], exact=False)
    assert rule.term == septum
    assert left_ventricle not in rule.values
    held, _ = holdout_mask(obs, [rule])
    assert held.tolist() == [True, False, False, True, False, False]
    plan = plan_splits(obs, columns=["donor_id"], held=held, fractions=(0.5, 0.0, 0.5), seed=0)
    assert plan.groups["d1"] == "test"
    (fma,) = resolve_holdouts([f"{column}={papillary}"], ["donor_id"], exact=False)
    assert fma.values == (papillary,)


def test_bare_holdouts_need_one_split_column():
    assert parse_holdout("D1", ["donor_id"]) == ("donor_id", "D1")
    with pytest.raises(UsageError, match="name its column"):
        parse_holdout("D1", ["donor_id", "dataset_id"])


def test_holdout_takes_whole_components():
    frame = pd.DataFrame(
        {
            "donor_id": ["A", "A", "B", "C", "D"] * 4,
            "dataset_id": ["x", "y", "y", "z", "w"] * 4,
            "tissue_ontology_term_id": [_LOWER_LEFT_LOBE, _LIVER, _LIVER, _LIVER, _LIVER] * 4,
        }
    )
    held, _ = holdout_mask(frame, resolve_holdouts(["tissue=lung"], ["donor_id", "dataset_id"], exact=False))
    plan = plan_splits(frame, columns=["donor_id", "dataset_id"], held=held, fallback=True)
    # A's lung cells pull A, dataset y and so donor B into test; C and D do not touch them
    assert {plan.groups[f"donor_id={d}"] for d in "AB"} == {"test"}
    assert plan.groups["dataset_id=y"] == "test"


# -- stratified splits ----------------------------------------------------------------------------


def test_stratify_brings_each_split_closer_to_the_whole():
    rng = np.random.default_rng(0)
    rows = []
    for donor in range(60):  # each donor dominated by one of 6 cell types
        main = donor % 6
        n = int(rng.integers(20, 80))
        types = np.where(rng.random(n) < 0.8, main, rng.integers(0, 6, n))
        rows += [(f"d{donor}", f"CL:{t}") for t in types]
    frame = pd.DataFrame(rows, columns=["donor_id", "cell_type_ontology_term_id"])
    ones = np.arange(len(frame))
    codes, names = sorted_codes(frame["cell_type_ontology_term_id"])
    matrix = label_matrix(ones, codes, len(frame), len(names))

    def mean_divergence(plan) -> float:
        split_of = plan.cell_splits.astype(np.int64)
        record = composition_record("cell_type", matrix, split_of, names, SPLIT_NAMES)
        return float(np.mean([record["divergence"][s] for s in ("val", "test")]))

    plain = [mean_divergence(plan_splits(frame, columns=["donor_id"], seed=s)) for s in range(5)]
    strat = [
        plan_splits(frame, columns=["donor_id"], seed=s, stratify="cell_type_ontology_term_id")
        for s in range(5)
    ]
    assert np.mean([mean_divergence(p) for p in strat]) < 0.6 * np.mean(plain)
    record = strat[0].stratify
    assert record is not None
    assert set(record["composition"]) == set(SPLIT_NAMES)
    assert sum(sum(c.values()) for c in record["composition"].values()) == len(frame)
    for plan in strat:  # sizes stay near the fractions, and groups whole
        assert abs(plan.n_cells["train"] / len(frame) - 0.8) < 0.05
        plan.check(frame, plan.cell_splits)


def test_js_divergence():
    assert js_divergence(np.array([1, 2, 3]), np.array([2, 4, 6])) == pytest.approx(0.0)
    assert js_divergence(np.array([1, 0]), np.array([0, 1])) == pytest.approx(1.0)


def test_a_split_the_greedy_pass_leaves_empty_gets_a_group_when_there_are_enough():
    # six donors of uneven size: some seeds' greedy order leaves test (or val) without a donor
    sizes = {"A": 50, "B": 30, "C": 10, "D": 5, "E": 3, "F": 2}
    frame = pd.DataFrame({"donor_id": [d for d, n in sizes.items() for _ in range(n)]})
    comps = linked_components(frame, ["donor_id"])
    repaired = 0
    for seed in range(30):
        plan = plan_splits(frame, columns=["donor_id"], seed=seed)
        assert all(plan.n_cells[s] > 0 for s in SPLIT_NAMES), seed
        greedy = _greedy(comps.sizes, np.full(comps.n, -1), np.array([80.0, 10.0, 10.0]), seed=seed)
        placed = {d: SPLIT_NAMES[s] for d, s in zip(comps.values[0], greedy, strict=True)}
        if len(set(greedy)) == 3:  # the greedy plan had every split: kept as it was
            assert dict(plan.groups) == placed
        else:
            repaired += 1
            moved = [d for d in sizes if plan.groups[d] != placed[d]]
            assert len(moved) == 3 - len(set(greedy))  # a group moved to each empty split
    assert repaired > 0
