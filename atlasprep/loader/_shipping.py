"""How :class:`~atlasprep.loader.ShardLoader` talks to persistent DataLoader workers.

* **Control** (:class:`WorkerControl`): the epoch and resume point sit in one small shared
  tensor that the main process writes before each iteration and each worker reads when its
  iterator is made (at its start, and again at every later epoch of a persistent
  ``DataLoader``), so workers start once, not once per epoch, and still follow ``set_epoch`` and
  ``load_state_dict``.
* **Slots** (:class:`Slots`): torch sends a tensor from a worker by copying it into a new
  shared-memory segment that the main process maps again: for a 256 × 2048 batch that costs
  the worker more than building the batch, and the main process pays page faults and unmaps.
  Instead each worker owns a few fixed regions of one shared segment made once, with a busy flag
  each: it pads a batch straight into a free slot (:class:`atlasprep.loader._pad.Arena`) and
  sends only the tensors' layout (and the small rest: ``cell_id``). The main process makes
  tensors that *view* the slot (no copy) and frees the slot when the last of them is gone (a
  finalizer), or at once if the batch is discarded unseen. When no slot is free (the caller
  keeps batches) or a batch does not fit, it goes torch's ordinary way: nothing ever waits on
  the caller.
"""

from __future__ import annotations

import gc
import itertools
import os
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from atlasprep.loader._pad import Arena, building_in
from atlasprep.loader._plan import ResumePoint

__all__ = ["Shipped", "Slots", "WorkerControl", "WorkerSide", "slot_bytes"]

_ALIGN = 64
_SHM_SHARE = 4  # slots take at most 1/_SHM_SHARE of the free shared memory
_SLOTS_CAP = 1 << 30
_TOKEN_BYTES = 8 + 1 + 4  # input_ids (int64), attention_mask (bool), values (float32)
_OPEN: weakref.WeakValueDictionary[int, Slots] = weakref.WeakValueDictionary()  # main process
_TOKENS = itertools.count()


class WorkerControl:
    """Epoch and resume point, shared with the workers: ``[epoch, resuming, rotation, consumed…]``."""

    def __init__(self, num_workers: int) -> None:
        self.num_workers = num_workers
        self.tensor = torch.zeros(3 + num_workers, dtype=torch.int64).share_memory_()

    def write(self, epoch: int, resume: ResumePoint | None) -> None:
        consumed = resume.consumed if resume is not None else (0,) * self.num_workers
        rotation = resume.rotation if resume is not None else 0
        values = [epoch, int(resume is not None), rotation, *consumed]
        self.tensor.copy_(torch.tensor(values, dtype=torch.int64))

    def read(self) -> tuple[int, ResumePoint | None]:
        epoch, resuming, rotation, *consumed = self.tensor.tolist()
        if not resuming:
            return epoch, None
        return epoch, ResumePoint(consumed=tuple(consumed), rotation=rotation)


@dataclass(frozen=True, slots=True)
class _Field:
    key: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


class Shipped:
    """A batch in a slot: where its tensors lie, and its other entries (sent pickled)."""

    __slots__ = ("__weakref__", "_armed", "fields", "keys", "rest", "slot", "token", "worker")

    def __init__(
        self,
        token: int,
        worker: int,
        slot: int,
        fields: tuple[_Field, ...],
        keys: tuple[str, ...],
        rest: dict[str, Any],
        armed: bool = False,
    ) -> None:
        self.token, self.worker, self.slot = token, worker, slot
        self.fields, self.keys, self.rest = fields, keys, rest
        self._armed = armed  # in the main process: frees its slot if dropped unseen

    def __reduce__(self) -> tuple[Any, ...]:
        return Shipped, (self.token, self.worker, self.slot, self.fields, self.keys, self.rest, True)

    def take(self) -> dict[str, Any]:
        """The batch, its tensors viewing the slot (freed when they are all gone)."""
        self._armed = False
        return _OPEN[self.token].take(self)

    def pin_memory(self) -> dict[str, Any]:
        """Pinned copies (the DataLoader's pin thread calls this); the slot is freed at once."""
        return {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in self.take().items()}

    def __del__(self) -> None:
        if self._armed:
            slots = _OPEN.get(self.token)
            if slots is not None:
                slots.free(self.worker, self.slot)


def _free(busy: np.ndarray, worker: int, slot: int) -> None:
    busy[worker, slot] = 0


class Slots:
    """``per_worker`` slots of ``size`` bytes for each of ``num_workers`` workers, in shared memory."""

    def __init__(self, num_workers: int, per_worker: int, size: int) -> None:
        self.token = next(_TOKENS) * 1_000_003 + os.getpid()
        self.shape = (num_workers, per_worker, size)
        storage = torch.UntypedStorage._new_shared(num_workers * per_worker * size)  # pages untouched
        self.memory = torch.empty(0, dtype=torch.uint8).set_(storage)
        self.busy = torch.zeros((num_workers, per_worker), dtype=torch.int8).share_memory_()
        _OPEN[self.token] = self

    @classmethod
    def sized(cls, num_workers: int, per_worker: int, size: int) -> Slots | None:
        """Slots within a quarter of the free shared memory (at least two a worker), else None."""
        try:
            stat = os.statvfs("/dev/shm")
        except OSError:
            return None
        budget = min(_SLOTS_CAP, stat.f_bavail * stat.f_frsize // _SHM_SHARE)
        per_worker = min(per_worker, budget // max(1, num_workers * size))
        return cls(num_workers, per_worker, size) if per_worker >= 2 else None

    def __getstate__(self) -> dict[str, Any]:
        return {"token": self.token, "shape": self.shape, "memory": self.memory, "busy": self.busy}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.token, self.shape = state["token"], state["shape"]
        self.memory, self.busy = state["memory"], state["busy"]

    def _regions(self) -> np.ndarray:
        return self.memory.numpy().reshape(self.shape)

    def reserve(self, worker: int) -> int | None:
        """In a worker: a free slot of its own, marked busy (None if all are busy)."""
        busy = self.busy.numpy()[worker]
        free = np.flatnonzero(busy == 0)
        if len(free) == 0:
            return None
        busy[free[0]] = 1
        return int(free[0])

    def arena(self, worker: int, slot: int) -> Arena:
        return Arena(self._regions()[worker, slot])

    def ship(self, worker: int, slot: int, batch: dict[str, Any], arena: Arena) -> Shipped | dict[str, Any]:
        """In a worker: the batch in its slot (tensors padded there stay, others are copied in),
        or, the slot freed, a copy of the batch if it does not fit."""
        base, fields = self._regions()[worker, slot].ctypes.data, []
        for key, value in batch.items():
            if not isinstance(value, torch.Tensor):
                continue
            array = value.numpy()
            offset = array.ctypes.data - base
            if not (0 <= offset <= self.shape[2] - array.nbytes and array.flags.c_contiguous):
                target = arena.empty(array.shape, array.dtype)
                if target is None:  # copied out first: torch pickles it after the slot is reused
                    self.free(worker, slot)
                    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                target[...] = array
                offset = target.ctypes.data - base
            fields.append(_Field(key, array.dtype.str, tuple(array.shape), offset, array.nbytes))
        rest = {k: v for k, v in batch.items() if not isinstance(v, torch.Tensor)}
        return Shipped(self.token, worker, slot, tuple(fields), tuple(batch), rest)

    def take(self, shipped: Shipped) -> dict[str, Any]:
        """In the main process: tensors that view the slot, which is freed once they are all gone."""
        owner = np.frombuffer(memoryview(self._regions()[shipped.worker, shipped.slot]), dtype=np.uint8)
        weakref.finalize(owner, _free, self.busy.numpy(), shipped.worker, shipped.slot).atexit = False
        tensors = {
            f.key: torch.from_numpy(owner[f.offset : f.offset + f.nbytes].view(f.dtype).reshape(f.shape))
            for f in shipped.fields
        }
        return {k: tensors[k] if k in tensors else shipped.rest[k] for k in shipped.keys}

    def free(self, worker: int, slot: int) -> None:
        _free(self.busy.numpy(), worker, slot)


def slot_bytes(dataset: Any, batch_size: int) -> int:
    """Bytes a batch of the dataset takes at most: ``pad_to`` or the tokenizer's ``max_len`` (+ a
    few special tokens) tokens a cell, and one int64 per label column; 2048 tokens if unknown."""
    tokenizer = getattr(dataset, "tokenizer", None)
    max_len = tokenizer.get("max_len") if isinstance(tokenizer, dict) else getattr(tokenizer, "max_len", None)
    width = getattr(dataset, "pad_to", None) or (int(max_len) + 8 if max_len else 2048)
    labels = len(getattr(dataset, "columns", ()))
    return batch_size * (width * _TOKEN_BYTES + 8 * labels) + _ALIGN * (4 + labels)


_FROZEN = False  # whether this worker process froze the objects it was forked with


def _freeze_inherited() -> None:
    """In a worker, once: the objects it was forked with (the parent's modules, its dataset)
    leave the garbage collector's view (``gc.freeze``), as Python's ``gc`` documentation advises
    for forked children. A full collection then walks only the worker's own objects, instead of
    the parent's hundreds of thousands (torch's among them), and never writes to their pages,
    which stay shared with the parent."""
    global _FROZEN
    if not _FROZEN:
        gc.freeze()
        _FROZEN = True


class WorkerSide(IterableDataset[Any]):
    """The dataset as a persistent worker runs it: epoch and resume point read from ``control``
    when an iteration starts, batches sent through ``slots`` when given."""

    def __init__(self, dataset: Any, control: WorkerControl, slots: Slots | None) -> None:
        super().__init__()
        self.dataset, self.control, self.slots = dataset, control, slots

    def __iter__(self) -> Iterator[Any]:
        # a generator: an error surfaces at the first batch, which torch sends to the main
        # process (an error while a persistent worker makes its iterator would kill it)
        epoch, resume = self.control.read()
        self.dataset.set_epoch(epoch)
        self.dataset._resume_at(resume)
        info = get_worker_info()
        if info is not None:
            _freeze_inherited()
            # a Zarr chunk decoded ahead on its own thread: only where a core is left for it
            from atlasprep.shard.zarr import read_ahead

            read_ahead((os.cpu_count() or 1) >= 2 * (info.num_workers + 1))
        if self.slots is None or info is None:
            yield from self.dataset
            return
        slots, worker, batches = self.slots, info.id, iter(self.dataset)
        while True:
            slot = slots.reserve(worker)
            arena = None if slot is None else slots.arena(worker, slot)
            try:
                with building_in(arena):  # the batch is padded straight into the slot
                    batch = next(batches, None)
            except BaseException:
                if slot is not None:
                    slots.free(worker, slot)
                raise
            if batch is None or slot is None or arena is None:
                if slot is not None:
                    slots.free(worker, slot)
                if batch is None:
                    return
                yield batch
                continue
            yield slots.ship(worker, slot, batch, arena)
