"""Writing a token store to object storage: a local store, uploaded, with its manifest last.

The ownership rules are the local ones (:mod:`atlasprep.shard.directory`): a build writes under a
prefix only when nothing is there, or a complete store of atlasprep's (replaced with
``overwrite``), or a build atlasprep started (its :data:`~atlasprep.shard.manifest.BUILD_MARKER`);
a prefix holding any object atlasprep does not name is refused, and only objects it names are
ever deleted.

A build first writes its marker (which names the configuration) and removes the old manifest;
each shard is uploaded whole (a Zarr shard file by file) and then recorded in the marker with its
sha256; the store's small files follow; ``manifest.json`` is written last, and the marker goes.
A build that was killed leaves its marker: the next run of the same configuration lists what is
there and keeps each shard the marker records with the sha256 and the bytes the new plan has,
uploading the rest, so it ends with the same objects as an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from atlasprep import __version__
from atlasprep._remote import RemoteRoot, remote_errors
from atlasprep.errors import ForeignOutputError, OutputExistsError
from atlasprep.shard.directory import config_digest, record_kind
from atlasprep.shard.manifest import BUILD_FORMAT, BUILD_MARKER, Manifest, own_entry
from atlasprep.shard.remote import remote_size

__all__ = ["RemoteBuild", "RemoteClaim", "foreign_objects", "plan_remote_claim"]

log = logging.getLogger("atlasprep.shard")

_MANIFEST = "manifest.json"


def _own_object(relative: str) -> bool:
    """Whether an object under a store's prefix has a name atlasprep gives: its top-level files,
    its shards (a Zarr shard's files inside its folder) and its temporaries."""
    parts = PurePosixPath(relative).parts
    if len(parts) > 2 and parts[0] == "shards":
        return own_entry(PurePosixPath(*parts[:2])) and parts[1].endswith(".zarr")
    if len(parts) > 1 and parts[0] == ".work":
        return True
    return bool(parts) and own_entry(PurePosixPath(*parts))


def foreign_objects(listing: dict[str, int]) -> list[str]:
    """Objects under a prefix that atlasprep did not name (never deleted, never mixed with)."""
    return sorted(name for name in listing if not _own_object(name))


def _kind(root: RemoteRoot, listing: dict[str, int]) -> str:
    """'empty', 'building' (our marker), 'complete' (our manifest) or 'foreign'."""
    if not listing:
        return "empty"
    return record_kind(lambda name: (root / name).read_bytes() if name in listing else None)


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteClaim:
    """What a build will do with its prefix (checked before any work; nothing changed yet)."""

    root: RemoteRoot
    digest: str
    overwrite: bool

    def claim(self) -> RemoteBuild:
        """Make the prefix this build's: its marker first (keeping the shards a killed build of
        the same configuration recorded), then the old manifest goes."""
        listing = self.root.listing()  # again: it may have changed while the store was built
        kind = _kind(self.root, listing)
        if kind == "foreign" or foreign_objects(listing) or (kind == "complete" and not self.overwrite):
            raise ForeignOutputError(f"{self.root} changed while this build was running; re-run the command")
        uploaded: dict[str, str] = {}
        if kind == "building":
            marker = _read_json(self.root, BUILD_MARKER)
            if marker.get("config") == self.digest and isinstance(marker.get("uploaded"), dict):
                uploaded = {str(k): str(v) for k, v in marker["uploaded"].items()}
                log.warning("%s holds an unfinished store of this build; finishing it", self.root)
            else:
                log.warning(
                    "%s holds an unfinished store built with another configuration; starting it afresh",
                    self.root,
                )
        build = RemoteBuild(root=self.root, digest=self.digest, uploaded=uploaded, listing=listing)
        build.write_marker()
        if _MANIFEST in listing:
            build.remove([_MANIFEST])
        return build


def plan_remote_claim(root: RemoteRoot, spec: dict[str, Any], *, overwrite: bool) -> RemoteClaim:
    """Check that a build may write under ``root`` (refusing with the reason and the fix);
    change nothing."""
    root.check_bucket()
    listing = root.listing()
    kind = _kind(root, listing)
    strangers = foreign_objects(listing)
    if kind == "foreign" or strangers:
        shown = ", ".join(strangers[:3]) + (" …" if len(strangers) > 3 else "")
        raise ForeignOutputError(
            f"{root} holds objects atlasprep did not write ({shown}); atlasprep writes only under an "
            "empty prefix or a store it made: move them, or choose another out prefix"
        )
    if kind == "complete" and not overwrite:
        raise OutputExistsError(f"out {root} is a complete token store; set overwrite to replace it")
    return RemoteClaim(root=root, digest=config_digest(spec), overwrite=overwrite)


@dataclass(slots=True, kw_only=True)
class RemoteBuild:
    """A build under way at a prefix: what it has uploaded (path -> sha256), recorded in its marker."""

    root: RemoteRoot
    digest: str
    uploaded: dict[str, str]
    listing: dict[str, int]  # the prefix as the build found it
    kept: int = field(default=0)

    def write_marker(self) -> None:
        record = {
            "format": BUILD_FORMAT,
            "config": self.digest,
            "atlasprep_version": __version__,
            "uploaded": dict(sorted(self.uploaded.items())),
        }
        self._pipe(BUILD_MARKER, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())

    def remove(self, relatives: list[str]) -> None:
        """Delete objects atlasprep names; anything else is refused."""
        strangers = [r for r in relatives if not _own_object(r)]
        if strangers:
            raise ForeignOutputError(
                f"{self.root}: refusing to delete {strangers[0]}, which atlasprep did not write"
            )
        if relatives:
            with remote_errors(str(self.root)):
                self.root.fs.rm([(self.root / r).path for r in relatives])

    def publish(self, local: Path, manifest: Manifest) -> None:
        """Upload the complete local store ``local`` (whose manifest is ``manifest``): the shards
        not already there, its small files, stale objects of ours removed, the manifest last."""
        shards = manifest["shards"]
        for entry in shards:
            relative = entry["path"]
            there = remote_size(self.listing, relative)
            if self.uploaded.get(relative) == entry["sha256"] and there == entry["n_bytes"]:
                self.kept += 1
                continue
            self._put_shard(local, relative)
            self.uploaded[relative] = entry["sha256"]
            self.write_marker()
        if self.kept:
            log.warning("%s: %d of %d shards were already uploaded; kept", self.root, self.kept, len(shards))
        tops = sorted(
            p.name for p in local.iterdir() if p.is_file() and p.name not in (_MANIFEST, BUILD_MARKER)
        )
        for name in tops:
            self._put_file(local / name, name)
        ours = {*tops, *(entry["path"] for entry in shards)}
        self.remove(
            [
                name
                for name in sorted(self.listing)
                if name not in (_MANIFEST, BUILD_MARKER) and _store_entry(name) not in ours
            ]
        )
        self._put_file(local / _MANIFEST, _MANIFEST)  # last: the store is complete
        self.remove([BUILD_MARKER])

    def _put_shard(self, local: Path, relative: str) -> None:
        source = local / relative
        if source.is_dir():  # a Zarr shard: its folder's files, after any left by a killed upload
            prefix = relative + "/"
            self.remove([n for n in sorted(self.listing) if n.startswith(prefix)])
            files = sorted(p for p in source.rglob("*") if p.is_file())
            targets = [(self.root / f"{relative}/{p.relative_to(source).as_posix()}").path for p in files]
            with remote_errors(str(self.root / relative)):
                self.root.fs.put([str(p) for p in files], targets)
        else:
            self._put_file(source, relative)

    def _put_file(self, source: Path, relative: str) -> None:
        with remote_errors(str(self.root / relative)):
            self.root.fs.put_file(str(source), (self.root / relative).path)

    def _pipe(self, relative: str, data: bytes) -> None:
        with remote_errors(str(self.root / relative)):
            self.root.fs.pipe_file((self.root / relative).path, data)


def _store_entry(relative: str) -> str:
    """The store entry an object belongs to: a Zarr shard's folder for its files, else itself."""
    parts = PurePosixPath(relative).parts
    return "/".join(parts[:2]) if len(parts) > 2 and parts[0] == "shards" else relative


def _read_json(root: RemoteRoot, relative: str) -> dict[str, Any]:
    try:
        value = json.loads((root / relative).read_bytes())
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
