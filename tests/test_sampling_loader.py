"""Loader sampling: balanced draws (by a label, or rolled up the ontology), hard-negative batches;
deterministic under (seed, epoch), split across ranks × workers, resumable."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from atlasprep.errors import UsageError  # noqa: E402
from atlasprep.loader import ShardDataset, ShardLoader  # noqa: E402
from atlasprep.loader.sampling import roll_up  # noqa: E402
from atlasprep.ontology import tissue_general  # noqa: E402
from atlasprep.sources import CellFilter, SourceSpec  # noqa: E402
from atlasprep.tokenize.api import TokenizeConfig, tokenize_cells  # noqa: E402

CELL_TYPE = "cell_type_ontology_term_id"
TISSUE = "tissue_ontology_term_id"


@pytest.fixture(scope="module")
def stores(small_census, tmp_path_factory) -> dict[str, Path]:
    """The small demo atlas, every cell in one split, as Arrow and Zarr (uneven 170-cell shards)."""
    base = tmp_path_factory.mktemp("sampling")
    made = {}
    for fmt in ("arrow", "zarr"):
        config = TokenizeConfig(
            source=SourceSpec(census_uri=str(small_census), filter=CellFilter(primary_only=False)),
            out=base / fmt,
            scheme="bin",
            max_len=32,
            shard_cells=170,
            format=fmt,
        )
        tokenize_cells(config)
        made[fmt] = base / fmt
    return made


def _labels(loader: ShardLoader, column: str) -> list[str]:
    names = loader.dataset.label_maps[column]
    return [names[i] for batch in loader for i in batch[column].tolist()]


def _ids(loader: ShardLoader) -> list[str]:
    return [cell for batch in loader for cell in batch["cell_id"]]


def _shares(values: list[str]) -> np.ndarray:
    counts = np.array(sorted(collections.Counter(values).values()), dtype=np.float64)
    return counts / counts.sum() * len(counts)  # 1.0 is a uniform label's share


def test_balanced_draws_each_cell_type_equally_often(stores):
    n = 40_000
    ds = ShardDataset(stores["arrow"], sampling="balanced:cell_type", columns=[CELL_TYPE], num_samples=n)
    drawn = _labels(ShardLoader(ds, batch_size=512), CELL_TYPE)
    assert len(drawn) == n
    shares = _shares(drawn)
    assert len(shares) == len(ds.label_maps[CELL_TYPE])
    assert np.abs(shares - 1).max() < 0.12  # each type within a few percent of 1/L (binomial noise)
    assert np.abs(shares - 1).mean() < 0.04
    uniform = _shares(
        _labels(ShardLoader(ShardDataset(stores["arrow"], columns=[CELL_TYPE]), batch_size=512), CELL_TYPE)
    )
    assert uniform.max() / uniform.min() > 5  # what balancing undoes: the atlas is far from uniform
    assert ds.sampler.draws is not None
    assert ds.sampler.draws.codes.dtype == np.uint16  # two bytes a cell


def test_balanced_at_a_rollup_level(stores):
    ds = ShardDataset(
        stores["arrow"], sampling="balanced:cell_type@cell_class", columns=[CELL_TYPE], num_samples=30_000
    )
    drawn = _labels(ShardLoader(ds, batch_size=512), CELL_TYPE)
    classes = roll_up(sorted(set(drawn)), "cell_class")
    shares = _shares([classes[t] for t in drawn])
    assert len(shares) < len(set(drawn))  # subtypes share their class's weight
    assert np.abs(shares - 1).max() < 0.12
    with pytest.raises(UsageError, match="level 'kingdom'"):
        ShardDataset(stores["arrow"], sampling="balanced:cell_type@kingdom")


def test_hard_negative_batches_hold_one_cell_type_from_several_tissues(stores):
    ds = ShardDataset(
        stores["zarr"], batches="hard_negatives:cell_type/tissue_general", columns=[CELL_TYPE, TISSUE]
    )
    loader = ShardLoader(ds, batch_size=16)
    cells = _cells_by_id(stores["zarr"])
    general = tissue_general(sorted({c[TISSUE] for c in cells.values()}))
    spread: dict[str, set[str]] = collections.defaultdict(set)
    for cell in cells.values():
        spread[cell[CELL_TYPE]].add(general[cell[TISSUE]])
    n_batches = 0
    for batch in loader:
        n_batches += 1
        (cell_type,) = {cells[c][CELL_TYPE] for c in batch["cell_id"]}
        tissues = {general[cells[c][TISSUE]] for c in batch["cell_id"]}
        assert len(tissues) == min(len(spread[cell_type]), 16)
        assert len(spread[cell_type]) >= 2  # anchors are drawn among types seen in several tissues
    assert n_batches == len(loader) == ds.num_cells // 16


def _cells_by_id(store: Path) -> dict[str, dict]:
    from atlasprep.shard import read_manifest, read_shard

    rows = {}
    for shard in read_manifest(store)["shards"]:
        for row in read_shard(store, shard["path"]).select(["cell_id", CELL_TYPE, TISSUE]).to_pylist():
            rows[row["cell_id"]] = row
    return rows


def test_uniform_is_still_every_cell_exactly_once(stores):
    seen = []
    for rank in range(2):
        ds = ShardDataset(stores["arrow"], sampling="uniform", rank=rank, world_size=2)
        seen += _ids(ShardLoader(ds, batch_size=64, num_workers=2))
    assert sorted(seen) == sorted(_cells_by_id(stores["arrow"]))


@pytest.mark.parametrize("fmt", ["arrow", "zarr"])
def test_draws_are_fixed_by_seed_and_epoch_whatever_the_ranks_and_workers(stores, fmt):
    def epoch_cells(epoch: int, world: int, workers: int, store: Path = stores[fmt]) -> collections.Counter:
        drawn: collections.Counter = collections.Counter()
        for rank in range(world):
            ds = ShardDataset(
                store, sampling="balanced:cell_type", rank=rank, world_size=world, num_samples=3_000
            )
            loader = ShardLoader(ds, batch_size=100, num_workers=workers)
            loader.set_epoch(epoch)
            ids = _ids(loader)
            assert len(ids) == sum(ds.worker_num_cells(workers))
            drawn.update(ids)
        return drawn

    one = epoch_cells(0, 1, 0)
    assert sum(one.values()) == 3_000
    assert epoch_cells(0, 2, 2) == one  # the same draws, however divided
    assert epoch_cells(1, 1, 0) != one  # a new epoch draws anew
    if fmt == "zarr":  # the same cells in the same shards: the same draws as the Arrow store
        assert epoch_cells(0, 1, 0, stores["arrow"]) == one


@pytest.mark.parametrize(
    "options",
    [
        {"sampling": "balanced:cell_type", "num_samples": 2_000},
        {"batches": "hard_negatives:cell_type/tissue_general"},
    ],
    ids=["balanced", "hard_negatives"],
)
def test_resume_under_sampling_yields_the_uninterrupted_sequence(stores, options):
    def loader() -> ShardLoader:
        ds = ShardDataset(stores["arrow"], seed=7, **options)
        made = ShardLoader(ds, batch_size=32, num_workers=2)
        made.set_epoch(3)
        return made

    whole = [batch["cell_id"] for batch in loader()]
    first = loader()
    head = []
    for batch in first:
        head.append(batch["cell_id"])
        if len(head) == 11:
            break
    state = first.state_dict()
    assert state["sampling"] == options.get("sampling", "uniform")
    assert state["labels"]
    resumed = loader()
    resumed.load_state_dict(state)
    assert head + [batch["cell_id"] for batch in resumed] == whole
    plain = ShardLoader(ShardDataset(stores["arrow"], seed=7), batch_size=32, num_workers=2)
    with pytest.raises(UsageError, match="differently configured"):
        plain.load_state_dict(state)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sampling": "balanced:"}, "choose 'uniform'"),
        ({"sampling": "weighted:cell_type"}, "choose 'uniform'"),
        ({"sampling": "balanced:nope"}, "'nope': the store holds no such column"),
        ({"num_samples": 10}, "num_samples = 10"),
        ({"sampling": "balanced:cell_type", "num_samples": 0}, "num_samples = 0"),
        ({"batches": "hard_negatives:cell_type"}, "hard_negatives:ANCHOR/SPREAD"),
        ({"batches": "hard_negatives:a/b", "sampling": "balanced:cell_type"}, "leave sampling = 'uniform'"),
    ],
)
def test_bad_sampling_is_refused(stores, options, message):
    with pytest.raises(UsageError, match=message):
        ShardDataset(stores["arrow"], **options)


def test_hard_negatives_need_a_batch_size(stores):
    ds = ShardDataset(stores["arrow"], batches="hard_negatives:cell_type/tissue_general")
    with pytest.raises(UsageError, match="give batch_size"):
        next(iter(ds))


def test_hard_negative_batches_do_not_depend_on_the_read_window(stores):
    def batches(buffer_size: int) -> list[list[str]]:
        ds = ShardDataset(
            stores["zarr"], buffer_size=buffer_size, batches="hard_negatives:cell_type/tissue_general"
        )
        return [batch["cell_id"] for batch in ShardLoader(ds, batch_size=16)]

    assert batches(16) == batches(8192)
