"""Reading a token store in object storage (``s3://bucket/corpus``, any fsspec URL).

The manifest and the vocabulary are read and checked as locally (:mod:`atlasprep.shard.manifest`,
through :class:`~atlasprep._remote.RemoteRoot`). The shards are checked against one listing of
the store (each present, at the bytes the manifest says; ``verify="sha256"`` streams and hashes
them), and read with range requests:

* an **Arrow** shard (an IPC stream) is read front to back through a read-ahead buffer of
  :data:`~atlasprep._remote.READ_BLOCK` bytes a request, into memory (one shard at a time: the
  loader opens one shard per consumer);
* a **Zarr** shard is opened through zarr's fsspec store: each chunk the reader needs is one
  request, fetched concurrently, and the reader keeps the last chunk it decoded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import pyarrow as pa

import atlasprep.shard.format  # noqa: F401  (first: it imports the readers, which import it)
from atlasprep._remote import RemotePath, RemoteRoot, remote_errors, storage_options
from atlasprep.shard.arrow import ArrowReader
from atlasprep.shard.format import ShardFormatName, ShardReader, format_for
from atlasprep.shard.manifest import BUILD_MARKER, Manifest, ShardEntry, StoreProblem, shard_path
from atlasprep.shard.zarr import ZarrReader

__all__ = [
    "RemoteArrowReader",
    "RemoteZarrReader",
    "check_remote_shards",
    "open_remote_shard",
    "remote_sha256",
    "remote_size",
    "remote_unlisted",
]


class RemoteArrowReader(ArrowReader):
    """An Arrow stream shard in object storage, read sequentially with read-ahead into memory."""

    def __init__(self, path: RemotePath) -> None:
        with path.open_read() as source:
            self.table = pa.ipc.open_stream(source).read_all()


class RemoteZarrReader(ZarrReader):
    """A Zarr shard in object storage: chunks fetched by zarr's fsspec store, as requested."""

    def __init__(self, path: RemotePath) -> None:
        import zarr
        from zarr.storage import FsspecStore

        protocol = path.root.url.partition("://")[0]
        store = FsspecStore.from_url(str(path), storage_options=storage_options(protocol), read_only=True)
        self._attach(zarr.open_group(store=store, mode="r"))


def open_remote_shard(path: RemotePath) -> ShardReader:
    """A shard in object storage, opened by its format (from its name's suffix)."""
    fmt = format_for(Path(path.name))
    with remote_errors(str(path)):
        if fmt.name == ShardFormatName.zarr:
            return RemoteZarrReader(path)
        return RemoteArrowReader(path)


def remote_size(listing: dict[str, int], relative: str) -> int | None:
    """A shard's bytes from a listing: its object's, or the sum of its folder's (Zarr); None when
    nothing of it is there."""
    if relative in listing:
        return listing[relative]
    prefix = relative + "/"
    sizes = [size for name, size in listing.items() if name.startswith(prefix)]
    return sum(sizes) if sizes else None


def remote_sha256(root: RemoteRoot, relative: str, listing: dict[str, int]) -> str:
    """A shard's sha256 as :func:`atlasprep.shard.format.sha256_of` computes it locally: a file's
    bytes, or a folder's files in sorted order, each its relative path, a NUL and its bytes."""
    digest = hashlib.sha256()
    if relative in listing:
        with (root / relative).open_read() as data:
            while block := data.read(1 << 20):
                digest.update(block)
        return digest.hexdigest()
    prefix = relative + "/"
    names = sorted(
        (n[len(prefix) :] for n in listing if n.startswith(prefix)), key=lambda n: PurePosixPath(n).parts
    )
    for name in names:
        digest.update(name.encode() + b"\x00")
        digest.update((root / f"{prefix}{name}").read_bytes())
    return digest.hexdigest()


def check_remote_shards(
    root: RemoteRoot, shards: Sequence[ShardEntry], *, verify: str = "size"
) -> list[StoreProblem]:
    """Each listed shard present at the bytes the manifest says (one listing of the store), and
    with ``verify="sha256"`` the bytes it says too (each shard streamed once)."""
    listing = root.listing()
    problems = []
    for entry in shards:
        relative = shard_path(root, entry["path"]).relative
        n_bytes = remote_size(listing, relative)
        what = None
        if n_bytes is None:
            what = "missing"
        elif n_bytes != entry["n_bytes"]:
            what = f"{n_bytes} bytes, the manifest says {entry['n_bytes']} (the object changed or is damaged)"
        elif verify == "sha256" and remote_sha256(root, relative, listing) != entry["sha256"]:
            what = "sha256 differs from the manifest (the object changed or is damaged)"
        if what:
            problems.append(StoreProblem(where=entry["path"], what=what))
    return problems


def remote_unlisted(root: RemoteRoot, manifest: Manifest) -> list[StoreProblem]:
    """Objects under ``shards/`` that are no listed shard's, and a build's marker left behind."""
    listed = {entry["path"] for entry in manifest.get("shards", [])}
    problems = []
    for name in sorted(root.listing()):
        parts = PurePosixPath(name).parts
        if parts[0] == "shards" and len(parts) > 1 and "/".join(parts[:2]) not in listed:
            problems.append(StoreProblem(where=name, what="not listed in the manifest"))
        elif name == BUILD_MARKER:
            problems.append(StoreProblem(where=name, what="left by an unfinished build"))
    return problems
