"""Where atlasprep keeps what it builds once (the demo atlas, ontology indexes)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """``$ATLASPREP_CACHE`` if set, else the user cache dir (``~/.cache/atlasprep`` on Linux)."""
    env = os.environ.get("ATLASPREP_CACHE")
    path = Path(env) if env else Path(platformdirs.user_cache_dir("atlasprep", appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path
