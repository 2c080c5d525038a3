"""Token stores: shuffled, split, checksummed shards of tokenized cells."""

from atlasprep.shard.writer import ShardInfo, ShardLayout, ShardWriter, ragged

__all__ = ["ShardInfo", "ShardLayout", "ShardWriter", "ragged"]
