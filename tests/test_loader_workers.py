"""`ShardLoader` with DataLoader workers: workers persist across epochs and send batches through
reused shared-memory slots, with the same batches, exactly-once and resume guarantees."""

from __future__ import annotations

import functools
import gc
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader  # noqa: E402

from atlasprep.loader import ShardDataset, ShardLoader, _pad, _shipping, dataloader  # noqa: E402
from atlasprep.sources import CellFilter, SourceSpec  # noqa: E402
from atlasprep.tokenize.api import TokenizeConfig, tokenize_cells  # noqa: E402

LABEL = "cell_type_ontology_term_id"


@pytest.fixture(scope="module")
def store(small_census, tmp_path_factory) -> Path:
    """A bin (values) Arrow store of the small census, 97-cell shards."""
    out = tmp_path_factory.mktemp("workers") / "store"
    tokenize_cells(
        TokenizeConfig(
            source=SourceSpec(census_uri=str(small_census), filter=CellFilter(primary_only=False)),
            out=out,
            scheme="bin",
            max_len=256,
            shard_cells=97,
            format="arrow",
            seed=0,
        )
    )
    return out


def _note_pid(path: Path, worker_id: int) -> None:
    with path.open("a") as out:
        out.write(f"{os.getpid()}\n")


def _loader(store: Path, num_workers: int = 2, **kwargs) -> ShardLoader:
    dataset = ShardDataset(store, seed=3, columns=[LABEL])
    return ShardLoader(dataset, batch_size=50, num_workers=num_workers, **kwargs)


def _plain(batches) -> list[dict]:
    """Batches as plain numpy/lists (copied: nothing keeps a slot)."""
    return [
        {k: v.numpy().copy() if isinstance(v, torch.Tensor) else v for k, v in b.items()} for b in batches
    ]


def _reference(dataset, epoch: int, batch_size: int, num_workers: int = 2) -> list[dict]:
    """The epoch as a plain DataLoader gives it, fresh workers each time (what ShardLoader did
    before its workers persisted)."""
    twin = dataset.batched(batch_size)
    twin.set_epoch(epoch)
    loader = DataLoader(twin, batch_size=None, num_workers=num_workers, collate_fn=_as_is)
    return _plain(loader)


def _as_is(batch):
    return batch


def _same(left: list[dict], right: list[dict]) -> None:
    assert len(left) == len(right)
    for a, b in zip(left, right, strict=True):
        assert list(a) == list(b)
        for key in a:
            if isinstance(a[key], np.ndarray):
                assert a[key].dtype == b[key].dtype, key
                assert np.array_equal(a[key], b[key]), key
            else:
                assert a[key] == b[key], key


def test_persistent_workers_give_the_batches_of_fresh_loaders(store, tmp_path):
    pids = tmp_path / "pids"
    loader = _loader(store, worker_init_fn=functools.partial(_note_pid, pids))
    seen = []
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        persistent = _plain(loader)
        _same(persistent, _reference(loader.dataset, epoch, 50))
        seen.append([c for b in persistent for c in b["cell_id"]])
        assert sorted(c for b in persistent for c in b["cell_id"]) == sorted(
            c for b in _plain(_loader(store, num_workers=0)) for c in b["cell_id"]
        )  # every cell once, as without workers
    assert seen[0] != seen[1]  # the epochs differ
    assert len(pids.read_text().split()) == 2  # two workers, started once for both epochs
    epochs = [[c for b in _plain(loader) for c in b["cell_id"]] for _ in range(2)]
    assert epochs[0] == epochs[1]  # no set_epoch: the same epoch again
    loader.close()


def test_resume_and_abandoned_epochs_on_the_same_workers(store):
    loader = _loader(store)
    full = {epoch: _reference(loader.dataset, epoch, 50) for epoch in (0, 1)}
    loader.set_epoch(1)
    iterator = iter(loader)
    head = _plain(next(iterator) for _ in range(3))
    state = json.loads(json.dumps(loader.state_dict()))
    loader.set_epoch(0)  # abandon epoch 1 mid-way: its batches in flight are dropped
    _same(_plain(loader), full[0])
    assert list(iterator) == []  # the abandoned iteration does not take the new one's batches
    loader.load_state_dict(state)
    _same(head + _plain(loader), full[1])
    loader.close()


def test_batches_come_through_slots_that_are_freed(store):
    loader = _loader(store)
    assert loader._slots is None  # made with the workers
    iterator = iter(loader)
    batch = next(iterator)
    slots = loader._slots
    assert slots is not None
    assert slots.busy.numpy().sum() >= 1  # this batch's slot (and those of batches in flight)
    assert batch["input_ids"].dtype == torch.int64
    assert batch["values"].dtype == torch.float32
    del batch
    rest = _plain(iterator)
    gc.collect()
    assert rest
    assert slots.busy.numpy().sum() == 0  # every slot free once its batch is gone
    loader.close()


def test_kept_batches_never_block_the_workers(store, monkeypatch):
    expected = _plain(_loader(store))
    kept = list(_loader(store))  # more batches than slots: the rest go torch's ordinary way
    _same(_plain(kept), expected)
    monkeypatch.setattr(dataloader, "slot_bytes", lambda dataset, batch_size: 64)  # no batch fits
    _same(_plain(_loader(store)), expected)
    padded = _plain(_loader(store, pad_to=256))
    monkeypatch.setattr(dataloader, "slot_bytes", lambda dataset, batch_size: 50 * 256 * 8 + 64)
    _same(_plain(_loader(store, pad_to=256)), padded)  # input_ids padded in the slot, the rest not


def test_discarded_batches_free_their_slots(store):
    loader = _loader(store)
    iterator = iter(loader)
    next(iterator)
    slots = loader._slots
    assert slots is not None
    loader.set_epoch(1)
    _plain(loader)  # the new epoch drops epoch 0's batches in flight unseen
    del iterator
    gc.collect()
    assert slots.busy.numpy().sum() == 0
    loader.close()


def test_a_full_batch_is_padded_into_its_slot(store):
    dataset = ShardDataset(store, columns=[LABEL]).batched(50, pad_to=256)
    slots = _shipping.Slots(1, 2, _shipping.slot_bytes(dataset, 50))
    slot = slots.reserve(0)
    assert slot is not None
    arena = slots.arena(0, slot)
    with _pad.building_in(arena):
        batch = next(iter(dataset))
    region = slots._regions()[0, slot]
    for key in ("input_ids", "attention_mask", "values"):
        assert np.shares_memory(batch[key].numpy(), region), key  # padded in place: no copy to send
    expected = _plain([batch])
    shipped = slots.ship(0, slot, batch, arena)
    assert isinstance(shipped, _shipping.Shipped)
    assert {f.key for f in shipped.fields} == {"input_ids", "attention_mask", "values", LABEL}
    received = pickle.loads(pickle.dumps(shipped))  # as the main process gets it
    del shipped, batch
    _same(_plain([received.take()]), expected)
    gc.collect()
    assert slots.busy.numpy().sum() == 0


def test_spawned_workers_share_the_slots(store):
    expected = _plain(_loader(store))
    loader = _loader(store, multiprocessing_context="spawn")
    _same(_plain(loader), expected)
    assert loader._slots is not None
    assert loader._slots.busy.numpy().sum() == 0
    loader.close()


def test_a_failed_worker_is_replaced_at_the_next_iteration(store, monkeypatch):
    original = ShardDataset._iterate

    def fails_in_epoch_1(self, consumer, skip):
        if self.epoch == 1:
            raise RuntimeError("broken shard")
        return original(self, consumer, skip)

    monkeypatch.setattr(ShardDataset, "_iterate", fails_in_epoch_1)
    loader = _loader(store)
    assert _plain(loader)
    loader.set_epoch(1)
    with pytest.raises(RuntimeError, match="broken shard"):
        _plain(loader)
    monkeypatch.setattr(ShardDataset, "_iterate", original)  # new workers see the mended class
    _same(_plain(loader), _reference(loader.dataset, 1, 50))
    loader.close()


def test_a_copy_of_a_loader_starts_its_own_workers(store):
    import copy

    loader = _loader(store)
    expected = _plain(loader)
    for twin in (pickle.loads(pickle.dumps(loader)), copy.deepcopy(loader)):
        assert twin._loader is None
        _same(_plain(twin), expected)
        twin.close()
    loader.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs an accelerator")
def test_pinned_batches_are_copies_and_free_their_slots(store):
    loader = _loader(store, pin_memory=True)
    batches = list(loader)
    assert all(b["input_ids"].is_pinned() for b in batches)
    _same(_plain(batches), _plain(_loader(store)))
    assert loader._slots is not None
    assert loader._slots.busy.numpy().sum() == 0  # pinned copies hold no slot
    loader.close()


def test_stream_datasets_keep_their_epochs_on_persistent_workers(store, small_census):
    from atlasprep.loader import StreamDataset

    spec = SourceSpec(census_uri=str(small_census), max_cells=300, seed=1)

    dataset = StreamDataset(spec, store, io_batch_size=100)
    loader = ShardLoader(dataset, batch_size=40, num_workers=2)
    epochs = []
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        epochs.append(_plain(loader))
        _same(epochs[-1], _reference(dataset, epoch, 40))
    assert [b["cell_id"] for b in epochs[0]] != [b["cell_id"] for b in epochs[1]]
    loader.close()


class _FreezeProbe:
    """A dataset whose worker reports how many objects the garbage collector has frozen."""

    def set_epoch(self, epoch: int) -> None:
        pass

    def _resume_at(self, resume: object) -> None:
        pass

    def __iter__(self):  # type: ignore[no-untyped-def]
        yield {"frozen": gc.get_freeze_count(), "pid": os.getpid()}


def test_a_worker_freezes_what_it_was_forked_with():
    """A full collection in a worker walks only the worker's own objects (the parent's, torch's
    among them, are frozen once the worker starts), and the parent's are left unfrozen."""
    before = gc.get_freeze_count()
    side = _shipping.WorkerSide(_FreezeProbe(), _shipping.WorkerControl(1), None)
    loader = DataLoader(side, batch_size=None, num_workers=1, collate_fn=lambda batch: batch)
    (reported,) = list(loader)
    assert reported["pid"] != os.getpid()
    assert reported["frozen"] > 10_000  # the modules and objects inherited from this process
    assert gc.get_freeze_count() == before  # this process: untouched
