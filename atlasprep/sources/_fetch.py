"""AnnData inputs in object storage (``--input s3://bucket/cells.h5ad``, any fsspec URL).

HDF5 reads a file in many small scattered requests (its B-tree, then each chunk), which over
object storage costs a round trip each; so a URL input is copied once, whole, into atlasprep's
cache (``<cache>/inputs-<hash of the URL>/``), then read as a local file. The copy is reused
while the object's size and ETag (or modification time) are the ones it was copied at, and it
is written beside its place and renamed in, so a killed download never passes for a whole one.
A zarr store (a prefix) is copied the same way. ``atlasprep cache clear`` removes the copies.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from atlasprep._remote import is_url, open_root, remote_errors
from atlasprep.errors import SourceError, UsageError

__all__ = ["split_input", "staged", "staged_inputs"]

_STAMP = "source.json"  # beside the copy: the URL and the object's size and version


def split_input(text: str) -> tuple[str, str | None]:
    """``s3://b/x.h5mu:rna`` → ("s3://b/x.h5mu", "rna"); any other URL → (URL, None)."""
    head, sep, tail = text.rpartition(":")
    if sep and tail and "/" not in tail and head.endswith(".h5mu") and is_url(head):
        return head, tail
    return text, None


def staged(text: str) -> str:
    """``text`` itself when it names a local file; for a URL, its local copy (made now, or
    reused while the object is unchanged), with its ``:modality`` if it had one."""
    url, modality = split_input(text)
    if not is_url(url):
        return text
    local = _copy(url)
    return f"{local}:{modality}" if modality is not None else str(local)


def staged_inputs(inputs: tuple[str, ...]) -> tuple[str, ...]:
    """Every input as :func:`staged` gives it."""
    return tuple(staged(text) for text in inputs)


def _copy(url: str) -> Path:
    from atlasprep._cache import cache_dir, note_written

    root = open_root(url)
    name = Path(root.path).name
    if name in ("", ".", "..") or name.startswith("."):  # the copy stays inside its own folder
        raise UsageError(f"inputs {url}: name an object or a prefix, e.g. s3://bucket/cells.h5ad")
    fs = root.fs
    with remote_errors(url):
        try:
            info = fs.info(root.path)
        except FileNotFoundError:
            raise SourceError(f"inputs {url}: no such object or prefix") from None
        version = _version(fs, root.path, info)
    folder = cache_dir() / f"inputs-{hashlib.sha256(url.encode()).hexdigest()[:16]}"
    local = folder / name
    stamp = {"url": url, **version}
    if local.exists() and _read_stamp(folder) == stamp:
        return local
    folder.mkdir(parents=True, exist_ok=True)
    _remove(folder / _STAMP)  # no stamp while the copy is being replaced
    partial = folder / f".{local.name}.partial"
    _remove(partial)
    with remote_errors(url):
        fs.get(root.path, str(partial), recursive=info.get("type") == "directory")
    _remove(local)
    partial.rename(local)
    (folder / _STAMP).write_text(json.dumps(stamp, sort_keys=True))
    note_written(folder)
    return local


def _version(fs: Any, path: str, info: dict[str, Any]) -> dict[str, Any]:
    """What tells one version of the object from another: its size and ETag or mtime (for a
    prefix, the same of every object under it)."""

    def one(entry: dict[str, Any]) -> list[Any]:
        return [int(entry.get("size") or 0), str(entry.get("ETag") or entry.get("mtime") or "")]

    if info.get("type") != "directory":
        return {"object": one(info)}
    found = fs.find(path, detail=True, withdirs=False)
    return {"objects": {name[len(path) :]: one(entry) for name, entry in sorted(found.items())}}


def _read_stamp(folder: Path) -> dict[str, Any] | None:
    try:
        value = json.loads((folder / _STAMP).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _remove(path: Path) -> None:
    """A copy of ours, file or folder, gone (only inside atlasprep's own inputs folder)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
