"""`ShardLoader`: batches of a :class:`~atlasprep.loader.dataset.ShardDataset` through a
``DataLoader``, resumable mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader

from atlasprep.errors import UsageError
from atlasprep.loader._consumers import distributed
from atlasprep.loader._plan import resume_point
from atlasprep.loader._shipping import Shipped, Slots, WorkerControl, WorkerSide, slot_bytes
from atlasprep.loader.dataset import ShardDataset
from atlasprep.loader.stream import StreamDataset

__all__ = ["ShardLoader"]


class ShardLoader:
    """Batches of a :class:`ShardDataset` through a ``DataLoader`` (workers optional), resumable.

    The DataLoader runs the dataset in batched mode (``batch_size=None`` for the DataLoader,
    ``in_order=True``). With workers it is made once and its workers persist across epochs:
    the epoch and resume point reach them through shared memory as each iteration starts, and
    batches come back through reused shared-memory slots (:mod:`atlasprep.loader._shipping`;
    a batch's tensors view its slot until they are dropped). One iteration runs at a time
    (starting one ends the one before); :meth:`close` stops the workers.

    :meth:`state_dict` records the epoch and the batches delivered; a DataLoader takes batches
    from its workers round-robin, skipping exhausted ones, so that count fixes how many cells
    each worker had sent and which worker is next (:func:`atlasprep.loader._plan.resume_point`).
    After :meth:`load_state_dict` each worker skips its sent cells and the workers are rotated,
    so the resumed loader delivers exactly the batches the uninterrupted one still had to, in
    the same order.
    """

    _RESERVED = frozenset(
        {"batch_size", "shuffle", "sampler", "batch_sampler", "collate_fn", "persistent_workers", "in_order"}
    )

    def __init__(
        self,
        dataset: ShardDataset | StreamDataset,
        *,
        batch_size: int,
        num_workers: int = 0,
        pad_to: int | None = None,
        **dataloader_kwargs: Any,
    ) -> None:
        reserved = sorted(self._RESERVED & dataloader_kwargs.keys())
        if reserved:
            raise UsageError(f"ShardLoader sets {', '.join(reserved)} itself")
        if num_workers < 0:
            raise UsageError(f"num_workers must be non-negative, not {num_workers}")
        self.dataset = dataset.batched(batch_size, pad_to=pad_to)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._kwargs = dataloader_kwargs
        self._delivered = 0  # batches of this epoch delivered, counting those before a resume
        self._start = 0  # batches to skip at the next iteration (from load_state_dict)
        self._generation = 0  # iterations started: an older one stops when a newer starts
        self._loader: DataLoader[Any] | None = None  # the persistent workers' (num_workers > 0)
        self._key: tuple[int, int] | None = None  # (rank, world_size) the workers were made for
        self._control: WorkerControl | None = None
        self._slots: Slots | None = None

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)
        self._delivered = self._start = 0

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self.dataset.num_batches(self.batch_size, self.num_workers)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        start, self._start = self._start, 0
        point = None
        if start:
            sizes = self.dataset.worker_num_cells(self.num_workers)
            point = resume_point(sizes, batch_size=self.batch_size, delivered=start)
        if self.num_workers:
            loader = self._persistent()
            assert self._control is not None
            self._control.write(self.epoch, point)  # read by each worker as its iteration starts
            batches = iter(loader)
        else:
            self.dataset._resume_at(point)
            batches = iter(DataLoader(self.dataset, batch_size=None, collate_fn=_as_is, **self._kwargs))
            self.dataset._resume_at(None)
        self._delivered = start
        self._generation += 1
        return self._count(batches, self._generation)

    def _persistent(self) -> DataLoader[Any]:
        """The workers' DataLoader: made once, again only if this rank's place changed (the
        epoch and resume point reach the workers through shared memory)."""
        if self.dataset._explicit is None:  # torch.distributed may have started since
            self.dataset.rank, self.dataset.world_size = distributed()
        key = (self.dataset.rank, self.dataset.world_size)
        if self._loader is None or key != self._key:
            self.close()
            self._control = WorkerControl(self.num_workers)
            # a worker's batches in flight, the one the caller holds, one waiting its turn, one in the making
            per_worker = (self._kwargs.get("prefetch_factor") or 2) + 3
            slots = Slots.sized(self.num_workers, per_worker, slot_bytes(self.dataset, self.batch_size))
            self._slots = slots
            self._loader = DataLoader(
                WorkerSide(self.dataset, self._control, slots),
                batch_size=None,
                num_workers=self.num_workers,
                persistent_workers=True,
                in_order=True,
                collate_fn=_as_is,
                **self._kwargs,
            )
            self._key = key
        return self._loader

    def __getstate__(self) -> dict[str, Any]:
        """A copy (pickled, deep-copied) has no workers: it starts its own."""
        idle = {"_loader": None, "_key": None, "_control": None, "_slots": None}
        return {**self.__dict__, **idle}

    def close(self) -> None:
        """Stop the workers now (they also stop when the loader is garbage-collected)."""
        loader, self._loader = self._loader, None
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()

    def _count(self, batches: Iterator[Any], generation: int) -> Iterator[dict[str, Any]]:
        while generation == self._generation:  # else a newer iteration has taken the workers over
            try:
                batch: Any = next(batches, _END)
            except BaseException:  # a worker failed or died: the next iteration starts fresh ones
                self.close()
                raise
            if batch is _END:
                return
            self._delivered += 1
            yield batch.take() if isinstance(batch, Shipped) else batch

    def state_dict(self) -> dict[str, Any]:
        return {
            **self.dataset._fingerprint(),
            "epoch": self.epoch,
            "batches": self._start or self._delivered,
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The next iteration delivers exactly the batches the saved run had still to deliver."""
        self.dataset._check_fingerprint(state)
        for key in ("batch_size", "num_workers"):
            if state.get(key) != getattr(self, key):
                raise UsageError(
                    f"the state was saved with {key}={state.get(key)}, this loader has {getattr(self, key)}"
                )
        self.set_epoch(int(state["epoch"]))
        batches = int(state["batches"])
        if not 0 <= batches <= len(self):
            raise UsageError(f"the state says {batches} batches were delivered; an epoch has {len(self)}")
        self._start = batches


_END = object()


def _as_is(batch: Any) -> Any:
    """The batch as the dataset made it (the default would re-convert every tensor)."""
    return batch
