"""The ``atlasprep`` console script. Ctrl-C while the command line is still starting (importing
typer, the command's module and the library it runs: up to a few seconds on a loaded machine)
ends it as Ctrl-C during a command does, with one line and exit 130, not a traceback; the
command then runs with Python's own handler, which the command line turns into that line."""

from __future__ import annotations

import os
import signal
from types import FrameType

INTERRUPTED_LINE = "interrupted; re-run the same command to finish the job."
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it


def _starting(signum: int, frame: FrameType | None) -> None:
    os.write(2, f"Error: {INTERRUPTED_LINE}\n".encode())
    os._exit(INTERRUPTED)


def starting_handler() -> bool:
    """Whether SIGINT is still start-up's handler (:func:`main` installed it)."""
    return signal.getsignal(signal.SIGINT) is _starting


def main() -> None:
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # (not ignored by the caller)
        signal.signal(signal.SIGINT, _starting)
    from atlasprep.cli._app import main as run

    run()
