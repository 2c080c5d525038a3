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
from atlasprep.errors import ForeignOutputError, UsageError
from atlasprep.run.plan import Plan, StagePlan, pins, stage_source
from atlasprep.sources import ProgressCallback, open_source, resolve, select
from atlasprep.tokenize.api import JobRunner, TokenizeConfig, check_columns

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
        _check_owned(stage, stamp, out)
        # stamped before it starts: a crash after the output is in place leaves a stamp that
        # lets the re-run replace it, though it is not done
        write_json_atomic(stamp, {"fingerprint": stage.fingerprint, "running": True})
        if announce:
            announce(f"{stage.name}: running → {stage.output}")
        callback = progress(stage.name) if progress else None
        result = stage.stage.run(runner, callback)
        results[stage.name] = result
        record = {"fingerprint": stage.fingerprint, "result": result, "output": _output_state(stage.output)}
        write_json_atomic(stamp, record)
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
        if isinstance(stage.config, TokenizeConfig):
            check_columns(stage.config, opened)  # as the run checks them, before any pass
        return select(source, opened, resolved=resolved).n_cells
    finally:
        opened.close()


def _done(stage: StagePlan, stamp: Path) -> bool:
    """Whether the stage's stamp matches its config and its output is as the stage left it
    (a file deleted, truncated or rewritten since: redone)."""
    if not stamp.exists() or not stage.output.exists():
        return False
    if stage.name == "tokenize" and not (stage.output / "manifest.json").exists():
        return False
    try:
        record = json.loads(stamp.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return False  # a damaged stamp: the stage is redone, and its stamp rewritten
    if not isinstance(record, dict) or record.get("running"):  # (a stage that never finished)
        return False
    if record.get("fingerprint") != stage.fingerprint:
        return False
    left = record.get("output")  # (stamps before this release have none)
    return left is None or left == _output_state(stage.output)


def _check_owned(stage: StagePlan, stamp: Path, out: Path) -> None:
    """Refuse to run a stage over an output that no run of a recipe wrote (no stamp): a stage
    replaces its output (``overwrite``). A token store is left to tokenize, which resumes its
    own and refuses any other directory."""
    if stage.name == "tokenize" or stamp.exists():
        return
    if stage.output.exists() or stage.output.is_symlink():
        raise ForeignOutputError(
            f"{stage.name}: {stage.output} exists and no run of a recipe wrote it (there is no "
            f"{stamp.relative_to(out)}); move it away, or set another out"
        )


def _output_state(path: Path) -> list[int]:
    """What a stage left at ``path``: its files' count, total size and latest mtime (ns)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    stats = [p.stat() for p in files]
    return [len(stats), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)]
