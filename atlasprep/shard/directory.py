"""The directory of a token store: claimed only when it is empty or atlasprep's own.

A build writes into ``--out`` only when that directory does not exist, is empty, holds a
complete store (replaced with ``overwrite``), or holds a build atlasprep started
(:data:`~atlasprep.shard.manifest.BUILD_MARKER`): the same configuration resumes it; another
starts it afresh, saying so. Anything else — a directory of someone's files, a manifest of
another format, a store with files atlasprep did not write — is refused, naming the path, and
nothing in it is touched. Only the entries atlasprep names (:func:`own_entry`) are deleted.

A build that fails (an error, Ctrl-C) removes what it wrote, and the directory too when it
made it; a build that is killed leaves its marker, and the next run resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from atlasprep import __version__
from atlasprep._io import remove_path, write_json_atomic
from atlasprep.errors import ForeignOutputError, OutputExistsError, UsageError
from atlasprep.shard.manifest import BUILD_FORMAT, BUILD_MARKER, STORE_FORMAT, own_entry

__all__ = ["ClaimedStore", "StoreClaim", "claim_store", "config_digest", "foreign_entries", "plan_claim"]

log = logging.getLogger("atlasprep.shard")


def config_digest(spec: dict[str, Any]) -> str:
    """A fingerprint of a build's configuration (what its store will hold, not where it lives)."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def foreign_entries(directory: Path) -> list[Path]:
    """Paths in ``directory`` that atlasprep did not name (it never deletes or mixes with them)."""
    found = []
    for path in sorted(directory.iterdir()):
        relative = PurePosixPath(path.name)
        top_dir = path.name in ("shards", ".work")
        if not own_entry(relative) or (top_dir and (path.is_symlink() or not path.is_dir())):
            found.append(path)
        elif path.name == "shards" and path.is_dir():
            found += [p for p in sorted(path.iterdir()) if not own_entry(PurePosixPath("shards", p.name))]
    return found


def _kind(directory: Path) -> str:
    """'absent', 'empty', 'building' (our build marker: a build started and not finished, the
    manifest it may hold is stale), 'complete' (a manifest of ours) or 'foreign'."""
    if not directory.exists() and not directory.is_symlink():
        return "absent"
    if directory.is_symlink() or not directory.is_dir():
        return "foreign"
    if not any(directory.iterdir()):
        return "empty"

    def read(name: str) -> bytes | None:
        path = directory / name
        if not path.is_file() or path.is_symlink():
            return None
        try:
            return path.read_bytes()
        except OSError:
            return None

    return record_kind(read)


def record_kind(read: Callable[[str], bytes | None]) -> str:
    """'building' (our build marker), 'complete' (our manifest) or 'foreign', from the store's
    top-level files as ``read`` gives them (None: not there); a local directory and a prefix in
    object storage (:mod:`atlasprep.shard.publish`) are told apart the same way."""
    for name, format_, kind in (
        (BUILD_MARKER, BUILD_FORMAT, "building"),
        ("manifest.json", STORE_FORMAT, "complete"),
    ):
        content = read(name)
        if content is not None:
            try:
                if json.loads(content).get("format") == format_:
                    return kind
            except (ValueError, AttributeError):
                pass
    return "foreign"


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreClaim:
    """What a build will do with its directory (checked before any work; nothing changed yet)."""

    path: Path
    kind: str
    digest: str
    overwrite: bool

    def claim(self) -> ClaimedStore:
        """Make the directory this build's: create it, or clear what atlasprep wrote there. The
        marker is written first and the old manifest goes next, so a run killed half-way leaves a
        directory that the next run recognises and resumes."""
        kind = _kind(self.path)  # again: it may have changed while the source was read
        if kind == "foreign" or (kind == "complete" and not self.overwrite):
            raise ForeignOutputError(f"{self.path} changed while this build was starting; re-run the command")
        created = kind == "absent"
        if created:
            self.path.mkdir(parents=True)
        elif kind == "building":
            marker = _read_marker(self.path)
            if marker is not None and marker.get("config") == self.digest:
                log.warning("%s holds an unfinished store of this build; finishing it", self.path)
            else:
                log.warning(
                    "%s holds an unfinished store built with another configuration; starting it afresh",
                    self.path,
                )
        write_json_atomic(
            self.path / BUILD_MARKER,
            {"format": BUILD_FORMAT, "config": self.digest, "atlasprep_version": __version__},
        )
        if kind in ("complete", "building"):
            remove_path(self.path / "manifest.json")
            _clear_own(self.path, keep=(BUILD_MARKER,))
        return ClaimedStore(path=self.path, created=created)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedStore:
    path: Path
    created: bool

    def finish(self) -> None:
        """The manifest is written: the store is complete, the build marker goes."""
        remove_path(self.path / BUILD_MARKER)

    def abandon(self) -> None:
        """A failed build: remove what it wrote (the directory too when it made it)."""
        with contextlib.suppress(OSError):  # the build's own error is the one to report
            _clear_own(self.path)
            if self.created:
                self.path.rmdir()


def plan_claim(out: Path, spec: dict[str, Any], *, overwrite: bool) -> StoreClaim:
    """Check that a build may write ``out`` (refusing with the reason and the fix); change nothing."""
    kind = _kind(out)
    if kind == "foreign":
        if out.exists() and not out.is_dir():
            raise UsageError(f"out {out} exists and is not a directory; choose a new directory")
        raise ForeignOutputError(
            f"{out} exists and is not an atlasprep token store ({_listing(out)}); atlasprep writes only "
            "into a new or empty directory or a store it made: choose another out directory"
        )
    if kind in ("complete", "building"):
        strangers = foreign_entries(out)
        if strangers:
            raise ForeignOutputError(
                f"{out} holds files atlasprep did not write ({', '.join(str(p) for p in strangers[:3])}"
                f"{' …' if len(strangers) > 3 else ''}); move them out, or choose another out directory"
            )
    if kind == "complete" and not overwrite:
        raise OutputExistsError(f"out {out} is a complete token store; set overwrite to replace it")
    return StoreClaim(path=out, kind=kind, digest=config_digest(spec), overwrite=overwrite)


def claim_store(out: Path, spec: dict[str, Any], *, overwrite: bool) -> ClaimedStore:
    return plan_claim(out, spec, overwrite=overwrite).claim()


def _read_marker(directory: Path) -> dict[str, Any] | None:
    try:
        value = json.loads((directory / BUILD_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _clear_own(directory: Path, *, keep: tuple[str, ...] = ()) -> None:
    """Delete the entries atlasprep names in a store directory (but ``keep``), nothing else."""
    shards = directory / "shards"
    if shards.is_dir() and not shards.is_symlink():
        for path in shards.iterdir():
            if own_entry(PurePosixPath("shards", path.name)):
                remove_path(path)
    for path in sorted(directory.iterdir(), key=lambda p: p.name == BUILD_MARKER):  # the marker last
        if path.name in keep or not own_entry(PurePosixPath(path.name)):
            continue
        if path.name == "shards" and path.is_dir() and not path.is_symlink() and any(path.iterdir()):
            continue
        remove_path(path)


def _listing(directory: Path) -> str:
    if not directory.is_dir():
        return "not a directory"
    names = sorted(p.name for p in directory.iterdir())
    return "it holds " + ", ".join(names[:3]) + (" …" if len(names) > 3 else "")
