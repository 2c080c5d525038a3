"""Balanced sampling for a :class:`~atlasprep.loader.stream.StreamDataset`: the store loader's
draws (:class:`~atlasprep.loader._sampled.BalancedDraws`) over the stream's chunks.

Each chunk of consecutive cells plays a shard's part: an epoch draws ``num_samples`` cells with
probability inversely proportional to their label's frequency, counted per chunk, then drawn
within each chunk (ascending: a chunk's draws stay one contiguous read); the chunks are laid end
to end in the epoch's chunk order. The draws form the epoch's sequence, which consumers split as
they split the cells of a uniform epoch, so ranks × workers, ``even`` and resuming work the same.
"""

from __future__ import annotations

import numpy as np

from atlasprep.loader.sampling import SamplingPlan, plan_sampling
from atlasprep.sources import SourceSpec, open_source

__all__ = ["chunk_sizes", "drawn_sequence", "stream_sampling"]


def chunk_sizes(n_cells: int, chunk_size: int) -> list[int]:
    """The sizes of the split's chunks of consecutive cells."""
    return [min(chunk_size, n_cells - a) for a in range(0, n_cells, chunk_size)]


def stream_sampling(
    spec: SourceSpec, cells: np.ndarray, sampling: str, chunk_size: int
) -> SamplingPlan | None:
    """``sampling`` planned over the split's cells (their labels read from the source once, a
    small integer a cell); None for ``"uniform"``."""
    if sampling == "uniform":
        return None
    source = open_source(spec)
    try:

        def read(column: str) -> list[np.ndarray]:
            values = source.obs_values(cells, [column])[column]
            return [values.astype("string").fillna("<NA>").to_numpy(dtype=object)]

        sizes = chunk_sizes(len(cells), chunk_size)
        return plan_sampling(sampling, None, read=read, stored=list(source.obs_columns), shard_sizes=sizes)
    finally:
        source.close()


def drawn_sequence(
    plan: SamplingPlan, chunk_order: np.ndarray, *, chunk_size: int, n_samples: int, seed: int, epoch: int
) -> np.ndarray:
    """The epoch's drawn cells (indices into the split), chunk by chunk in ``chunk_order``."""
    assert plan.draws is not None
    counts = plan.draws.shard_counts(n_samples, seed=seed, epoch=epoch)
    parts = [
        k * chunk_size + plan.draws.rows(int(k), int(counts[k]), seed=seed, epoch=epoch) for k in chunk_order
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
