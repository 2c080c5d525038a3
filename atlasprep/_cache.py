"""Where atlasprep keeps what it builds once (the demo atlas, ontology indexes, copies of
inputs read from object storage)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = ["cache_dir", "cache_entries"]


def cache_dir() -> Path:
    """``$ATLASPREP_CACHE`` if set, else the user cache dir (``~/.cache/atlasprep`` on Linux)."""
    env = os.environ.get("ATLASPREP_CACHE")
    path = Path(env) if env else Path(platformdirs.user_cache_dir("atlasprep", appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


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
