"""`ShardLoader`: batches of a :class:`~atlasprep.loader.dataset.ShardDataset` through a
``DataLoader``, resumable mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader

from atlasprep.errors import UsageError
from atlasprep.loader._plan import resume_point
from atlasprep.loader.dataset import ShardDataset
from atlasprep.loader.stream import StreamDataset

__all__ = ["ShardLoader"]


class ShardLoader:
    """Batches of a :class:`ShardDataset` through a ``DataLoader`` (workers optional), resumable.

    The DataLoader runs the dataset in batched mode (``batch_size=None`` for the DataLoader,
    ``persistent_workers=False``, ``in_order=True``). :meth:`state_dict` records the epoch and
    the batches delivered; a DataLoader takes batches from its workers round-robin, skipping
    exhausted ones, so that count fixes how many cells each worker had sent and which worker
    is next (:func:`atlasprep.loader._plan.resume_point`). After :meth:`load_state_dict` each
    worker skips its sent cells and the workers are rotated, so the resumed loader delivers
    exactly the batches the uninterrupted one still had to, in the same order.
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
        if start:
            sizes = self.dataset.worker_num_cells(self.num_workers)
            self.dataset._resume_at(resume_point(sizes, batch_size=self.batch_size, delivered=start))
        loader = DataLoader(
            self.dataset,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=False,
            in_order=True,
            collate_fn=_as_is,
            **self._kwargs,
        )
        batches = iter(loader)  # workers start here, each with its copy of the resume point
        self.dataset._resume_at(None)
        self._delivered = start
        return self._count(batches)

    def _count(self, batches: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for batch in batches:
            self._delivered += 1
            yield batch

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


def _as_is(batch: Any) -> Any:
    """The batch as the dataset made it (the default would re-convert every tensor)."""
    return batch
