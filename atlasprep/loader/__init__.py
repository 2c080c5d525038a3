"""PyTorch loading of token stores: every cell once per epoch, on any number of ranks and workers.

``ShardDataset`` streams one split of a store written by ``atlasprep tokenize`` (Arrow or Zarr
shards); ``ShardLoader`` wraps it in a ``DataLoader`` with a resumable state; ``ShardCollator``
pads single cells into batches. Planning (who reads which cells, in which order) is plain
numpy in :mod:`atlasprep.loader._plan`; see :mod:`atlasprep.loader.dataset` for the reading and
:mod:`atlasprep.loader.dataloader` for ``ShardLoader``.

    from atlasprep.loader import ShardDataset, ShardLoader

    dataset = ShardDataset("store/", "train", seed=0, columns=["cell_type_ontology_term_id"])
    loader = ShardLoader(dataset, batch_size=256, num_workers=4)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:  # input_ids, attention_mask, values?, labels, cell_id
            ...

torch is an optional dependency: ``pip install 'atlasprep[torch]'``.
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised only without torch
    raise ImportError("atlasprep.loader needs torch: pip install 'atlasprep[torch]'") from error

from atlasprep.loader.collate import ShardCollator
from atlasprep.loader.dataloader import ShardLoader
from atlasprep.loader.dataset import ShardDataset
from atlasprep.loader.sampling import Batches, Sampling
from atlasprep.loader.stream import StreamDataset

__all__ = ["Batches", "Sampling", "ShardCollator", "ShardDataset", "ShardLoader", "StreamDataset"]
