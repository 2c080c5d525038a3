"""`atlasprep cache info|clear`: what atlasprep keeps built between runs, and removing it."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from atlasprep._cache import cache_dir, cache_entries, clear_entry
from atlasprep.cli._app import app, command, err_console, out_console

cache_app = typer.Typer(
    help=(
        "What atlasprep builds once and keeps between runs (the demo atlas, ontology indexes), in "
        "$ATLASPREP_CACHE or the user cache directory.\n\n"
        "Examples:\n\n"
        "  atlasprep cache info\n\n"
        "  atlasprep cache clear"
    ),
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")


@command(
    "info",
    group=cache_app,
    help="List the cache's entries and their sizes.\n\nExamples:\n\n  atlasprep cache info --json",
)
def info_command(as_json: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    entries = cache_entries()
    if as_json:
        doc = {"path": str(cache_dir()), "entries": [{"name": n, "bytes": b} for n, b in entries]}
        typer.echo(json.dumps(doc, indent=2))
        return
    table = Table(title=f"{cache_dir()} ({sum(b for _, b in entries) / 1e6:,.1f} MB)", show_edge=False)
    table.add_column("entry")
    table.add_column("MB", justify="right")
    for name, size in entries:
        table.add_row(name, f"{size / 1e6:,.1f}")
    out_console.print(table)


@command(
    "clear",
    group=cache_app,
    help=(
        "Remove the cache's entries (they are rebuilt when next needed; only what atlasprep put "
        "there is removed).\n\nExamples:\n\n  atlasprep cache clear"
    ),
)
def clear_command() -> None:
    removed = 0
    kept: list[Path] = []
    for name, _ in cache_entries():
        cleared = clear_entry(name)
        removed += cleared.removed
        kept.extend(cleared.kept)
    err_console.print(f"removed {removed / 1e6:,.1f} MB from {cache_dir()}")
    if kept:
        shown = ", ".join(str(p) for p in kept[:3]) + (f" and {len(kept) - 3} more" if len(kept) > 3 else "")
        err_console.print(
            f"kept {len(kept)} file(s) atlasprep has no record of writing: {shown}; remove them yourself "
            "if they are not needed",
            markup=False,
        )
