"""Where atlasprep keeps what it builds once (the demo atlas, ontology indexes, copies of
inputs read from object storage)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

__all__ = [
    "ClearedEntry",
    "cache_dir",
    "cache_entries",
    "cache_file",
    "clear_entry",
    "keep_json",
    "note_written",
]


def cache_dir() -> Path:
    """``$ATLASPREP_CACHE`` if set, else the user cache dir (``~/.cache/atlasprep`` on Linux)."""
    env = os.environ.get("ATLASPREP_CACHE")
    path = Path(env) if env else Path(platformdirs.user_cache_dir("atlasprep", appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_file(relative: str) -> Path | None:
    """``relative`` in the cache dir; None when no cache dir can be made (what would be kept
    there is then made again each time, never wrong)."""
    try:
        return cache_dir() / relative
    except OSError:
        return None


def keep_json(path: Path, value: Any) -> None:
    """``value`` written to ``path`` in the cache, atomically; a cache that cannot be written
    is left as it is (what it would keep is made again next time)."""
    from atlasprep._io import write_json_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, value)
        note_written(path)
    except OSError:
        pass


def _record(entry: str) -> Path:
    """The list of the files atlasprep wrote into the cache entry ``entry`` (beside it, hidden)."""
    return cache_dir() / f".{entry}.files"


def note_written(path: Path) -> None:
    """Note in its entry's record that atlasprep wrote ``path`` (a file, or every file under a
    directory) in the cache: ``cache clear`` removes only what is noted. Appended in one write,
    so that processes noting files at once do not mix their lines. A path outside the cache
    dir of the moment (``$ATLASPREP_CACHE`` changed since it was chosen) is not noted."""
    root = cache_dir()
    if not path.is_relative_to(root):
        return
    relative = path.relative_to(root)
    files = sorted(p for p in path.rglob("*") if not _folder(p)) if _folder(path) else [path]
    lines = "".join(f"{f.relative_to(root).as_posix()}\n" for f in files).encode()
    fd = os.open(_record(relative.parts[0]), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, lines)
    finally:
        os.close(fd)


# what atlasprep writes into the cache (names it chose); nothing else there is touched
_OURS = ("demo-census-", "ontology", "inputs-")


def cache_entries() -> list[tuple[str, int]]:
    """(name, bytes) of each entry atlasprep made in the cache, largest first."""
    out = []
    for path in cache_dir().iterdir():
        if not path.name.startswith(_OURS):
            continue
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        out.append((path.name, sum(f.stat().st_size for f in files)))
    return sorted(out, key=lambda entry: -entry[1])


@dataclass(frozen=True, slots=True, kw_only=True)
class ClearedEntry:
    """What :func:`clear_entry` removed (bytes) and left (files atlasprep has no record of writing)."""

    removed: int
    kept: tuple[Path, ...]


def clear_entry(name: str) -> ClearedEntry:
    """Remove the files of the cache entry ``name`` that its record notes atlasprep wrote, then
    the folders left empty, then the record; a file not noted (a user's, or the whole entry when
    an older atlasprep made it without a record) is kept. An empty lock file and the temporary
    files of processes that are gone are atlasprep's own."""
    from atlasprep._io import is_stale_temp

    root = cache_dir()
    path = root / name
    record = _record(name)
    try:
        noted = set(record.read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError):
        noted = set()
    tree = _folder(path)
    files = [p for p in path.rglob("*") if not _folder(p)] if tree else [path]  # links: as files
    removed, kept = 0, []
    for file in sorted(files):
        ours = (
            file.relative_to(root).as_posix() in noted
            or is_stale_temp(file.name)
            or (file.parent == root and file.suffix == ".lock" and file.stat().st_size == 0)
        )
        if not ours:
            kept.append(file)
            continue
        size = file.lstat().st_size
        file.unlink()
        removed += size
    if tree:
        for folder in sorted((p for p in path.rglob("*") if _folder(p)), key=lambda p: -len(p.parts)):
            if not any(folder.iterdir()):
                folder.rmdir()
        if not any(path.iterdir()):
            path.rmdir()
    if not kept and record.exists():
        record.unlink()
    return ClearedEntry(removed=removed, kept=tuple(kept))


def _folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()
