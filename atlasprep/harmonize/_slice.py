"""Opening an AnnData store (h5ad, zarr, zipped zarr) and reading the slice to validate: obs, var,
raw.var and uns whole, the counts matrix (``raw.X`` when present, else ``X``) left on disk for the scan.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import pandas as pd
import zarr
from anndata.io import read_elem

from atlasprep.errors import InputFormatError, SourceError
from atlasprep.sources._paths import missing_file
from atlasprep.sources.anndata import read_frame  # also reads the legacy structured-array encoding


@dataclass(frozen=True, slots=True)
class Slice:
    """obs, var and uns read whole; the counts matrix left on disk."""

    obs: pd.DataFrame
    var: pd.DataFrame
    raw_var: pd.DataFrame | None
    uns: Mapping[str, Any]
    counts: Any  # h5py / zarr group (sparse) or array (dense)
    counts_name: str  # "raw.X" or "X"


@contextmanager
def opened(path: Path) -> Iterator[Any]:
    if not path.exists():
        raise SourceError(missing_file(path, "validate"))
    store = None
    try:
        if path.is_file() and h5py.is_hdf5(path):
            handle: Any = h5py.File(path, "r")
        elif path.suffix == ".zip":
            store = zarr.storage.ZipStore(path, mode="r")
            handle = zarr.open_group(store, mode="r")
        else:
            handle = zarr.open_group(path, mode="r")
    except Exception as exc:  # h5py and zarr raise many types for a file that is neither
        if store is not None:
            store.close()
        raise SourceError(f"{path}: cannot open it as an h5ad or zarr AnnData store ({exc})") from None
    try:
        yield handle
    finally:
        if isinstance(handle, h5py.File):
            handle.close()
        if store is not None:
            store.close()


def read_slice(handle: Any, path: Path) -> Slice:
    missing = [key for key in ("obs", "var", "X") if key not in handle]
    if missing:
        raise InputFormatError(f"{path}: not an AnnData store (no {', '.join(missing)})")
    raw = "raw" in handle and "X" in handle["raw"]
    obs = read_frame(handle["obs"])
    var = read_frame(handle["var"])
    obs.index, var.index = obs.index.astype(str), var.index.astype(str)
    raw_var = None
    if raw and "var" in handle["raw"]:
        raw_var = read_frame(handle["raw/var"])
        raw_var.index = raw_var.index.astype(str)
    uns = read_elem(handle["uns"]) if "uns" in handle else {}
    return Slice(
        obs=obs,
        var=var,
        raw_var=raw_var,
        uns=uns if isinstance(uns, Mapping) else {},
        counts=handle["raw/X" if raw else "X"],
        counts_name="raw.X" if raw else "X",
    )
