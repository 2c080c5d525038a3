"""Where atlasprep keeps what it builds once (the demo atlas, ontology indexes, copies of
inputs read from object storage)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import platformdirs

__all__ = ["cache_dir", "cache_entries", "cache_file", "keep_json"]


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
    except OSError:
        pass


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
