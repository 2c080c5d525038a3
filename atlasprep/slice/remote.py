"""`slice --out s3://bucket/x.zarr`: a Zarr slice written locally, then uploaded, its root last.

The slice is written by :func:`~atlasprep.slice.api.slice_cells` into a staging directory
(:func:`~atlasprep._remote.staging_dir`), so its bytes are a local slice's, then uploaded under
the URL. The rules are the local ones (:func:`atlasprep._io.check_output`): the prefix must be
empty, or (with ``overwrite``) an AnnData Zarr store, which is replaced whole, or a slice upload
atlasprep started (its marker, :data:`UPLOAD_MARKER`, beside the store's files), which a re-run
finishes. The store's root metadata (``zarr.json``, or ``.zattrs``/``.zgroup``/``.zmetadata``)
is uploaded last and the marker then goes, so a reader finds a group only once every array is there.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from atlasprep import __version__
from atlasprep._io import ZARR_ROOT_META, remove_path, zarr_object
from atlasprep._remote import RemoteRoot, open_root, remote_errors, staging_dir
from atlasprep.errors import ForeignOutputError, OutputExistsError, UsageError
from atlasprep.provenance import PROVENANCE_KEY, steps_json
from atlasprep.slice.api import SliceConfig, SliceResult, slice_cells
from atlasprep.sources import ProgressCallback

__all__ = ["UPLOAD_MARKER", "slice_to_url"]

log = logging.getLogger("atlasprep.slice")

UPLOAD_MARKER = ".atlasprep-upload.json"  # a slice upload under way (removed when it is complete)
_ANNDATA = frozenset({"anndata", "MuData"})


def slice_to_url(config: SliceConfig, url: str, progress: ProgressCallback | None = None) -> SliceResult:
    """:func:`~atlasprep.slice.api.slice_cells` into object storage: a Zarr store under ``url``
    (``s3://bucket/lung.zarr`` or any fsspec URL), the bytes of a local slice. ``config.out`` is
    not used (the slice is staged locally first)."""
    if not url.rstrip("/").endswith(".zarr"):
        raise UsageError(f"out {url}: a slice in object storage is a Zarr store; end the URL in .zarr")
    root = open_root(url)
    root.check_bucket()
    _check_prefix(root, overwrite=config.overwrite)  # before any work
    staging = staging_dir(url).with_suffix(".zarr")
    try:
        result = slice_cells(dataclasses.replace(config, out=staging, overwrite=True), progress)
        if result.out is not None:
            _record_url(staging, url)
            _upload(root, staging)
    finally:
        if staging.is_dir():
            remove_path(staging)
    return result


def _check_prefix(root: RemoteRoot, *, overwrite: bool) -> None:
    listing = root.listing()
    if not listing:
        return
    marked = UPLOAD_MARKER in listing  # an upload of ours to finish (Zarr's files only)
    if marked and all(zarr_object(name) for name in listing if name != UPLOAD_MARKER):
        return
    stranger = next((name for name in sorted(listing) if not zarr_object(name)), None)
    if marked or _encoding(root, listing) not in _ANNDATA or stranger is not None:
        raise ForeignOutputError(
            f"out {root} holds objects that are not an AnnData Zarr store"
            f"{f' ({stranger})' if stranger is not None and not marked else ''}; atlasprep replaces "
            "only a store it could have written: move them, or choose another out URL"
        )
    if not overwrite:
        raise OutputExistsError(f"out {root} exists; set overwrite to replace it")


def _encoding(root: RemoteRoot, listing: dict[str, int]) -> str | None:
    """The store's ``encoding-type`` (``anndata``), from its root metadata (v3 or v2)."""
    for name in ("zarr.json", ".zattrs"):
        if name in listing:
            try:
                meta = json.loads((root / name).read_bytes())
            except ValueError:
                return None
            attrs = meta.get("attributes", {}) if name == "zarr.json" else meta
            value = attrs.get("encoding-type") if isinstance(attrs, dict) else None
            return value if isinstance(value, str) else None
    return None


def _record_url(store: Path, url: str) -> None:
    """The slice step's provenance names the URL it was written to, not the staging directory."""
    import numpy as np
    import zarr

    group: Any = zarr.open_group(str(store), mode="r+")
    key = f"uns/{PROVENANCE_KEY}"
    if key not in group:
        return
    steps = json.loads(str(group[key][()]))
    config = steps[-1].get("config") if steps and isinstance(steps[-1], dict) else None
    if isinstance(config, dict) and "out" in config:
        config["out"] = url
        group[key][()] = np.array(steps_json(steps), dtype=group[key].dtype)


def _upload(root: RemoteRoot, local: Path) -> None:
    """The marker; the old store's root metadata, then its other objects, removed; the new files,
    the root metadata last; the marker removed."""
    fs = root.fs
    record = {"format": "atlasprep-slice-upload", "atlasprep_version": __version__}
    with remote_errors(str(root)):
        fs.pipe_file((root / UPLOAD_MARKER).path, (json.dumps(record) + "\n").encode())
        old = [name for name in root.listing() if name != UPLOAD_MARKER]
        old.sort(key=lambda name: name not in ZARR_ROOT_META)  # the old group disappears first
        if old:
            fs.rm([(root / name).path for name in old])
        files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
        body = [name for name in files if name not in ZARR_ROOT_META]
        head = [name for name in files if name in ZARR_ROOT_META]
        for part in (body, head):
            if part:
                fs.put([str(local / name) for name in part], [(root / name).path for name in part])
        fs.rm((root / UPLOAD_MARKER).path)
    log.info("uploaded %d files to %s", len(files), root)
