"""`atlasprep run`: thin CLI over :mod:`atlasprep.run`."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from atlasprep._names import Executor
from atlasprep.cli._app import command, err_console, out_console
from atlasprep.cli._progress import CellProgress
from atlasprep.errors import UsageError

if TYPE_CHECKING:
    from atlasprep.run.plan import Plan
    from atlasprep.sources import ProgressCallback


@command(
    "run",
    help=(
        "Run a whole pipeline from a TOML recipe (recipes/): source and filters, optional harmonize, "
        "slice and tokenize stages, splits and store format. Each stage resumes where it stopped; the "
        "resolved recipe, with the Census build, ontology releases, schema and atlasprep version "
        "pinned, is written next to the outputs (recipe.resolved.json).\n\n"
        "Examples:\n\n"
        "  atlasprep run recipes/demo.toml\n\n"
        "  atlasprep run recipes/lung_immune.toml --dry-run\n\n"
        "  atlasprep run recipes/demo.toml --set tokenize.max_len=1024 --out runs/demo-1k\n\n"
        "  atlasprep run recipes/liver_kidney_stream.toml --executor dask --workers 2"
    ),
)
def run_command(
    recipe: Path = typer.Argument(..., help="A recipe file (TOML)."),
    overrides: list[str] = typer.Option([], "--set", help="TABLE.KEY=VALUE, e.g. tokenize.max_len=1024."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output directory [default: the recipe's]."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the recipe and show the plan; run nothing."),
    executor: Executor = typer.Option(
        Executor.local, "--executor", help="local, or dask (tokenize's encode pass on a Dask cluster)."
    ),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Dask scheduler address (a cluster)."),
    workers: int | None = typer.Option(None, "--workers", help="Dask: start a LocalCluster of N workers."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan or the resolved recipe as JSON."),
) -> None:
    from atlasprep.run import DaskRunner, load_recipe, plan_recipe, run_recipe

    if executor == "local" and (scheduler or workers):
        raise UsageError("--scheduler and --workers need --executor dask")
    # every check of a run before anything is opened or written (the runner starts nothing
    # yet): a dry run makes them all too
    runner = DaskRunner(scheduler=scheduler, workers=workers) if executor == "dask" else None
    plan = plan_recipe(load_recipe(recipe, tuple(overrides), out))
    if dry_run:
        _show_plan(plan, as_json)
        return
    bars: list[CellProgress] = []

    def progress(stage: str) -> ProgressCallback:
        bar = CellProgress(stage, unit="steps" if stage == "train" else "cells")
        bars.append(bar)
        return bar.__enter__()

    try:
        with runner if runner is not None else nullcontext():
            resolved = run_recipe(plan, runner=runner, progress=progress, announce=_announce(bars))
    finally:
        for bar in bars:
            bar.__exit__(None, None, None)
    if as_json:
        typer.echo(json.dumps(resolved, indent=2, default=str))
    else:
        typer.echo(f"{plan.recipe.name}: done; resolved recipe in {plan.recipe.out / 'recipe.resolved.json'}")


def _announce(bars: list[CellProgress]) -> Any:
    def announce(message: str) -> None:
        for bar in bars:  # close the previous stage's bar before the next line
            bar.__exit__(None, None, None)
        bars.clear()
        err_console.print(message)

    return announce


def _show_plan(plan: Plan, as_json: bool) -> None:
    from atlasprep.run.pipeline import count_cells

    counts = {stage.name: count_cells(stage) for stage in plan.stages}
    if as_json:
        payload = plan.to_json()
        for stage in payload["stages"]:
            stage["n_cells"] = counts[stage["stage"]]
        typer.echo(json.dumps(payload, indent=2, default=str))
        return
    table = Table(title=f"{plan.recipe.name}: {plan.recipe.path} → {plan.recipe.out}", show_edge=False)
    for column in ("stage", "output", "cells", "inputs"):
        table.add_column(column)
    for stage in plan.stages:
        n = counts[stage.name]
        inputs = ", ".join(f"{p}{'' if p.exists() else ' (missing)'}" for p in stage.inputs) or "-"
        table.add_row(stage.name, str(stage.output), "-" if n is None else f"{n:,}", inputs)
    out_console.print(table)
    pins = plan.to_json()["pins"]
    census = f"census {pins['census']} ({pins['census_build']})" if pins["census"] else "local files"
    out_console.print(
        f"pinned: atlasprep {pins['atlasprep']}, CELLxGENE schema {pins['cellxgene_schema']}, {census}"
    )
