"""Token stores: shuffled, split, checksummed shards of tokenized cells."""

from atlasprep.shard.manifest import StoreProblem, read_manifest
from atlasprep.shard.store import (
    StoreSummary,
    inspect_store,
    load_vocab,
    open_store,
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
    "load_vocab",
    "open_store",
    "ragged",
    "read_manifest",
    "read_shard",
    "validate_store",
]
