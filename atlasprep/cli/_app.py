"""The typer application and the error boundary between library and shell."""

from __future__ import annotations

import functools
import gc
import importlib
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from atlasprep import __version__
from atlasprep._io import describe_os_error
from atlasprep.errors import AtlasprepError

__all__ = ["app", "command", "err_console", "main", "register_commands"]

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
                _error(str(exc))
                raise typer.Exit(exc.exit_code) from None
            except OSError as exc:  # permission denied, disk full, a damaged file: the user's to fix
                _error(describe_os_error(exc))
                raise typer.Exit(1) from None

        (group or app).command(name, **kwargs)(wrapper)
        return func

    return decorate


def _error(message: str) -> None:
    """One ``Error: …`` line on stderr (a message's own line breaks folded)."""
    line = " ".join(message.split())
    err_console.print(f"[bold red]Error:[/] {escape(line)}", soft_wrap=True)


# Each command's module, imported for its side effect of adding the command to ``app``.
_MODULES = {
    "align": "align",
    "harmonize": "harmonize",
    "run": "run",
    "slice": "slice",
    "inspect": "store",
    "validate": "store",
    "terms": "terms",
    "tokenize": "tokenize",
}


def register_commands(names: list[str] | None = None) -> typer.Typer:
    """Add the named commands (all by default) to ``app`` and return it."""
    for module in dict.fromkeys(_MODULES[n] for n in (names or _MODULES)):
        importlib.import_module(f"atlasprep.cli.{module}")
    return app


def _invoked(argv: list[str]) -> list[str] | None:
    """The command ``argv`` runs, when it names one after the root options; else None (all)."""
    for arg in argv:
        if not arg.startswith("-"):
            return [arg] if arg in _MODULES else None
    return None


def main() -> None:
    """Console-script entry point. Only the invoked command's module is imported (the others
    pull in libraries it does not need, such as the Census client and the ontologies)."""
    # Imported modules are there for good: the cyclic collector need not walk their objects,
    # neither while they load nor again and again during a long run.
    gc.disable()
    register_commands(_invoked(sys.argv[1:]))
    gc.freeze()
    gc.enable()
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("[bold red]Error:[/] interrupted; re-run the same command to finish the job.")
        sys.exit(130)
