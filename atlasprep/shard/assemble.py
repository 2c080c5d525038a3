"""Shards gathered and written by workers: after the encode pass the driver plans each shard
(it holds every spill's sorted keys: which run of rows of which spill goes where) and sends one
job per shard; the job reads those runs from the spill files (workers see the store directory),
writes the shard under a temporary name, renames it into place and returns its path, size and
checksum. The driver writes only the manifest, last. Shards are numbered and cut as
:meth:`ShardWriter.finish` numbers and cuts them, so the bytes are the same.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import pyarrow as pa

from atlasprep.shard.format import ShardFormatName, format_named
from atlasprep.shard.spill import Runs, find_runs, gather_runs
from atlasprep.shard.writer import ShardInfo, ShardWriter, write_shard

__all__ = ["ShardJob", "finish_shards", "plan_shards", "write_shard_job"]

J = TypeVar("J")
R = TypeVar("R")


class _Runner(Protocol):
    def map(self, fn: Callable[[J], R], jobs: Sequence[J]) -> list[R]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardJob:
    """One shard: where its rows are in the spills, and where it goes."""

    store: Path
    name: str  # its file under shards/
    split: str
    fmt: ShardFormatName
    schema: pa.Schema
    runs: Runs  # per spill: its file, first row, the rows' places in the shard
    n_cells: int
    token_column: str = "input_ids"


def plan_shards(writer: ShardWriter, token_column: str = "input_ids") -> list[ShardJob]:
    """The shards :meth:`ShardWriter.finish` would write, in its order; key ranges no spill
    holds a row of (every cell left out) are skipped, and shards are numbered as written."""
    jobs = []
    numbers: collections.Counter[str] = collections.Counter()
    for split, low, n in writer.planned():
        found = find_runs(writer.spills, low, n)
        if found is None:
            continue
        runs, n_cells = found
        jobs.append(
            ShardJob(
                store=writer.store,
                name=writer.layout.shard_name(split, numbers[split], writer.format.suffix),
                split=split,
                fmt=writer.format.name,
                schema=writer.schema,
                runs=runs,
                n_cells=n_cells,
                token_column=token_column,
            )
        )
        numbers[split] += 1
    return jobs


def write_shard_job(job: ShardJob) -> ShardInfo:
    """Gather one shard from the spills and write it (on a worker)."""
    table = gather_runs(job.schema, job.runs, job.n_cells)
    return write_shard(job.store, job.name, job.split, format_named(job.fmt), table, job.token_column)


def finish_shards(
    writer: ShardWriter, runner: _Runner | None, token_column: str = "input_ids"
) -> list[ShardInfo]:
    """The shards, written here (``writer.finish``) or one job each on ``runner``'s workers."""
    if runner is None:
        return writer.finish(token_column)
    shards = runner.map(write_shard_job, plan_shards(writer, token_column))
    writer.remove_spills()  # as finish removes them
    return shards
