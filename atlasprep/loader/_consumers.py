"""What every atlasprep dataset shares about its consumers: ranks × DataLoader workers, epochs,
sizes, and resuming mid-epoch (the reading itself is each dataset's own).

A dataset holds ``num_cells`` cells per epoch; :mod:`atlasprep.loader._plan` gives each consumer
its range. In-process (``num_workers=0``) the dataset counts the cells it has yielded
(:meth:`EpochConsumers.state_dict`); behind DataLoader workers
:class:`atlasprep.loader.ShardLoader` counts batches and turns them into a per-worker offset
(:meth:`EpochConsumers._resume_at`).
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from torch.utils.data import get_worker_info

from atlasprep.errors import UsageError
from atlasprep.loader._options import check_fingerprint
from atlasprep.loader._plan import Consumer, Even, ResumePoint, worker_cells

__all__ = ["EpochConsumers", "check_consumers", "distributed"]


def distributed() -> tuple[int, int]:
    """(rank, world_size) of ``torch.distributed`` when it is initialized, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def check_consumers(even: Even, rank: int | None, world_size: int | None) -> None:
    if even not in (None, "drop", "pad"):
        raise UsageError(f"even must be None, 'drop' or 'pad', not {even!r}")
    if (rank is None) != (world_size is None):
        raise UsageError("give both rank and world_size, or neither")
    if rank is not None and world_size is not None and not 0 <= rank < world_size:
        raise UsageError(f"rank {rank} is not in 0..{world_size - 1}")


class EpochConsumers:
    """Sizes, epochs and resuming for a dataset whose subclass sets ``num_cells`` and
    ``_fingerprint`` (what a saved state must match) and reads a consumer's cells."""

    even: Even
    epoch: int
    _explicit: tuple[int, int] | None
    _consumed: int
    _resume: ResumePoint | None

    def _init_consumers(self, rank: int | None, world_size: int | None, even: Even) -> None:
        check_consumers(even, rank, world_size)
        self.even = even
        self._explicit = (rank, world_size) if rank is not None and world_size is not None else None
        self.rank, self.world_size = self._explicit or distributed()
        self.epoch = 0
        self._consumed = 0  # cells yielded in this process this epoch (num_workers=0)
        self._resume = None

    @property
    def num_cells(self) -> int:
        raise NotImplementedError

    def _fingerprint(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- sizes ---------------------------------------------------------------------------------

    def worker_num_cells(self, num_workers: int = 1) -> list[int]:
        """Cells each DataLoader worker of this rank yields per epoch (``num_workers=0`` counts as 1)."""
        sizes = worker_cells(
            self.num_cells,
            rank=self.rank,
            world_size=self.world_size,
            num_workers=max(1, num_workers),
            even=self.even,
        )
        return [int(n) for n in sizes]

    def consumer_num_cells(self, worker_id: int = 0, num_workers: int = 1) -> int:
        """Cells one consumer (this rank's worker ``worker_id`` of ``num_workers``) yields per epoch."""
        return self.worker_num_cells(num_workers)[worker_id]

    def num_batches(self, batch_size: int, num_workers: int = 1) -> int:
        """Batches this rank yields per epoch (each worker's last batch may be short)."""
        return sum(-(-n // batch_size) for n in self.worker_num_cells(num_workers))

    # -- epochs and resuming -------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._consumed = 0
        self._resume = None

    def state_dict(self) -> dict[str, Any]:
        """Where in-process iteration (``num_workers=0``) stands; for workers use ``ShardLoader``."""
        pending = self._resume  # loaded but not iterated yet
        consumed = (
            pending.consumed[0] if pending is not None and len(pending.consumed) == 1 else self._consumed
        )
        return {**self._fingerprint(), "epoch": self.epoch, "consumed": consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The next iteration yields exactly the cells the saved one had still to yield, in order."""
        self._check_fingerprint(state)
        self.set_epoch(int(state["epoch"]))
        self._resume_at(ResumePoint(consumed=(int(state["consumed"]),), rotation=0))

    def _resume_at(self, point: ResumePoint | None) -> None:
        self._resume = point

    def _check_fingerprint(self, state: dict[str, Any]) -> None:
        check_fingerprint(self._fingerprint(), state)

    def _this_consumer(self) -> tuple[Consumer, int]:
        """This process's consumer (its DataLoader worker, if any, of its rank) and how many of
        its cells to skip (a resumed epoch)."""
        info = get_worker_info()
        if info is None and self._explicit is None:  # torch.distributed may have started since
            self.rank, self.world_size = distributed()
        num_workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        resume, self._resume = self._resume, None
        skip = 0
        if resume is not None:
            if len(resume.consumed) != num_workers:
                raise UsageError(
                    f"the state was saved with {len(resume.consumed)} worker(s), this run has {num_workers}"
                )
            worker = (worker + resume.rotation) % num_workers
            skip = resume.consumed[worker]
        self._consumed = skip
        consumer = Consumer(
            rank=self.rank, world_size=self.world_size, worker=worker, num_workers=num_workers
        )
        return consumer, skip
