"""What a harmonized file keeps of its input besides obs, var and the counts: the dataset fields
of ``uns`` that CELLxGENE asks for (``title``, ``batch_condition``, ``default_embedding``) and
the embeddings in ``obsm`` (``X_umap``, ``X_pca`` …, for the cells harmonized), so that a file
CELLxGENE accepted is still accepted after harmonize. What harmonize is given wins: ``--set
title=…`` over the input's title, ``--embedding`` over an input embedding of the same name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from anndata.io import read_elem

from atlasprep.harmonize._slice import opened

__all__ = ["CARRIED_UNS", "Carried", "carried_from"]

CARRIED_UNS = ("title", "batch_condition", "default_embedding")


@dataclass(frozen=True, slots=True)
class Carried:
    uns: dict[str, Any] = field(default_factory=dict)
    obsm: dict[str, np.ndarray] = field(default_factory=dict)


def carried_from(path: Path, positions: np.ndarray, n_obs: int) -> Carried:
    """The input's ``uns`` fields and ``obsm`` embeddings (rows at ``positions``); nothing for an
    input that is not a local AnnData file."""
    if not Path(path).exists():
        return Carried()
    with opened(Path(path)) as handle:
        uns = handle.get("uns", {})
        kept_uns = {key: read_elem(uns[key]) for key in CARRIED_UNS if key in uns}
        obsm: dict[str, np.ndarray] = {}
        group = handle.get("obsm", {})
        for key in sorted(group):
            if not key.startswith("X_"):
                continue
            elem = group[key]
            shape = getattr(elem, "shape", None)
            if shape is None or len(shape) != 2 or shape[0] != n_obs:  # (a frame or a sparse group)
                continue
            obsm[key] = _rows(elem, positions)
    default = kept_uns.get("default_embedding")  # (kept only with its embedding)
    if default is not None and str(default) not in obsm:
        kept_uns.pop("default_embedding")
    return Carried(uns=kept_uns, obsm=obsm)


_BLOCK = 65_536  # rows read at a time


def _rows(elem: Any, positions: np.ndarray) -> np.ndarray:
    """``elem[positions]`` (an h5py or zarr 2-D array), read a block of rows at a time."""
    order = np.argsort(positions, kind="stable")
    ranked = np.asarray(positions)[order]
    out = np.empty((len(positions), elem.shape[1]), dtype=elem.dtype)
    for start in range(0, int(elem.shape[0]), _BLOCK):
        lo, hi = np.searchsorted(ranked, [start, start + _BLOCK])
        if hi > lo:
            block = np.asarray(elem[start : start + _BLOCK])
            out[order[lo:hi]] = block[ranked[lo:hi] - start]
    return out
