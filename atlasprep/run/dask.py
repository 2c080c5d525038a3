"""Run tokenize's heavy lifting on a Dask cluster: ranges of the cell index, one job each.

The corpus passes (median sketches, HVG moments, context values, paired IDF) are map-reduced:
each job reads its range and returns a partial state the driver merges, to the bits a local
pass gives (:mod:`atlasprep.tokenize.passes`). The encode jobs tokenize their ranges into spill
files in the store's work directory and return their keys; the driver plans each shard from
them and one job per shard gathers and writes it (:mod:`atlasprep.shard.assemble`); the driver
writes only the manifest, last. The store's bytes do not depend on the executor. Workers must
see the store directory (a shared filesystem on a cluster) and the source (the Census, a SOMA
URI, or the input files).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from atlasprep._names import Executor
from atlasprep.errors import UsageError

__all__ = [
    "DaskRunner",
    "Executor",
]

log = logging.getLogger("atlasprep.run")


class DaskRunner:
    """``with DaskRunner(workers=2) as runner: tokenize_cells(config, runner=runner)``.

    ``scheduler`` connects to an existing cluster (``tcp://host:8786``, as dask-jobqueue or
    dask-kubernetes print it); ``workers`` starts a LocalCluster of that many single-threaded
    worker processes instead.
    """

    def __init__(
        self, *, scheduler: str | None = None, workers: int | None = None, partitions_per_worker: int = 2
    ) -> None:
        if (scheduler is None) == (workers is None):
            raise UsageError("executor = 'dask' needs scheduler or workers (one of them)")
        if workers is not None and workers < 1:
            raise UsageError(f"workers = {workers}: must be at least 1")
        self.scheduler = scheduler
        self.workers = workers
        self.partitions_per_worker = partitions_per_worker
        self._client: Any = None
        self._cluster: Any = None

    def __enter__(self) -> DaskRunner:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise UsageError("executor = 'dask' needs dask: pip install 'atlasprep[dask]'") from None
        if not log.isEnabledFor(logging.DEBUG):  # the cluster's own chatter only with -vv
            logging.getLogger("distributed").setLevel(logging.WARNING)
        if self.scheduler is not None:
            try:
                self._client = Client(self.scheduler, timeout="30s")
            except OSError as exc:
                raise UsageError(f"scheduler {self.scheduler}: cannot connect ({exc})") from None
        else:
            self._cluster = LocalCluster(
                n_workers=self.workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
            self._client = Client(self._cluster)
        log.info("dask: %d workers at %s", self.n_workers, self._client.scheduler.address)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()

    @property
    def n_workers(self) -> int:
        """The workers to plan for: the local cluster's own count (a worker its nanny is
        restarting still comes back to take its share), else those the scheduler knows now."""
        if self.workers is not None:
            return self.workers
        return max(1, len(self._client.scheduler_info(n_workers=-1)["workers"])) if self._client else 1

    @property
    def n_partitions(self) -> int:
        return self.n_workers * self.partitions_per_worker

    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> list[Any]:
        if self._client is None:
            raise RuntimeError("DaskRunner is used outside its with-block")
        futures = self._client.map(fn, list(jobs), pure=False)
        return list(self._client.gather(futures))
