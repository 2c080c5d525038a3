"""Checks of config values, shared by the configs of every stage.

A message names the field, its value and the valid range: ``shard_cells = 0: must be at least
1``; the CLI and the recipe loader turn the field into their own name for it (``--shard-cells``,
``[tokenize] shard_cells``).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable
from pathlib import Path

from atlasprep._remote import is_url
from atlasprep.errors import UsageError

__all__ = [
    "MAX_SEED",
    "as_paths",
    "check_choice",
    "check_fraction",
    "check_int",
    "check_name",
    "check_names",
    "invalid",
]

MAX_SEED = 2**64 - 1  # seeds reach numpy's generators and the bin kernel's uint64 mixing


def invalid(name: str, value: object, rule: str) -> UsageError:
    """The error for a config field ``name`` holding ``value``, which breaks ``rule``."""
    return UsageError(f"{name} = {value!r}: {rule}")


def check_int(name: str, value: object, *, at_least: int, at_most: int | None = None) -> None:
    """``value`` is a whole number (not a bool) in ``at_least`` … ``at_most``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise invalid(name, value, "must be a whole number")
    if int(value) < at_least:
        raise invalid(name, value, f"must be at least {at_least}")
    if at_most is not None and int(value) > at_most:
        raise invalid(name, value, f"must be at most {at_most}")


def check_fraction(name: str, value: object) -> None:
    """``value`` is a finite number in 0 … 1."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= float(value) <= 1:
        raise invalid(name, value, "must be a number between 0 and 1")  # NaN too


def check_choice(name: str, value: object, choices: Iterable[object]) -> None:
    options = tuple(choices)
    if value not in options:
        raise invalid(name, value, f"choose one of {', '.join(map(repr, options))}")


def check_names(name: str, values: object) -> None:
    """``values`` is a tuple of non-empty names (obs columns, modalities), each named once."""
    if not isinstance(values, tuple) or not all(isinstance(v, str) and v.strip() for v in values):
        raise invalid(name, values, "each name must be a non-empty string")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise invalid(name, values, f"{', '.join(repeated)} is named more than once; name each once")


def check_name(name: str, value: object) -> None:
    """``value`` is None or a non-empty name."""
    if value is not None and not (isinstance(value, str) and value.strip()):
        raise invalid(name, value, "must be a non-empty name (or left out)")


def as_paths(config: object, *names: str) -> None:
    r"""The named fields of a frozen config, given as strings (or any path-like), made the
    :class:`~pathlib.Path`\ s the stages read, as Python callers write them; a URL or anything
    else is refused by name (object storage is reached through the command line's URLs)."""
    for name in names:
        value = getattr(config, name)
        if value is None:
            continue
        if isinstance(value, str | os.PathLike) and os.fspath(value).startswith("file:"):
            # (a Path makes file:///x the relative file:/x)
            raise invalid(name, str(value), "a file: URL; give the local path itself")
        if isinstance(value, Path):
            continue
        if is_url(value):  # (the project's one test of a URL)
            raise invalid(name, value, "must be a local path here")
        if not isinstance(value, str | os.PathLike):
            raise invalid(name, value, "must be a path")
        object.__setattr__(config, name, Path(value))
