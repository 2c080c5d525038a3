"""The ``atlasprep`` command line: a thin typer layer over the library API.

Only this package imports typer or rich. Each command parses its options, builds a config
value, calls one library function and renders the result; errors are translated here.
"""

from __future__ import annotations

from typing import Any

from atlasprep.cli._app import main, register_commands

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    if name == "app":  # the whole command line, every command registered
        return register_commands()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
