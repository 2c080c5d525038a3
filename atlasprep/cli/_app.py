"""The typer application and the error boundary between library and shell."""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from atlasprep import __version__
from atlasprep._console import INTERRUPTED as _INTERRUPTED
from atlasprep._console import INTERRUPTED_LINE, starting_handler
from atlasprep._io import describe_os_error
from atlasprep.cli._messages import field_flags, in_flags, unexpected
from atlasprep.errors import AtlasprepError

__all__ = [
    "app",
    "command",
    "err_console",
    "field_flags",
    "hoist_verbosity",
    "in_flags",
    "main",
    "out_console",
    "register_commands",
]

F = TypeVar("F", bound=Callable[..., Any])

# Results go to stdout; everything a person reads while waiting goes to stderr (silenced by -q);
# errors go to stderr always. Piped output is not wrapped (see ``_for_pipes``).
err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)
_error_console = Console(stderr=True, highlight=False)
PIPE_WIDTH = 200  # a piped table's width (and help's): wide enough that no option name is cut
_VERBOSITY = frozenset({"-q", "--quiet", "-v", "-vv", "-vvv", "--verbose"})

app = typer.Typer(
    name="atlasprep",
    help=(
        "Build training corpora for biology foundation models from cell atlases: "
        "slice the CELLxGENE Census (or AnnData files) by ontology terms, harmonize, "
        "tokenize and shard."
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _no_value_shown_for_flags() -> None:
    """typer 0.29's help shows every option's type, a flag's as ``<bool>``, as if it took a
    value; a flag (``--overwrite``, ``--help``) shows none."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag or self.count else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_no_value_shown_for_flags()


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
    err_console.quiet = quiet  # progress bars, summaries on stderr, logs: only errors remain
    logging.basicConfig(
        level=logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_time=False, show_path=False)],
        force=True,
    )
    logging.getLogger("atlasprep").setLevel(level)


def command(
    name: str, *, group: typer.Typer | None = None, fields: Mapping[str, str] | None = None, **kwargs: Any
) -> Callable[[F], F]:
    """Register a command (on ``group``, else the root) whose library errors become
    ``Error: …`` and the error's exit code, in the command line's words: the library names its
    config fields (``pixel_size_um = 0: …``, ``set overwrite to replace it``), the message names
    the command's flags (``--pixel-size 0: …``, ``pass --overwrite to replace it``). A field is
    a parameter of the command by name, or ``fields`` maps it to one (``{"pixel_size_um":
    "pixel_size"}``) or straight to a flag (``{"shard_bytes": "--shard-size"}``)."""

    def decorate(func: F) -> F:
        flags = field_flags(func, fields or {})

        @functools.wraps(func)
        def wrapper(*args: Any, **kw: Any) -> Any:
            try:
                return func(*args, **kw)
            except AtlasprepError as exc:
                _error(in_flags(str(exc), flags))
                raise typer.Exit(exc.exit_code) from None
            except OSError as exc:  # permission denied, disk full, a damaged file: the user's to fix
                _error(describe_os_error(exc))
                raise typer.Exit(1) from None
            except Exception as exc:
                if _passes_through(exc):
                    raise
                _error(unexpected(exc))
                raise typer.Exit(1) from None

        (group or app).command(name, **kwargs)(wrapper)
        return func

    return decorate


def _passes_through(exc: Exception) -> bool:
    """Whether an exception is not a command's failure to report here: the parser's and typer's
    own (exits, aborts, usage errors, handled in :func:`main`), or any at all under ``-vv``
    (its traceback is then shown)."""
    import click

    debugging = logging.getLogger("atlasprep").isEnabledFor(logging.DEBUG)
    own = (typer.Exit, typer.Abort, click.exceptions.Exit, click.ClickException, click.Abort)
    return debugging or isinstance(exc, own)


def _error(message: str) -> None:
    """One ``Error: …`` line on stderr (a message's own line breaks folded), even with -q."""
    line = " ".join(message.split())
    _error_console.print(f"[bold red]Error:[/] {escape(line)}", soft_wrap=True)


def _for_pipes() -> None:
    """Output that is not a terminal is not hard-wrapped: text lines are written whole, and
    tables and ``--help`` are laid out ``PIPE_WIDTH`` wide (rich would take 80 columns and cut
    option names and filter expressions). typer lays out help ``TERMINAL_WIDTH`` wide, read
    when it loads its help renderer (``typer.rich_utils``, 30 ms of imports that a command run
    does not need): the width goes there, and to the renderer itself if it is loaded already."""
    for console, stream in (
        (out_console, sys.stdout),
        (err_console, sys.stderr),
        (_error_console, sys.stderr),
    ):
        if not stream.isatty():
            console.width = max(console.width, PIPE_WIDTH)
            console.soft_wrap = True
    if not sys.stdout.isatty():
        given = os.environ.get("TERMINAL_WIDTH", "")
        width = max(int(given) if given.isdigit() else 0, PIPE_WIDTH)
        os.environ["TERMINAL_WIDTH"] = str(width)
        rich_utils = sys.modules.get("typer.rich_utils")
        if rich_utils is not None:
            setattr(rich_utils, "MAX_WIDTH", max(getattr(rich_utils, "MAX_WIDTH", None) or 0, width))  # noqa: B010


def hoist_verbosity(argv: list[str]) -> list[str]:
    """``-q``/``-v`` given after the command (``atlasprep slice -q …``) moved before it, where
    the root takes them: both places work for every command. Nothing after ``--`` moves."""
    words = [i for i, a in enumerate(argv) if not a.startswith("-")]
    if not words:
        return argv
    first = words[0]
    end = argv.index("--") if "--" in argv else len(argv)
    moved = [a for a in argv[first:end] if a in _VERBOSITY]
    rest = [a for a in argv[first:end] if a not in _VERBOSITY]
    return [*argv[:first], *moved, *rest, *argv[end:]]


# Each command's module, imported for its side effect of adding the command to ``app``.
_MODULES = {
    "align": "align",
    "harmonize": "harmonize",
    "run": "run",
    "slice": "slice",
    "inspect": "store",
    "validate": "validate",
    "terms": "terms",
    "tokenize": "tokenize",
    "tokenizer": "tokenizer",
    "cache": "cache",
}


_GROUPS = frozenset({"align", "tokenizer", "cache"})  # commands with subcommands

# The library a build command imports as it starts (its function imports it lazily), loaded
# before the collector is switched back on: see _preload.
_PRELOAD = {
    "harmonize": ("atlasprep.harmonize.api",),
    "tokenize": ("atlasprep.tokenize.api",),
    "slice": ("atlasprep.slice",),
    "run": ("atlasprep.run",),
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


def _heap_policy(invoked: list[str] | None) -> None:
    """glibc's malloc set for the command's stage (:mod:`atlasprep._heap`), in this process of
    its own, before any library is imported or thread started: a build (``tokenize``, a
    recipe) reuses its batches' memory, a slice returns each batch's arrays when freed. The
    BLAS of ``tokenize`` and ``slice`` runs on one thread (``OPENBLAS_NUM_THREADS``, unless
    set)."""
    command = (invoked or [""])[0]
    if command in ("tokenize", "slice"):
        # No BLAS call in either: OpenBLAS's threads (numpy's and scipy's) only spin on the other
        # core as each library loads, about 0.2 s of CPU that a 2-core tokenize paid for
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if command in ("tokenize", "run", "slice"):
        from atlasprep import _heap

        if command == "slice":
            _heap.map_large_allocations()
        else:
            _heap.keep_allocations()


# The builds whose AnnData inputs are hashed as the command line starts (see _hash_inputs_early)
_HASHED_EARLY = frozenset({"tokenize", "slice", "harmonize"})


def _hash_inputs_early(invoked: list[str] | None, argv: list[str]) -> None:
    """Start hashing the AnnData files a build names (its provenance record's digests, by
    :mod:`atlasprep._digests`) before its libraries load: hashlib reads and hashes on the other
    core through the 0.7 s of imports, where it used to share both cores with the build (a
    350 MB h5ad takes 0.3 s). Only existing ``.h5ad``/``.h5mu`` files among the arguments, not
    the value of ``--out``; the record asks for each digest by (file, size, mtime), so a file the
    command does not read is hashed for nothing but never recorded."""
    if not invoked or invoked[0] not in _HASHED_EARLY or "--help" in argv:
        return
    from atlasprep import _digests

    for previous, arg in zip(["", *argv], argv, strict=False):
        name, _, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in ("--input", "-i") and value:
            arg = value
        elif arg.startswith("-") or previous in ("--out", "-o"):
            continue
        path = Path(arg)
        if path.suffix in (".h5ad", ".h5mu") and path.is_file():
            _digests.start(path)


def _preload(invoked: list[str] | None, argv: list[str]) -> None:
    """Import the library ``invoked`` will run (``_PRELOAD``; not for ``--help``) while the
    cyclic collector is off, so that ``gc.freeze`` takes its modules' objects too. Imported
    with the collector on, anndata, pandas, numba and the rest made 3-5 full collections, each
    walking every object loaded so far (0.2-0.4 s of a 50,000-cell ``tokenize``); frozen, the
    collections of the run walk only what it makes. An import that fails is left to the
    command, which reports it as its error."""
    if not invoked or "--help" in argv:
        return
    for module in _PRELOAD.get(invoked[0], ()):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def _command_words(argv: list[str]) -> list[str]:
    """The command (and a group's subcommand, ``align barcodes``) that ``argv`` names."""
    words = [a for a in argv if not a.startswith("-")][:2]
    if not words or words[0] not in _MODULES:
        return []
    return words if words[0] in _GROUPS else words[:1]


def main() -> None:
    """Console-script entry point. Only the invoked command's module is imported (the others
    pull in libraries it does not need, such as the Census client and the ontologies)."""
    # Imported modules are there for good: the cyclic collector need not walk their objects,
    # neither while they load nor again and again during a long run.
    gc.disable()
    argv = hoist_verbosity(sys.argv[1:])
    if argv[:1] == ["--version"]:  # before any command module is imported
        print(f"atlasprep {__version__}")
        sys.exit(0)
    _for_pipes()
    invoked = _invoked(argv)
    _heap_policy(invoked)
    _hash_inputs_early(invoked, argv)
    register_commands(invoked)
    _preload(invoked, argv)
    gc.freeze()
    gc.enable()
    if starting_handler():  # started by the console script: Ctrl-C from here is the command's
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = app(args=argv, prog_name="atlasprep", standalone_mode=False)
    except KeyboardInterrupt:  # (outside a command; typer makes one in a command exit code 130)
        _interrupted()
    except typer.Abort:
        _error("aborted.")
        sys.exit(1)
    except Exception as exc:
        # The parser's own refusals (a bad value for a typed option, an unknown option, a
        # missing argument) as the shell contract says: one line, exit 2; they carry their
        # message and exit code (typer raises click's exceptions, which it does not export).
        message, exit_code = getattr(exc, "format_message", None), getattr(exc, "exit_code", None)
        if not callable(message) or not isinstance(exit_code, int):
            raise
        text = message()
        if text:  # (none when the help was asked for by giving no arguments: it is printed)
            where = " ".join(["atlasprep", *_command_words(argv)])
            _error(f"{text} (see {where} --help)")
        _leave(exit_code)
    if code == _INTERRUPTED:  # Ctrl-C in a command: typer's Exit(130)
        _interrupted()
    _leave(code if isinstance(code, int) else 0)


def _interrupted() -> NoReturn:
    """Ctrl-C: one line, and the process ends at once, without the interpreter's teardown (a
    reading thread still inside TileDB could crash it). What the command left unfinished (a
    temporary output, a store's work folder) the re-run sweeps or resumes."""
    _error(INTERRUPTED_LINE)
    _flush()
    os._exit(_INTERRUPTED)


def _leave(code: int) -> NoReturn:
    """End the process with ``code``, skipping the interpreter's teardown. The command's
    outputs are written, closed and renamed by now; what is left is freeing every module's
    objects one by one (numba's compiler, anndata, pandas: 0.3–0.4 s after a tokenize, a tenth
    of a short run). ``atexit`` handlers (logging, a Dask cluster) still run, and the streams
    are flushed. A normal exit is kept where it matters: a thread still running (its work
    would be cut off), or a tracer or profiler attached (coverage, cProfile write at exit)."""
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if others or sys.gettrace() is not None or sys.getprofile() is not None:
        sys.exit(code)
    atexit._run_exitfuncs()
    _flush()
    os._exit(code)


def _flush() -> None:
    """stdout and stderr written out (before ``os._exit``, which does not)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (head), a closed stream
            stream.flush()
