"""Token stores: shuffled, split, checksummed shards of tokenized cells.

The names below are imported on first use: the writer pulls in numba's kernels, which a
command's ``--help`` (and a reader of a finished store) need not load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atlasprep.shard.format import FORMATS, ShardFormat, ShardFormatName, ShardReader, format_for, ragged
    from atlasprep.shard.layout import ShardLayout
    from atlasprep.shard.manifest import StoreProblem, read_manifest
    from atlasprep.shard.store import (
        StoreSummary,
        inspect_store,
        load_vocab,
        open_store,
        read_shard,
        validate_store,
    )
    from atlasprep.shard.writer import ShardInfo, ShardWriter

_LAZY = {
    "FORMATS": "format",
    "ShardFormat": "format",
    "ShardFormatName": "format",
    "ShardReader": "format",
    "format_for": "format",
    "ragged": "format",
    "ShardLayout": "layout",
    "StoreProblem": "manifest",
    "read_manifest": "manifest",
    "StoreSummary": "store",
    "inspect_store": "store",
    "load_vocab": "store",
    "open_store": "store",
    "read_shard": "store",
    "validate_store": "store",
    "ShardInfo": "writer",
    "ShardWriter": "writer",
}

__all__ = [
    "FORMATS",
    "ShardFormat",
    "ShardFormatName",
    "ShardInfo",
    "ShardLayout",
    "ShardReader",
    "ShardWriter",
    "StoreProblem",
    "StoreSummary",
    "format_for",
    "inspect_store",
    "load_vocab",
    "open_store",
    "ragged",
    "read_manifest",
    "read_shard",
    "validate_store",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"atlasprep.shard.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
