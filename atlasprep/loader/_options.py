"""The options of a :class:`~atlasprep.loader.ShardDataset`, checked before any shard is read
(ranks, world size and ``even``: :func:`atlasprep.loader._consumers.check_consumers`)."""

from __future__ import annotations

from typing import Any

from atlasprep.errors import UsageError

__all__ = ["SAMPLED", "_check_options", "check_fingerprint"]

# what a state saved under sampling records besides the uniform loader's fingerprint
SAMPLED = ("sampling", "batch_plan", "num_samples", "labels")


def _check_options(seed: int, buffer_size: int, batch_size: int | None, pad_to: int | None) -> None:
    if seed < 0:
        raise UsageError(f"seed must be non-negative, not {seed}")
    if buffer_size < 0:
        raise UsageError(f"buffer_size must be non-negative, not {buffer_size}")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"batch_size must be positive, not {batch_size}")
    if pad_to is not None and pad_to < 1:
        raise UsageError(f"pad_to must be positive, not {pad_to}")


def check_fingerprint(mine: dict[str, Any], state: dict[str, Any], also: tuple[str, ...] = ()) -> None:
    """A saved state fits a loader configured as when it was saved (the store may have moved);
    the keys in ``also`` count where the state has them even if ``mine`` has not."""
    keys = [*mine, *(k for k in also if k in state and k not in mine)]
    differs = [k for k in keys if k != "store" and state.get(k) != mine.get(k)]
    if differs:
        detail = ", ".join(f"{k}: saved {state.get(k)!r}, now {mine.get(k)!r}" for k in differs)
        raise UsageError(f"this state was saved by a differently configured loader ({detail})")
