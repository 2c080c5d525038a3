"""Token stores: shuffled, split, checksummed shards of tokenized cells."""

# the format registry first: its implementations import it back (atlasprep.shard.format)
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
