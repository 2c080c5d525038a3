"""Token stores: shuffled, split, checksummed shards of tokenized cells."""

from atlasprep.shard.store import (
    StoreProblem,
    StoreSummary,
    inspect_store,
    read_manifest,
    read_shard,
    validate_store,
)
from atlasprep.shard.writer import ShardInfo, ShardLayout, ShardWriter, ragged

__all__ = [
    "ShardInfo",
    "ShardLayout",
    "ShardWriter",
    "StoreProblem",
    "StoreSummary",
    "inspect_store",
    "ragged",
    "read_manifest",
    "read_shard",
    "validate_store",
]
