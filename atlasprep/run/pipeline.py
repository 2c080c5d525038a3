"""`atlasprep run`: a recipe's stages in order, each resumable, with every version pinned.

Stages: ``harmonize`` (one AnnData input → ``harmonized.h5ad``), ``slice`` (an AnnData slice),
``tokenize`` (the token store ``tokens/``); a later stage reads what the earlier one wrote.
After a stage completes, a stamp (``.stages/<stage>.json``: a hash of the stage's resolved
config) is written; re-running skips a stage whose stamp matches and whose output is there,
and redoes the others (an interrupted tokenize resumes its own store). The resolved recipe,
with every floating version pinned (the Census build, the ontology releases, the CELLxGENE
schema, the gene annotation, atlasprep), is written next to the outputs as
``recipe.resolved.json``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atlasprep._io import write_json_atomic
from atlasprep.errors import UsageError
from atlasprep.run.plan import Plan, StagePlan, pins, stage_source
from atlasprep.sources import ProgressCallback, open_source, resolve, select
from atlasprep.tokenize.api import JobRunner

__all__ = ["count_cells", "run_recipe"]

log = logging.getLogger("atlasprep.run")


def run_recipe(
    plan: Plan,
    *,
    runner: JobRunner | None = None,
    progress: Callable[[str], ProgressCallback | None] | None = None,
    announce: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the plan's stages in order, skipping those already done; returns the resolved recipe."""
    out = plan.recipe.out
    out.mkdir(parents=True, exist_ok=True)
    stamps = out / ".stages"
    stamps.mkdir(exist_ok=True)
    results: dict[str, Any] = {}
    for stage in plan.stages:
        stamp = stamps / f"{stage.name}.json"
        if _done(stage, stamp):
            if announce:
                announce(f"{stage.name}: done already ({stage.output})")
            results[stage.name] = json.loads(stamp.read_text()).get("result", {})
            continue
        missing = [str(p) for p in stage.inputs if not p.exists()]
        if missing:
            raise UsageError(f"{stage.name}: input {', '.join(missing)} does not exist")
        if announce:
            announce(f"{stage.name}: running → {stage.output}")
        callback = progress(stage.name) if progress else None
        result = stage.stage.run(runner, callback)
        results[stage.name] = result
        write_json_atomic(stamp, {"fingerprint": stage.fingerprint, "result": result})
    resolved = {
        "recipe": str(plan.recipe.path),
        "name": plan.recipe.name,
        "description": plan.recipe.description,
        "stages": [s.to_json() for s in plan.stages],
        "pins": pins(plan.stages, results),
    }
    write_json_atomic(out / "recipe.resolved.json", resolved)
    return resolved


def count_cells(stage: StagePlan) -> int | None:
    """Cells a stage would read (dry run), where that needs no network; None otherwise."""
    source = stage_source(stage)
    if source is None:
        return None
    resolved = resolve(source)  # offline: unknown terms fail here
    if any(not p.exists() for p in stage.inputs):
        return None  # an earlier stage writes them
    if source.census is not None and source.census != "demo":
        return None
    opened = open_source(source)
    try:
        return select(source, opened, resolved=resolved).n_cells
    finally:
        opened.close()


def _done(stage: StagePlan, stamp: Path) -> bool:
    if not stamp.exists() or not stage.output.exists():
        return False
    if stage.name == "tokenize" and not (stage.output / "manifest.json").exists():
        return False
    return bool(json.loads(stamp.read_text()).get("fingerprint") == stage.fingerprint)
