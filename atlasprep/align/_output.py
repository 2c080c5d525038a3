"""Writing an aligned object (MuData, AnnData) in one piece: under a temporary name, renamed into
place only when whole; an OS failure (permission denied, a full disk) is one ``OSError`` naming
the output and leaves nothing behind.

h5py must never meet a full disk (see :mod:`atlasprep.slice.writer`: a dataset whose close fails
is later closed again by HDF5's exit handler, a segmentation fault), so an HDF5 output is
refused up front when the object's uncompressed bytes would not fit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from atlasprep._io import atomic_output, sweep_stale_temps
from atlasprep.errors import AtlasprepError
from atlasprep.slice.writer import os_error_at, require_free_space

__all__ = ["stored_bytes", "write_output"]

_HDF5_SUFFIXES = (".h5ad", ".h5mu")


def write_output(out: Path, write: Callable[[Path], None], *, n_bytes: int) -> None:
    """``write(tmp)`` then rename ``tmp`` to ``out``; on any failure ``tmp`` is removed and
    ``out`` untouched. ``n_bytes``: about what an HDF5 output takes (see :func:`stored_bytes`)."""
    sweep_stale_temps(out)  # a crashed run's leftover
    try:
        if out.suffix in _HDF5_SUFFIXES:
            require_free_space(out, n_bytes)
        with atomic_output(out) as tmp:
            write(tmp)
    except (OSError, RuntimeError) as exc:
        if isinstance(exc, AtlasprepError):
            raise
        error = os_error_at(exc, out)
        if error is None or error is exc:
            raise
        raise error from None


def stored_bytes(value: Any) -> int:
    """About how many bytes ``value`` (an AnnData, a MuData, or what they hold) takes uncompressed."""
    if value is None:
        return 0
    if sp.issparse(value):
        names = ("data", "indices", "indptr", "row", "col")
        arrays = [getattr(value, n, None) for n in names]
        return sum(a.nbytes for a in arrays if isinstance(a, np.ndarray))
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, pd.DataFrame | pd.Series | pd.Index):
        usage = value.memory_usage(deep=True)
        return int(np.sum(usage))
    if isinstance(value, Mapping):
        return sum(stored_bytes(v) for v in value.values())
    if isinstance(value, ad.AnnData):
        parts = (value.X, value.layers, value.obsm, value.varm, value.obsp, value.varp, value.obs, value.var)
        raw = (value.raw.X, value.raw.var) if value.raw is not None else ()
        return sum(stored_bytes(p) for p in (*parts, *raw)) + stored_bytes(dict(value.uns))
    mods = getattr(value, "mod", None)
    if isinstance(mods, Mapping):  # a MuData
        shared = (value.obs, value.var, value.obsm, value.varm, value.obsp, value.varp)
        return sum(stored_bytes(m) for m in mods.values()) + sum(stored_bytes(p) for p in shared)
    return 0
