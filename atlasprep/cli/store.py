"""`atlasprep inspect` and `atlasprep validate` for token stores."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from atlasprep.cli._app import command, err_console
from atlasprep.cli._render import counts_table
from atlasprep.errors import UsageError
from atlasprep.shard import inspect_store, validate_store
from atlasprep.shard.plot import plot_summary
from atlasprep.shard.store import stored_columns

DEFAULT_COMPOSITION = ("cell_type_ontology_term_id", "tissue_ontology_term_id", "dataset_id")


@command(
    "inspect",
    help=(
        "What a token store holds: cells and tokens per split, tokens per cell, and composition by "
        "obs columns (by default cell type, tissue and dataset, where the store keeps them).\n\n"
        "Examples:\n\n  atlasprep inspect store/\n\n"
        "  atlasprep inspect store/ --by cell_type_ontology_term_id --json\n\n"
        "  atlasprep inspect store/ --plot store.png"
    ),
)
def inspect_command(
    store: Path = typer.Argument(..., help="A token store directory."),
    by: list[str] = typer.Option([], "--by", help="Break cells down by this stored column (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    plot: Path | None = typer.Option(None, "--plot", help="Also draw the summary into this PNG file."),
) -> None:
    columns = by or [c for c in DEFAULT_COMPOSITION if c in stored_columns(store)]
    summary = inspect_store(store, columns=columns)
    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise UsageError(f"--plot {plot}: give a .png file name")
        plot_summary(summary, plot, title=str(store))
        err_console.print(f"plot written to {plot}")
    if as_json:
        typer.echo(json.dumps(summary.to_json(), indent=2))
        return
    console = Console()
    table = Table(title=f"{store}: {summary.n_cells:,} cells, {summary.n_tokens:,} tokens", show_edge=False)
    for column in ("split", "cells", "tokens", "shards"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for split, entry in summary.splits.items():
        table.add_row(split, f"{entry['n_cells']:,}", f"{entry['n_tokens']:,}", str(entry["n_shards"]))
    console.print(table)
    length = summary.length
    console.print(
        f"tokens per cell: min {length['min']:.0f}, median {length['median']:.0f}, "
        f"mean {length['mean']:.1f}, max {length['max']:.0f}"
    )
    for column, counts in summary.composition.items():
        console.print(counts_table(column, counts))


@command(
    "validate",
    help=(
        "Check a token store against its manifest: every shard's sha256, cell and token counts, token ids "
        "within the vocabulary, no split leakage. Exit 1 listing each problem.\n\n"
        "Examples:\n\n  atlasprep validate store/"
    ),
)
def validate_command(store: Path = typer.Argument(..., help="A token store directory.")) -> None:
    problems = validate_store(store)
    if problems:
        for problem in problems:
            typer.echo(str(problem))
        err_console.print(f"[bold red]{len(problems)} problem(s)[/] in {store}")
        raise typer.Exit(1)
    typer.echo(f"{store}: valid")
