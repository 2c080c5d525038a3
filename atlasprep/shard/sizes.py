"""Sizes as people write them: ``256MB``, ``1GB``, ``64MiB``."""

from __future__ import annotations

import re

from atlasprep.errors import UsageError

__all__ = ["parse_size"]

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*")


def parse_size(text: str, *, option: str = "shard_size") -> int:
    """Bytes in ``text`` (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024)."""
    match = _SIZE.fullmatch(text)
    unit = match.group(2).upper() if match else ""
    if not match or unit not in _UNITS or float(match.group(1)) * _UNITS[unit] < 1:
        raise UsageError(f"{option} {text!r}: expected a size such as 256MB, 1GB or 64MiB")
    return int(float(match.group(1)) * _UNITS[unit])
