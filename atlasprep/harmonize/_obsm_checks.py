"""The obsm checks of CELLxGENE schema 7.1.0 (embeddings, as cellxgene-schema 7.1.2 enforces them):
at least one embedding, one of them ``X_<suffix>`` (unless the assay is spatial); each a numeric
array with a row per cell and, for ``X_`` and ``spatial``, at least two columns; no infinite
values; not all NaN (``spatial``: no NaN at all); ``spatial`` only with ``uns['spatial']['is_single']``.
Arrays are read a block of rows at a time, never whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from atlasprep.harmonize._report import Found, Profile
from atlasprep.harmonize._schema_rules import EMBEDDING_KEY

_BLOCK_VALUES = 1 << 22  # array values per read


def _where(key: str) -> str:
    return f"obsm['{key}']"


def check_obsm(
    obsm: Any, n_cells: int, uns: Mapping[str, Any], spatial_assay: bool, profile: Profile, problems: Found
) -> None:
    """``obsm``: the store's obsm group (h5py or zarr) or None."""
    keys = sorted(obsm.keys()) if obsm is not None else []
    relaxed = profile == Profile.atlasprep
    if not keys:
        if not relaxed:
            problems.add("obsm", "no embeddings: CELLxGENE needs at least one (e.g. X_umap)", n_cells)
        return
    for key in keys:
        _check_key(key, problems, n_cells)
        _check_array(key, obsm[key], n_cells, problems)
    if not spatial_assay and not any(k.startswith("X_") for k in keys) and not relaxed:
        problems.add("obsm", "no embedding with an 'X_' key (e.g. X_umap)", n_cells, keys[:3])
    spatial = uns.get("spatial")
    is_single = spatial.get("is_single") if isinstance(spatial, Mapping) else None
    is_single = bool(is_single) if isinstance(is_single, bool | np.bool_) else None
    if is_single and "spatial" not in keys:
        problems.add(_where("spatial"), "required when uns['spatial']['is_single'] is True", n_cells)
    elif is_single is None and "spatial" in keys:
        problems.add(_where("spatial"), "forbidden unless uns['spatial']['is_single'] is set", n_cells)


def _check_key(key: str, problems: Found, n: int) -> None:
    if key.startswith("X_"):
        if key.lower() == "x_spatial":
            problems.add(_where(key), "this key cannot be used (use 'spatial')", n)
        elif not EMBEDDING_KEY.match(key[2:]):
            problems.add(_where(key), f"the suffix after 'X_' must match {EMBEDDING_KEY.pattern}", n)
    elif key.lower() != "spatial" and not EMBEDDING_KEY.match(key):
        problems.add(_where(key), f"the key must match {EMBEDDING_KEY.pattern}", n)


def _check_array(key: str, elem: Any, n: int, problems: Found) -> None:
    where, shown = _where(key), key.startswith("X_") or key.lower() == "spatial"
    shape = getattr(elem, "shape", None)
    if shape is None or hasattr(elem, "keys"):
        problems.add(where, "embeddings must be dense numeric arrays", n)
        return
    if len(shape) < 2:
        problems.add(where, f"embeddings need two dimensions, this has {len(shape)}", n)
        return
    if shape[0] != n:
        problems.add(where, f"has {shape[0]} rows: embeddings need one per cell ({n})", n)
    if shape[1] < (2 if shown else 1):
        problems.add(where, f"has {shape[1]} column(s): 'X_' and 'spatial' embeddings need at least two", n)
    dtype = np.dtype(elem.dtype)
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        if shown:
            problems.add(where, f"must be float or integer, not {dtype}", n)
        return
    n_inf, n_nan, size = _count_nonfinite(elem, dtype)
    if n_inf and shown:
        problems.add(where, "holds infinite values", n)
    if key.lower() == "spatial" and n_nan:
        problems.add(where, "holds NaN values (spatial coordinates must all be given)", n)
    elif shown and size and n_nan == size:
        problems.add(where, "holds only NaN values", n)


def _count_nonfinite(elem: Any, dtype: np.dtype[Any]) -> tuple[int, int, int]:
    """(infinite values, NaN values, all values), read a block of rows at a time."""
    if not np.issubdtype(dtype, np.floating):
        return 0, 0, int(np.prod(elem.shape))
    rows = max(1, _BLOCK_VALUES // max(int(np.prod(elem.shape[1:])), 1))
    n_inf = n_nan = 0
    for start in range(0, int(elem.shape[0]), rows):
        block = np.asarray(elem[start : start + rows])
        n_inf += int(np.isinf(block).sum())
        n_nan += int(np.isnan(block).sum())
    return n_inf, n_nan, int(np.prod(elem.shape))
