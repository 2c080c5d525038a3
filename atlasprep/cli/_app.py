"""The typer application and the error boundary between library and shell."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from atlasprep import __version__
from atlasprep.errors import AtlasprepError

__all__ = ["app", "command", "err_console", "main"]

F = TypeVar("F", bound=Callable[..., Any])

# Results go to stdout; everything a person reads while waiting goes to stderr.
err_console = Console(stderr=True, highlight=False)

app = typer.Typer(
    name="atlasprep",
    help=(
        "Build training corpora for biology foundation models from cell atlases: "
        "slice the CELLxGENE Census (or AnnData files) by ontology terms, harmonize, "
        "tokenize and shard."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"atlasprep {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: int = typer.Option(
        0, "--verbose", "-v", count=True, help="More log output on stderr (-vv: debug)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors on stderr."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(
        level=logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_time=False, show_path=False)],
        force=True,
    )
    logging.getLogger("atlasprep").setLevel(level)


def command(name: str, *, group: typer.Typer | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Register a command (on ``group``, else the root) whose library errors become
    ``Error: …`` and the error's exit code."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kw: Any) -> Any:
            try:
                return func(*args, **kw)
            except AtlasprepError as exc:
                err_console.print(f"[bold red]Error:[/] {escape(str(exc))}", soft_wrap=True)
                raise typer.Exit(exc.exit_code) from None

        (group or app).command(name, **kwargs)(wrapper)
        return func

    return decorate


def _register() -> None:
    # Imported for their side effect of adding commands to ``app``.
    from atlasprep.cli import align as _align  # noqa: F401
    from atlasprep.cli import harmonize as _harmonize  # noqa: F401
    from atlasprep.cli import run as _run  # noqa: F401
    from atlasprep.cli import slice as _slice  # noqa: F401
    from atlasprep.cli import store as _store  # noqa: F401
    from atlasprep.cli import terms as _terms  # noqa: F401
    from atlasprep.cli import tokenize as _tokenize  # noqa: F401


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("[bold red]Error:[/] interrupted; re-run the same command to finish the job.")
        sys.exit(130)


_register()
