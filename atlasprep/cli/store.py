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
from atlasprep.harmonize import Profile
from atlasprep.harmonize.validate import validate_anndata
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
    if plot is not None and plot.suffix.lower() != ".png":
        raise UsageError(f"--plot {plot}: give a .png file name")
    columns = by or [c for c in DEFAULT_COMPOSITION if c in stored_columns(store)]
    summary = inspect_store(store, columns=columns)
    if plot is not None:
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
        "Check a token store or an AnnData slice. A token store (a directory with manifest.json): every "
        "shard's sha256, cell and token counts, token ids within the vocabulary, no split leakage. A slice "
        "(.h5ad/.zarr): the CELLxGENE schema rules a corpus depends on (required obs columns; each "
        "*_ontology_term_id a live term of the right ontology and branch; labels consistent with IDs; one "
        "organism; unique names; var indexed by Ensembl IDs; raw counts integer and non-negative), with "
        "--profile hca the HCA Tier 1 fields, and with --asctb the cell types an ASCT+B table lists for the "
        "tissues. Prints the schema and ontology releases it checks against; exit 1 listing each problem "
        "with its column and how many cells.\n\n"
        "Examples:\n\n  atlasprep validate store/\n\n  atlasprep validate wu2020.cxg.h5ad\n\n"
        "  atlasprep validate heart.h5ad --profile hca --asctb ASCT-B_VH_Heart.csv --json"
    ),
)
def validate_command(
    path: Path = typer.Argument(..., help="A token store directory, or an .h5ad/.zarr slice."),
    profile: Profile = typer.Option(
        Profile.cellxgene, "--profile", help="Slices: cellxgene, or hca (adds HCA Tier 1)."
    ),
    asctb: Path | None = typer.Option(None, "--asctb", help="Slices: an ASCT+B table (CSV) to check with."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    if (path / "manifest.json").exists() or (path.is_dir() and path.suffix != ".zarr"):
        if asctb is not None or profile != "cellxgene":
            raise UsageError("--profile and --asctb check slices, not token stores")
        problems = [str(p) for p in validate_store(path)]
        if as_json:
            typer.echo(json.dumps({"path": str(path), "kind": "token store", "problems": problems}, indent=2))
        else:
            for problem in problems:
                typer.echo(problem)
        _verdict(path, len(problems), 0, as_json=as_json)
        return
    report = validate_anndata(path, profile=profile, asctb=asctb)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, default=str))
    else:
        versions = ", ".join(f"{k} {v}" for k, v in sorted(report.ontology_versions.items()))
        err_console.print(f"checked against CELLxGENE schema {report.schema_version}; {versions}")
        for found in report.problems:
            typer.echo(str(found))
        for warning in report.warnings:
            err_console.print(f"[yellow]warning[/] {warning}")
    _verdict(path, len(report.problems), len(report.warnings), as_json=as_json)


def _verdict(path: Path, n_problems: int, n_warnings: int, *, as_json: bool) -> None:
    """Exit 1 on problems; else say it is valid (on stderr when stdout carries JSON)."""
    if n_problems:
        err_console.print(f"[bold red]{n_problems} problem(s)[/] in {path}")
        raise typer.Exit(1)
    suffix = f" ({n_warnings} warning(s))" if n_warnings else ""
    typer.echo(f"{path}: valid{suffix}", err=as_json)
