"""The ``atlasprep`` command line: a thin typer layer over the library API.

Only this package imports typer or rich. Each command parses its options, builds a config
value, calls one library function and renders the result; errors are translated here.
"""

from __future__ import annotations

from atlasprep.cli._app import app, main

__all__ = ["app", "main"]
