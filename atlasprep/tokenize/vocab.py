"""Gene vocabularies and normalization factors as files: Geneformer's JSON dictionaries."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from atlasprep.errors import InputFormatError, UsageError

__all__ = ["load_json_dict"]


def load_json_dict(path: str | Path) -> dict[str, Any]:
    """A JSON object from ``path`` (``.json`` or gzip-compressed ``.json.gz``)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            value = json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise InputFormatError(f"{path}: not a JSON file ({exc})") from None
    if not isinstance(value, dict):
        raise InputFormatError(
            f"{path}: expected a JSON object (gene -> value), found {type(value).__name__}"
        )
    return value
