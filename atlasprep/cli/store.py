"""`atlasprep inspect` for token stores (`atlasprep validate` lives in cli/validate.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from atlasprep.cli._app import command, err_console, out_console
from atlasprep.cli._render import counts_table
from atlasprep.cli._source import InputAlias, one_input
from atlasprep.errors import UsageError

DEFAULT_COMPOSITION = ("cell_type_ontology_term_id", "tissue_ontology_term_id", "dataset_id")


@command(
    "inspect",
    help=(
        "What a token store holds: cells and tokens per split, tokens per cell, and composition by "
        "obs columns (by default cell type, tissue and dataset, where the store keeps them), and how "
        "the splits were made (linked groups, holdouts, stratification). --leaks checks instead that no "
        "value of the given columns is in two splits: each one that is, with its cells per split; exit 1 "
        "when any is (a CI check).\n\n"
        "Examples:\n\n  atlasprep inspect store/\n\n"
        "  atlasprep inspect store/ --by cell_type_ontology_term_id --json\n\n"
        "  atlasprep inspect store/ --plot store.png\n\n"
        "  atlasprep inspect store/ --leaks donor_id,dataset_id"
    ),
)
def inspect_command(
    store: Path | None = typer.Argument(None, help="A token store directory.", show_default=False),
    input_option: InputAlias = None,
    by: list[str] = typer.Option([], "--by", help="Break cells down by this stored column (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    plot: Path | None = typer.Option(
        None, "--plot", help="Also draw the summary into this file (.png, .svg or .pdf)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --plot file."),
    leaks: str | None = typer.Option(
        None, "--leaks", help="Columns, e.g. donor_id,dataset_id: list values in two splits; exit 1 if any."
    ),
    citations: bool = typer.Option(
        False, "--citations", help="The datasets the cells come from and what to cite (Census sources)."
    ),
) -> None:
    store = one_input(store, input_option, "the token store")
    if citations:
        _citations(store, as_json=as_json)
        return
    if leaks is not None:
        _leaks(store, [c.strip() for c in leaks.split(",") if c.strip()], as_json=as_json)
        return
    from atlasprep._io import check_file_output
    from atlasprep.shard import inspect_store
    from atlasprep.shard.plot import PLOT_FORMATS, plot_summary
    from atlasprep.shard.store import stored_columns

    if plot is not None:
        if plot.suffix.lower() not in PLOT_FORMATS:
            raise UsageError(f"--plot {plot}: give a .png, .svg or .pdf file name")
        check_file_output(plot, overwrite=overwrite, field="plot", example="store.png")
    columns = by or [c for c in DEFAULT_COMPOSITION if c in stored_columns(store)]
    summary = inspect_store(store, columns=columns)
    if plot is not None:
        plot_summary(summary, plot, title=str(store))
        err_console.print(f"plot written to {plot}")
    if as_json:
        typer.echo(json.dumps(summary.to_json(), indent=2))
        return
    console = out_console
    table = Table(title=f"{store}: {summary.n_cells:,} cells, {summary.n_tokens:,} tokens", show_edge=False)
    cut_by = f"cut at max_len {summary.max_len:,}" if summary.max_len else "cut at max_len"
    for column in ("split", "cells", "tokens", "shards", cut_by):
        table.add_column(column, justify="right" if column != "split" else "left")
    for split, entry in summary.splits.items():
        cut = summary.truncated.get(split)
        table.add_row(
            split,
            f"{entry['n_cells']:,}",
            f"{entry['n_tokens']:,}",
            str(entry["n_shards"]),
            "-" if cut is None else f"{cut:,} ({cut / max(entry['n_cells'], 1):.0%})",
        )
    console.print(table)
    length = summary.length
    console.print(
        f"tokens per cell: min {length['min']:.0f}, median {length['median']:.0f}, "
        f"mean {length['mean']:.1f}, max {length['max']:.0f}"
    )
    for line in _plan_lines(summary.split_plan):
        console.print(line)
    for column, counts in summary.composition.items():
        console.print(counts_table(column, counts, labels=summary.labels))


def _plan_lines(plan: dict[str, Any]) -> list[str]:
    """How the splits were made, in words (stores before linked splits say less)."""
    lines = []
    if plan.get("columns"):
        lines.append(f"split by: {', '.join(plan['columns'])}")
    if plan.get("components"):
        c = plan["components"]
        lines.append(f"linked groups: {c['n']:,}, the largest {c['largest_share']:.1%} of the cells")
    for rule in plan.get("holdout", []):
        taken = (
            f"{rule['term']} and {rule['n_values'] - 1} descendants"
            if rule["n_values"] > 1
            else rule["query"]
        )
        lines.append(f"held out: {rule['query']} ({taken}; {rule['n_cells']:,} cells)")
    if plan.get("stratify"):
        divergence = ", ".join(f"{k} {v:.4f}" for k, v in plan["stratify"]["divergence"].items())
        lines.append(f"stratified by {plan['stratify']['column']}: divergence from the whole {divergence}")
    lines += [f"[yellow]fraction not met[/] {u}" for u in plan.get("unmet", [])]
    return lines


def _citations(store: Path, *, as_json: bool) -> None:
    """The datasets a store's provenance names (a Census source records them), to cite."""
    from atlasprep.provenance import citations_of
    from atlasprep.shard import read_manifest

    cited = citations_of(read_manifest(store).get("provenance", []))
    if as_json:
        typer.echo(json.dumps(cited, indent=2))
        return
    if not cited:
        out_console.print("no dataset citations recorded (only Census sources carry them)")
        return
    table = Table(title=f"{len(cited)} datasets to cite", show_edge=False)
    for column in ("dataset", "collection DOI", "citation"):
        table.add_column(column)
    for d in cited:
        table.add_row(
            str(d.get("dataset_title") or d.get("dataset_id")),
            str(d.get("collection_doi") or ""),
            str(d.get("citation") or ""),
        )
    out_console.print(table)


def _leaks(store: Path, columns: list[str], *, as_json: bool) -> None:
    from atlasprep.shard.store import find_leaks

    if not columns:
        raise UsageError("--leaks: name the columns to check, e.g. donor_id,dataset_id")
    found = find_leaks(store, columns)
    if as_json:
        typer.echo(
            json.dumps({"store": str(store), "columns": columns, "leaks": [f.to_json() for f in found]})
        )
    else:
        for leak in found:
            typer.echo(str(leak))
    if found:
        err_console.print(
            f"[bold red]{len(found)} value(s)[/] of {', '.join(columns)} in more than one split"
        )
        raise typer.Exit(1)
    typer.echo(f"{store}: no value of {', '.join(columns)} is in two splits", err=as_json)
