"""`atlasprep.loader`: every cell once per epoch on any ranks × workers, resumable, padded right."""

from __future__ import annotations

import collections
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader, IterableDataset, get_worker_info  # noqa: E402

from atlasprep.errors import InputFormatError, UsageError  # noqa: E402
from atlasprep.loader import ShardCollator, ShardDataset, ShardLoader, _plan, _window, dataset  # noqa: E402
from atlasprep.shard import read_manifest, read_shard  # noqa: E402
from atlasprep.sources import CellFilter, SourceSpec  # noqa: E402
from atlasprep.tokenize.api import TokenizeConfig, tokenize_cells  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LABEL = "cell_type_ontology_term_id"


@pytest.fixture(scope="module")
def stores(small_census, tmp_path_factory) -> dict[str, Path]:
    """Token stores of the small census: bin as Arrow and Zarr, rank as Arrow; 97-cell shards (uneven)."""
    base = tmp_path_factory.mktemp("loader")
    made = {}
    for name, scheme, fmt in [("arrow", "bin", "arrow"), ("zarr", "bin", "zarr"), ("rank", "rank", "arrow")]:
        config = TokenizeConfig(
            source=SourceSpec(census_uri=str(small_census), filter=CellFilter(primary_only=False)),
            out=base / name,
            scheme=scheme,
            max_len=256,
            shard_cells=97,
            split_by="donor_id",
            split=(0.8, 0.1, 0.1),
            format=fmt,
            seed=0,
        )
        tokenize_cells(config)
        made[name] = base / name
    return made


def _split_cells(store: Path, split: str = "train") -> dict[str, dict]:
    """cell_id -> that cell's row, read the plain way (read_shard)."""
    cells = {}
    for shard in read_manifest(store)["shards"]:
        if shard["split"] == split:
            for row in read_shard(store, shard["path"]).to_pylist():
                cells[row["cell_id"]] = row
    return cells


def _ids(batches) -> list[str]:
    return [cell for batch in batches for cell in batch["cell_id"]]


# -- planning (pure numpy) --------------------------------------------------------------------


@pytest.mark.parametrize("even", [None, "drop", "pad"])
@pytest.mark.parametrize(
    ("n", "world", "workers"), [(0, 2, 2), (5, 2, 3), (1174, 3, 2), (97, 4, 1), (10, 1, 1)]
)
def test_plan_ranges_cover_the_sequence(n, world, workers, even):
    sizes = [97] * (n // 97) + ([n % 97] if n % 97 else [])
    order = _plan.shard_order(len(sizes), seed=1, epoch=2, shuffle=True)
    # a cell's place in the epoch's sequence: where its shard begins there, plus its row
    begins = np.cumsum([0, *np.asarray(sizes, dtype=int)[order]])[np.argsort(order)]
    seen: list[int] = []
    per_rank = []
    for rank in range(world):
        cells = 0
        for worker in range(workers):
            consumer = _plan.Consumer(rank=rank, world_size=world, worker=worker, num_workers=workers)
            a, b = _plan.consumer_range(n, consumer, even=even)
            spans = _plan.spans_of(sizes, order, a, b)
            assert sum(s.n_cells for s in spans) == b - a
            seen += [int(begins[s.shard]) + i for s in spans for i in range(s.start, s.stop)]
            cells += b - a
        per_rank.append(cells)
    counts = collections.Counter(seen)
    if even is None:
        assert sorted(seen) == list(range(n))
    elif even == "drop":
        assert per_rank == [n // world] * world
        assert max(counts.values(), default=1) == 1
    else:
        assert per_rank == [math.ceil(n / world)] * world
        assert set(counts) == set(range(n))
        extra = world * math.ceil(n / world) - n  # repeated from the start, as DistributedSampler does
        assert sorted(c for c, k in counts.items() for _ in range(k - 1)) == [
            i % max(n, 1) for i in range(extra)
        ]


def test_emission_order_is_a_bounded_shuffle():
    order = _plan.emission_order(5000, buffer_size=64, seed=0, epoch=0, consumer=3)
    assert sorted(order.tolist()) == list(range(5000))
    assert np.abs(order - np.arange(5000)).max() <= 64
    assert not np.array_equal(order, np.arange(5000))
    again = _plan.emission_order(5000, buffer_size=64, seed=0, epoch=0, consumer=3)
    other = _plan.emission_order(5000, buffer_size=64, seed=0, epoch=1, consumer=3)
    assert np.array_equal(order, again)
    assert not np.array_equal(order, other)


class _Numbers(IterableDataset):
    """Worker w yields batches (w, k) for k < batches[w]: shows how a DataLoader interleaves them."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        worker = get_worker_info().id
        return iter([(worker, k) for k in range(self.batches[worker])])


@pytest.mark.parametrize("batches", [(3, 3), (3, 4), (1, 4)])
def test_resume_point_matches_how_a_dataloader_interleaves_workers(batches):
    loader = DataLoader(_Numbers(batches), batch_size=None, num_workers=2, collate_fn=lambda b: b)
    delivered = list(loader)
    batch_size = 10
    for d in range(len(delivered) + 1):
        point = _plan.resume_point([b * batch_size for b in batches], batch_size=batch_size, delivered=d)
        per_worker = collections.Counter(w for w, _ in delivered[:d])
        assert point.consumed == tuple(per_worker[w] * batch_size for w in range(2))
        if d:
            assert point.rotation == (delivered[d - 1][0] + 1) % 2


# -- exactly once -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["arrow", "zarr"])
@pytest.mark.parametrize("world_size", [1, 2])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_every_cell_of_the_split_exactly_once(stores, fmt, world_size, num_workers):
    store = stores[fmt]
    sizes = [s["n_cells"] for s in read_manifest(store)["shards"] if s["split"] == "train"]
    assert len(set(sizes)) > 1  # uneven shards, cut inside by the partition
    seen = []
    for rank in range(world_size):
        ds = ShardDataset(store, "train", rank=rank, world_size=world_size, batch_size=50, buffer_size=200)
        got = _ids(DataLoader(ds, batch_size=None, num_workers=num_workers))
        assert len(got) == sum(ds.worker_num_cells(num_workers))
        seen += got
    assert collections.Counter(seen) == collections.Counter(list(_split_cells(store)))


def test_single_cells_through_workers_with_the_collator(stores):
    ds = ShardDataset(stores["zarr"], "val", world_size=1, rank=0, columns=[LABEL])
    batches = list(DataLoader(ds, batch_size=16, num_workers=2, collate_fn=ds.collator()))
    assert sorted(_ids(batches)) == sorted(_split_cells(stores["zarr"], "val"))
    assert all(b["input_ids"].dtype == torch.int64 and b[LABEL].dtype == torch.int64 for b in batches)


def test_same_seed_and_epoch_same_order_other_epoch_other_order(stores):
    def order(epoch, seed=0):
        ds = ShardDataset(stores["arrow"], "train", seed=seed, batch_size=64, buffer_size=256)
        ds.set_epoch(epoch)
        return _ids(ds)

    first = order(0)
    assert first == order(0)
    assert first != order(1)
    assert first != order(0, seed=1)
    assert sorted(first) == sorted(order(1))
    unshuffled = _ids(ShardDataset(stores["arrow"], "train", shuffle=False, batch_size=64))
    in_store = list(_split_cells(stores["arrow"]))  # manifest order, then row order
    assert unshuffled == in_store


@pytest.mark.parametrize("even", ["drop", "pad"])
def test_even_gives_every_rank_the_same_number_of_batches(stores, even):
    world_size, n = 3, 1174  # 1174 = 3 × 391 + 1
    assert len(_split_cells(stores["arrow"])) == n
    per_rank, seen = [], []
    for rank in range(world_size):
        ds = ShardDataset(stores["arrow"], rank=rank, world_size=world_size, even=even, batch_size=40)
        batches = list(DataLoader(ds, batch_size=None, num_workers=2))
        per_rank.append(len(batches))
        assert len(batches) == ds.num_batches(40, num_workers=2)
        seen += _ids(batches)
    assert len(set(per_rank)) == 1
    counts = collections.Counter(seen)
    if even == "drop":
        assert len(seen) == world_size * (n // world_size) == len(counts)
    else:
        assert len(seen) == world_size * math.ceil(n / world_size)
        assert set(counts) == set(_split_cells(stores["arrow"]))
        assert sum(c - 1 for c in counts.values()) == 2


# -- resuming ---------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [None, 64])
@pytest.mark.parametrize("stop_after", [1, 5, 300])
def test_dataset_resumes_with_exactly_the_remaining_cells(stores, batch_size, stop_after):
    def make():
        ds = ShardDataset(stores["zarr"], seed=3, batch_size=batch_size, buffer_size=128)
        ds.set_epoch(2)
        return ds

    def ids(items):
        return [i["cell_id"] for i in items] if batch_size is None else _ids(items)

    full = ids(make())
    interrupted = make()
    iterator = iter(interrupted)
    head = ids(next(iterator) for _ in range(stop_after if batch_size is None else stop_after // 64 + 1))
    state = json.loads(json.dumps(interrupted.state_dict()))
    resumed = make()
    resumed.set_epoch(0)  # the state brings its epoch
    resumed.load_state_dict(state)
    assert resumed.state_dict()["consumed"] == len(head)
    assert head + ids(resumed) == full
    assert ids(resumed) == full  # the next pass is a whole epoch again


@pytest.mark.parametrize(("world_size", "batch_size", "num_workers"), [(1, 64, 2), (3, 65, 2), (1, 64, 0)])
def test_shard_loader_resumes_in_the_same_order(stores, world_size, batch_size, num_workers):
    def make():
        ds = ShardDataset(stores["arrow"], seed=5, rank=0, world_size=world_size, columns=[LABEL])
        loader = ShardLoader(ds, batch_size=batch_size, num_workers=num_workers)
        loader.set_epoch(1)
        return loader

    full = [b["cell_id"] for b in make()]
    assert len(full) == len(make())
    sizes = make().dataset.worker_num_cells(num_workers)
    if world_size == 3:  # 195 and 196 cells: 3 and 4 batches, so a worker runs out first
        assert [-(-n // batch_size) for n in sizes] == [3, 4]
    for stop in sorted({1, 2, 3, len(full) - 2, len(full) - 1}):
        loader = make()
        iterator = iter(loader)
        head = [next(iterator)["cell_id"] for _ in range(stop)]
        state = json.loads(json.dumps(loader.state_dict()))
        del iterator
        resumed = make()
        resumed.set_epoch(0)
        resumed.load_state_dict(state)
        rest = [b["cell_id"] for b in resumed]
        assert head + rest == full, stop
        assert resumed.state_dict()["batches"] == len(full)


def test_resume_refuses_a_different_configuration(stores):
    loader = ShardLoader(ShardDataset(stores["arrow"], seed=1), batch_size=32)
    state = loader.state_dict()
    with pytest.raises(UsageError, match="seed"):
        ShardLoader(ShardDataset(stores["arrow"], seed=2), batch_size=32).load_state_dict(state)
    with pytest.raises(UsageError, match="batch_size"):
        ShardLoader(ShardDataset(stores["arrow"], seed=1), batch_size=16).load_state_dict(state)


# -- batches ----------------------------------------------------------------------------------


def _reference(cells, width, pad_id):
    """Per-cell padding, the obvious way."""
    ids = np.full((len(cells), width), pad_id, dtype=np.int64)
    values = np.zeros((len(cells), width), dtype=np.float32)
    mask = np.zeros((len(cells), width), dtype=bool)
    for i, cell in enumerate(cells):
        n = min(len(cell["input_ids"]), width)
        ids[i, :n] = cell["input_ids"][:n]
        if "values" in cell:
            values[i, :n] = cell["values"][:n]
        mask[i, :n] = True
    return ids, values, mask


@pytest.mark.parametrize("fmt", ["arrow", "zarr", "rank"])
@pytest.mark.parametrize("pad_to", [None, 100, 300])
def test_batches_pad_mask_values_and_labels_like_a_per_cell_reference(stores, fmt, pad_to):
    store = stores[fmt]
    options = {"shuffle": False, "columns": [LABEL, "donor_id"], "pad_to": pad_to}
    single = ShardDataset(store, **options)
    cells = [cell for _, cell in zip(range(40), single, strict=False)]
    batch = next(iter(ShardDataset(store, batch_size=40, **options)))
    collated = single.collator()(cells)
    rows = _split_cells(store)
    assert batch["cell_id"] == collated["cell_id"] == [c["cell_id"] for c in cells]
    for cell in cells:  # single cells are the stored rows
        assert cell["input_ids"].tolist() == rows[cell["cell_id"]]["input_ids"]
        assert cell[LABEL] == rows[cell["cell_id"]][LABEL]
    width = pad_to or max(len(c["input_ids"]) for c in cells)
    ids, values, mask = _reference(cells, width, single.pad_id)
    for out in (batch, collated):
        assert torch.equal(out["input_ids"], torch.from_numpy(ids))
        assert out["attention_mask"].dtype == torch.bool
        assert torch.equal(out["attention_mask"], torch.from_numpy(mask))
        assert ("values" in out) == (fmt != "rank")
        if fmt != "rank":
            assert out["values"].dtype == torch.float32
            assert torch.equal(out["values"], torch.from_numpy(values))
        for column in (LABEL, "donor_id"):
            labels = single.label_maps[column]
            assert labels == sorted(labels)
            assert [labels[i] for i in out[column].tolist()] == [c[column] for c in cells]
    if pad_to is not None:
        assert batch["input_ids"].shape == (40, pad_to)


def test_label_maps_cover_the_whole_split_and_agree_across_workers(stores):
    ds = ShardDataset(stores["arrow"], columns=[LABEL], batch_size=30)
    rows = _split_cells(stores["arrow"])
    assert ds.label_maps[LABEL] == sorted({r[LABEL] for r in rows.values()})
    for batch in DataLoader(ds, batch_size=None, num_workers=2):
        decoded = [ds.label_maps[LABEL][i] for i in batch[LABEL].tolist()]
        assert decoded == [rows[c][LABEL] for c in batch["cell_id"]]


def test_collator_needs_label_maps_for_its_columns():
    with pytest.raises(UsageError, match="label_maps"):
        ShardCollator(columns=(LABEL,))
    collate = ShardCollator(pad_id=0, columns=(LABEL,), label_maps={LABEL: ["a", "b"]})
    batch = collate([{"input_ids": np.array([5, 6]), LABEL: "b"}, {"input_ids": np.array([7]), LABEL: "a"}])
    assert batch["input_ids"].tolist() == [[5, 6], [7, 0]]
    assert batch[LABEL].tolist() == [1, 0]
    with pytest.raises(InputFormatError, match="not in the label map"):
        collate([{"input_ids": np.array([5]), LABEL: "c"}])


def test_memory_holds_the_shuffle_buffer_not_the_shard(stores, monkeypatch):
    monkeypatch.setattr(dataset, "_PIECE_CELLS", 16)
    held = []
    original = _window.Window.ensure

    def ensure(self, last):
        original(self, last)
        held.append(sum(p.n for p in self._pieces))

    monkeypatch.setattr(_window.Window, "ensure", ensure)
    ds = ShardDataset(stores["arrow"], buffer_size=64, batch_size=8)
    assert len(_ids(ds)) == ds.num_cells
    assert max(held) <= 64 + 2 * 8 + 2 * 16


def test_unknown_split_or_column_is_a_clean_error(stores):
    with pytest.raises(UsageError, match="no split 'nope'"):
        ShardDataset(stores["arrow"], "nope")
    with pytest.raises(InputFormatError, match="no column"):
        ShardDataset(stores["arrow"], columns=["nope"])
    with pytest.raises(UsageError, match="rank"):
        ShardDataset(stores["arrow"], rank=2, world_size=2)


# -- other readers, the example ---------------------------------------------------------------


def test_arrow_shards_open_with_huggingface_datasets(stores):
    datasets = pytest.importorskip("datasets")
    store = stores["arrow"]
    shard = read_manifest(store)["shards"][0]["path"]
    hf = datasets.Dataset.from_file(str(store / shard))
    table = read_shard(store, shard)
    assert hf.num_rows == table.num_rows
    assert hf["input_ids"][:] == table["input_ids"].to_pylist()
    assert hf["cell_id"][:] == table["cell_id"].to_pylist()


def test_the_training_example_runs_and_its_loss_is_finite(stores, capsys):
    spec = importlib.util.spec_from_file_location(
        "train_masked_gene", ROOT / "examples" / "train_masked_gene.py"
    )
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    argv = ["--store", str(stores["rank"]), "--steps", "4", "--batch-size", "8", "--d-model", "16"]
    assert example.main([*argv, "--layers", "1", "--max-len", "64", "--seed", "0", "--num-workers", "0"]) == 0
    losses = [
        float(line.split()[3]) for line in capsys.readouterr().out.splitlines() if line.startswith("step")
    ]
    assert len(losses) == 4
    assert all(math.isfinite(v) for v in losses)


@pytest.mark.parametrize("pad_to", [None, 5, 40])
@pytest.mark.parametrize("id_dtype", [np.int32, np.uint16, np.int64])
@pytest.mark.parametrize("overrun", [False, True])
def test_the_padding_kernel_gives_pad_parts_batch(pad_to, id_dtype, overrun):
    from atlasprep.loader._pad import pad_batch
    from atlasprep.tokenize.padding import RaggedRows, pad_parts

    rng = np.random.default_rng(7)
    n_rows, parts = 30, []
    rows = rng.permutation(n_rows)[:26]  # 4 rows in no part: padding
    for k, these in enumerate(np.array_split(rows, 4)):
        lengths = rng.integers(0, 30, len(these))
        lengths[0] = 0  # an empty cell
        flat = rng.integers(1, 60_000, int(lengths.sum()) + 3).astype(id_dtype)
        values = rng.random(len(flat)) if k != 2 else None  # float64 values, and a part without
        starts = np.cumsum(lengths) - lengths + 1
        if overrun:  # the last cell runs past the buffer's end: its last value repeats (clipped)
            starts[-1] = len(flat) - 2
            lengths[-1] = 9
        parts.append(RaggedRows(rows=these, starts=starts, lengths=lengths, ids=flat, values=values))
    parts.append(RaggedRows(rows=np.zeros(0, np.int64), starts=np.zeros(0, np.int64),
                            lengths=np.zeros(0, np.int64), ids=np.zeros(0, id_dtype)))  # fmt: skip
    labels = {"a": np.arange(n_rows)}
    expected = pad_parts(
        parts, n_rows=n_rows, pad_id=3, pad_to=pad_to, labels=labels, cell_ids=list("x" * n_rows)
    )
    got = pad_batch(parts, n_rows=n_rows, pad_id=3, pad_to=pad_to, labels=labels, cell_ids=list("x" * n_rows))
    assert list(got) == list(expected)
    for key, value in expected.items():
        if isinstance(value, np.ndarray):
            assert got[key].dtype == value.dtype, key
            assert got[key].shape == value.shape, key
            assert np.array_equal(got[key], value), key
        else:
            assert got[key] == value
