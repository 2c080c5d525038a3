"""The corpus passes as map-reduce jobs: each job reads one range of whole batches of the
selected cells and returns a partial state; the driver merges the partials in range order.

Every partial merges to the bytes a pass in one process gives: the median sketch and the
peak counts are integers (exact in any order); the HVG moments are float sums, so both a local
pass and the jobs sum each block of ``batch_size`` cells on its own (counted from the first
selected cell: the same blocks whatever the number of workers or however the source cuts its
read batches), and the driver adds the blocks' sums in block order, as a local pass does. The
jobs open the source themselves (workers see it as the driver does).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
import scipy.sparse as sp

from atlasprep.sources import CellSource, gene_positions, only_genes, open_source
from atlasprep.tokenize.config import TokenizeConfig
from atlasprep.tokenize.encode import check_batch_counts
from atlasprep.tokenize.hvg import block_moments
from atlasprep.tokenize.medians import MedianSketch

__all__ = [
    "Partials",
    "PassJob",
    "PassRunner",
    "cell_ranges",
    "cells_with_feature",
    "count_batches",
    "map_pass",
    "merge_values",
    "moment_blocks",
    "present_values",
    "run_pass_job",
]

J = TypeVar("J")
R = TypeVar("R")

PassKind = Literal["medians", "moments", "clipped", "peaks", "context"]
Partials = list[tuple[np.ndarray, np.ndarray, int]]  # per block: sums, sums of squares, cells


class PassRunner(Protocol):
    """Runs jobs somewhere (a Dask cluster: :class:`atlasprep.run.DaskRunner`)."""

    @property
    def n_partitions(self) -> int: ...

    def map(self, fn: Callable[[J], R], jobs: Sequence[J]) -> list[R]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class PassJob:
    """One range of whole batches of the selected cells, read for one corpus pass."""

    config: TokenizeConfig
    kind: PassKind
    positions: np.ndarray  # the range's cells, positions in the source
    n_genes: int = 0  # medians: the source's genes
    columns: np.ndarray | None = None  # moments: the vocabulary's input columns
    clip: np.ndarray | None = None  # clipped moments: per column
    spec: str = ""  # peaks: the paired modality ("file.h5mu:atac")
    n_features: int = 0  # peaks: its features
    context: tuple[str, ...] = ()  # context: the obs columns


def cell_ranges(n_cells: int, batch_size: int, parts: int) -> list[slice]:
    """``n_cells`` cut into at most ``parts`` ranges of whole batches (the last one short)."""
    if n_cells == 0:
        return [slice(0, 0)]
    n_batches = math.ceil(n_cells / batch_size)
    parts = max(1, min(parts, n_batches))
    per_part = math.ceil(n_batches / parts) * batch_size
    return [slice(first, min(n_cells, first + per_part)) for first in range(0, n_cells, per_part)]


def map_pass(runner: PassRunner, config: TokenizeConfig, positions: np.ndarray, **fields: Any) -> list[Any]:
    """One pass's partials, one per range of the cells, in range order."""
    ranges = cell_ranges(len(positions), config.source.batch_size, runner.n_partitions)
    jobs = [PassJob(config=config, positions=positions[cells], **fields) for cells in ranges]
    return runner.map(run_pass_job, jobs)


def count_batches(config: TokenizeConfig, source: CellSource, positions: np.ndarray) -> Iterator[Any]:
    """The cells' counts, batch by batch, checked (a pass before the tokens)."""
    for batch in source.iter_batches(
        positions, var_positions=None, batch_size=config.source.batch_size, obs_columns=[]
    ):
        check_batch_counts(batch.X, config)
        yield batch.X


def present_values(source: CellSource, positions: np.ndarray, context: Sequence[str]) -> dict[str, list[str]]:
    """Per context column, the values its cells hold (missing as ``<NA>``), sorted."""
    present = source.obs_values(positions, list(context))
    return {c: sorted(str(v) for v in present[c].astype("string").fillna("<NA>").unique()) for c in context}


def run_pass_job(job: PassJob) -> Any:
    """A range's partial state (on a worker: the job opens the source itself)."""
    if job.kind == "peaks":
        return _peaks(job)
    opened = open_source(job.config.source)
    try:
        source = only_genes(opened, gene_positions(job.config.source, opened))
        if job.kind == "context":
            return present_values(source, job.positions, job.context)
        if job.kind == "medians":
            sketch = MedianSketch(n_genes=job.n_genes)
            for X in count_batches(job.config, source, job.positions):
                sketch.add(X)
            return sp.csr_matrix(sketch.counts)
        return _moments(job, source)
    finally:
        opened.close()


def _moments(job: PassJob, source: CellSource) -> Partials:
    assert job.columns is not None
    clip = job.clip if job.kind == "clipped" else None
    return moment_blocks(job.config, source, job.positions, job.columns, clip)


def moment_blocks(
    config: TokenizeConfig,
    source: CellSource,
    positions: np.ndarray,
    columns: np.ndarray,
    clip: np.ndarray | None = None,
) -> Partials:
    """The HVG sums of ``columns`` per block of ``batch_size`` cells (counted from the first of
    ``positions``: a range starts on a block), in order."""
    batches = (sp.csr_matrix(X)[:, columns] for X in count_batches(config, source, positions))
    return list(block_moments(batches, clip, len(columns), config.source.batch_size))


def _peaks(job: PassJob) -> np.ndarray:
    """Per feature of a paired modality, the range's cells with a nonzero value."""
    from atlasprep.sources.anndata import AnnDataSource  # anndata: only for a paired file

    other = AnnDataSource([job.spec])
    try:
        return cells_with_feature(other, job.positions, job.config.source.batch_size, job.n_features)
    finally:
        other.close()


def cells_with_feature(
    source: CellSource, positions: np.ndarray, batch_size: int, n_features: int
) -> np.ndarray:
    with_peak = np.zeros(n_features, dtype=np.int64)
    for batch in source.iter_batches(positions, var_positions=None, batch_size=batch_size, obs_columns=[]):
        X = sp.csr_matrix(batch.X)
        X.eliminate_zeros()
        with_peak += np.bincount(X.indices, minlength=n_features)
    return with_peak


def merge_values(partials: Sequence[dict[str, list[str]]], context: Sequence[str]) -> dict[str, list[str]]:
    """The ranges' context values, together and sorted."""
    return {c: sorted(set().union(*(p[c] for p in partials))) for c in context}
