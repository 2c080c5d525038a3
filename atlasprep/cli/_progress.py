"""A cells-done progress bar on stderr, fed by the library's ``progress(done, total)`` callback."""

from __future__ import annotations

import time
from types import TracebackType

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from atlasprep.cli._app import err_console

__all__ = ["CellProgress"]


class CellProgress:
    """Context manager and callback: ``with CellProgress("slice") as cb: lib(progress=cb)``.

    On a terminal the bar redraws in place; in a log (CI) the final state is printed once.
    """

    def __init__(self, label: str, *, unit: str = "cells") -> None:
        self._bar = Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=err_console.is_terminal,
        )
        self._task: TaskID | None = None
        self._started = 0.0
        self._unit = unit

    def __enter__(self) -> CellProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:  # the bar starts with the first report, so errors print alone
            self._bar.__exit__(kind, exc, tb)
            self._task = None

    def __call__(self, done: int, total: int) -> None:
        if self._task is None:
            self._started = time.perf_counter()
            self._bar.__enter__()
            self._task = self._bar.add_task("work", total=total, rate="")
        elapsed = time.perf_counter() - self._started
        rate = f"{done / elapsed:,.0f} {self._unit}/s" if elapsed > 0 else ""
        self._bar.update(self._task, completed=done, total=total, rate=rate)
