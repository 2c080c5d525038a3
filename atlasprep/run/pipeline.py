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

import dataclasses
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from atlasprep import __version__
from atlasprep._io import inside, write_json_atomic
from atlasprep.errors import AmbiguousTermError, UnknownTermError, UsageError
from atlasprep.harmonize.api import HarmonizeConfig, harmonize
from atlasprep.ontology import SCHEMA_VERSION, ontology_versions
from atlasprep.reference.genes import GENE_ANNOTATIONS
from atlasprep.run.recipe import Recipe, RecipeError
from atlasprep.shard.sizes import parse_size
from atlasprep.slice.api import SliceConfig, open_source, slice_cells
from atlasprep.sources import CellFilter, ProgressCallback, experiment_name, resolve_filter
from atlasprep.sources.anndata import split_modality
from atlasprep.tokenize.api import JobRunner, TokenizeConfig, tokenize_cells

__all__ = ["AlignStep", "Plan", "StagePlan", "plan_recipe", "run_recipe"]

log = logging.getLogger("atlasprep.run")

_LIVE = ("stable", "latest")
_PATH_KEYS = (
    "rna",
    "atac",
    "protein",
    "barcode_map",
    "spatial",
    "registration",
    "reference_organ",
    "crosswalk",
)
# config fields a recipe names otherwise
_RECIPE_KEYS = {"shard_bytes": "shard_size", "genes_file": "genes", "primary_only": "all_data"}
_FIELD = re.compile(r"(?<![\w-])(shard_bytes|genes_file|primary_only) = ")
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class StagePlan:
    name: str
    config: Any  # the library config the stage runs
    output: Path
    inputs: tuple[Path, ...] = ()  # local files it reads

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(_jsonable(self.config), sort_keys=True).encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.name,
            "output": str(self.output),
            "inputs": [{"path": str(p), "present": p.exists()} for p in self.inputs],
            "config": _jsonable(self.config),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class AlignStep:
    """An align stage: which function of :mod:`atlasprep.align` and its keyword arguments."""

    function: str  # "barcodes" | "ccf"
    kwargs: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    recipe: Recipe
    stages: tuple[StagePlan, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "recipe": str(self.recipe.path),
            "name": self.recipe.name,
            "out": str(self.recipe.out),
            "stages": [s.to_json() for s in self.stages],
            "pins": pins(self.stages),
        }


def plan_recipe(recipe: Recipe) -> Plan:
    """The stages a recipe asks for, as the library configs they will run with.

    Every config is built here, so every value is checked by the config itself, every file the
    recipe reads must exist and every output stays inside the output directory, before any stage
    runs or any source is opened (``run --dry-run`` makes the same checks as ``run``). A refusal
    is a :class:`RecipeError` naming the recipe file, the table and the key."""
    out = recipe.out
    source = _source(recipe)
    stages: list[StagePlan] = []
    if recipe.has("harmonize"):
        if len(source.inputs) != 1:
            raise RecipeError(f"{recipe.path}: [harmonize] needs exactly one file in [source] inputs")
        h = recipe.table("harmonize")
        if h.get("mapping") is not None:
            _require(recipe, "[harmonize] mapping", h["mapping"])
        config = _built(
            recipe,
            "[harmonize]",
            lambda: HarmonizeConfig(
                input=Path(source.inputs[0]),
                out=out / "harmonized.h5ad",
                maps=tuple((column, field) for column, field in h.pop("map", {}).items()),
                sets=tuple((field, value) for field, value in h.pop("set", {}).items()),
                report=out / "harmonize.report.json",
                batch_size=source.batch_size,
                overwrite=True,
                **h,
            ),
        )
        stages.append(StagePlan(name="harmonize", config=config, output=config.out, inputs=(config.input,)))
        source = replace(source, inputs=(str(config.out),), census=None, census_uri=None, layer=None)
    if recipe.has("align.ccf"):
        ccf = recipe.table("align.ccf")
        if ccf.get("spatial") is None:
            if not source.inputs:
                raise RecipeError(
                    f"{recipe.path}: [align.ccf] needs spatial (or one file in [source] inputs)"
                )
            ccf["spatial"] = Path(source.inputs[0])
        _require_all(recipe, "align.ccf", ccf, stages)
        registered = out / "registered.h5ad"
        step = AlignStep(function="ccf", kwargs={**ccf, "out": registered, "overwrite": True})
        stages.append(StagePlan(name="align.ccf", config=step, output=registered, inputs=_paths(ccf)))
        source = replace(source, inputs=(str(registered),), census=None, census_uri=None, layer=None)
    if recipe.has("align.barcodes"):
        barcodes = {
            k: _local(recipe, v) if k in ("rna", "atac", "protein") and v else v
            for k, v in recipe.table("align.barcodes").items()
        }
        _require_all(recipe, "align.barcodes", barcodes, stages)
        aligned = out / "aligned.h5mu"
        step = AlignStep(function="barcodes", kwargs={**barcodes, "out": aligned, "overwrite": True})
        stages.append(StagePlan(name="align.barcodes", config=step, output=aligned, inputs=_paths(barcodes)))
        rna = f"{aligned}:rna"  # later stages read the RNA; tokenize adds the paired modalities
        source = replace(source, inputs=(rna,), census=None, census_uri=None, layer=None)
    if (recipe.has("slice") or recipe.has("tokenize")) and not (
        source.census or source.census_uri or source.inputs
    ):
        raise RecipeError(
            f"{recipe.path}: [source] needs census, census_uri or inputs (where the cells come from)"
        )
    if recipe.has("slice") or recipe.has("tokenize"):
        _resolve_terms(recipe, source)
    if recipe.has("slice"):
        s = recipe.table("slice")
        target = inside(out, s.pop("out", "slice.h5ad"), what=f"{recipe.path} [slice] out")
        taken = {stage.output for stage in stages} | {out / "tokens", out / "recipe.resolved.json"}
        if target in taken or out / ".stages" in (target, *target.parents):
            raise RecipeError(
                f"{recipe.path}: [slice] out = {str(target.relative_to(out))!r}: another stage writes "
                "there; choose another name"
            )
        config_slice = _built(recipe, "[slice]", lambda: replace(source, **s, out=target, overwrite=True))
        stages.append(StagePlan(name="slice", config=config_slice, output=target, inputs=_files(source)))
    if recipe.has("tokenize"):
        t = recipe.table("tokenize")
        shard_size = t.pop("shard_size", None)
        shard_bytes = _bytes(recipe, shard_size) if shard_size else None
        config_tok = _built(
            recipe,
            "[tokenize]",
            lambda: TokenizeConfig(source=source, out=out / "tokens", shard_bytes=shard_bytes, **t),
        )
        stages.append(
            StagePlan(name="tokenize", config=config_tok, output=config_tok.out, inputs=_files(source))
        )
    return Plan(recipe=recipe, stages=tuple(stages))


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
        result = _run_stage(stage, runner, callback)
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


def pins(stages: tuple[StagePlan, ...], results: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every version a rerun needs to get the same corpus."""
    census = None
    for stage in stages:
        config = stage.config
        source = config.source if isinstance(config, TokenizeConfig) else config
        if isinstance(source, SliceConfig) and (source.census or source.census_uri):
            census = source.census or source.census_uri
    built = None
    for result in (results or {}).values():
        built = result.get("census_version") or built
    if census == "demo":
        from atlasprep.demo import DEMO_VERSION

        built = built or DEMO_VERSION
    return {
        "atlasprep": __version__,
        "cellxgene_schema": SCHEMA_VERSION,
        "ontologies": ontology_versions(),
        "gene_annotations": dict(GENE_ANNOTATIONS),
        "census": census,
        "census_build": built or ("resolved when the run opens the Census" if census in _LIVE else census),
    }


def _run_stage(
    stage: StagePlan, runner: JobRunner | None, progress: ProgressCallback | None
) -> dict[str, Any]:
    if stage.name == "harmonize":
        stage.output.parent.mkdir(parents=True, exist_ok=True)
        report = harmonize(stage.config, progress=progress)
        return {"n_cells": report.n_cells, "unmapped": report.n_unmapped}
    if stage.name.startswith("align."):
        stage.output.parent.mkdir(parents=True, exist_ok=True)
        step: AlignStep = stage.config
        if step.function == "ccf":
            from atlasprep.align.ccf import ccf_command_impl

            summary = ccf_command_impl(**step.kwargs)
            return {"n_cells": summary.n_obs, "cells_in_structures": summary.n_in_structures}
        from atlasprep.align.barcodes import align_barcodes

        aligned = align_barcodes(**step.kwargs)
        return {"n_cells": aligned.n_obs, "match": aligned.to_json()}
    if stage.name == "slice":
        stage.output.parent.mkdir(parents=True, exist_ok=True)
        sliced = slice_cells(stage.config, progress=progress)
        return {"n_cells": sliced.n_cells, **_census_version(sliced.source.to_json())}
    if stage.name == "tokenize":
        config: TokenizeConfig = stage.config
        if (config.out / "manifest.json").exists():
            config = replace(config, overwrite=True)  # done under another recipe: redo it
        result = tokenize_cells(config, progress=progress, runner=runner)
        manifest = result.manifest
        return {
            "n_cells": manifest["n_cells"],
            "n_shards": len(manifest["shards"]),
            **_census_version(manifest["source"]),
        }
    raise AssertionError(stage.name)


def count_cells(stage: StagePlan) -> int | None:
    """Cells a stage would read (dry run), where that needs no network; None otherwise."""
    config = stage.config
    source = config.source if isinstance(config, TokenizeConfig) else config
    if not isinstance(source, SliceConfig):
        return None
    resolved = resolve_filter(source.filter, experiment_name(source.organism))  # offline: unknown terms
    if any(not p.exists() for p in stage.inputs):
        return None  # an earlier stage writes them
    if source.census is not None and source.census != "demo":
        return None
    opened = open_source(source)
    try:
        return len(opened.select(opened.compile(resolved)))
    finally:
        opened.close()


def _done(stage: StagePlan, stamp: Path) -> bool:
    if not stamp.exists() or not stage.output.exists():
        return False
    if stage.name == "tokenize" and not (stage.output / "manifest.json").exists():
        return False
    return bool(json.loads(stamp.read_text()).get("fingerprint") == stage.fingerprint)


def _source(recipe: Recipe) -> SliceConfig:
    """[source] and [filter] as the config every stage reads cells with; the files it names exist."""
    values = recipe.table("source")
    flt = recipe.table("filter")
    all_data = flt.pop("all_data", False)
    where = flt.pop("where", None)
    # the filter is parsed when it is made: a refusal names its key
    _built(recipe, "[filter]", lambda: CellFilter(**flt, primary_only=not all_data))
    cell_filter = _built(
        recipe,
        "[filter] where:",
        lambda: CellFilter(**flt, where=where, primary_only=not all_data),
        flag="--where: ",
    )
    genes = values.pop("genes", None)
    if genes is not None:
        _require(recipe, "[source] genes", genes)
    inputs = tuple(_local(recipe, str(p)) for p in values.pop("inputs", ()))
    for spec in inputs:
        _require(recipe, "[source] inputs", split_modality(spec)[0])
    census_uri = values.pop("census_uri", None)
    if census_uri and "://" not in census_uri:
        census_uri = _local(recipe, census_uri)
        _require(recipe, "[source] census_uri", Path(census_uri))
    return _built(
        recipe,
        "[source]",
        lambda: SliceConfig(
            **values, inputs=inputs, census_uri=census_uri, filter=cell_filter, genes_file=genes
        ),
    )


def _built(recipe: Recipe, where: str, build: Callable[[], T], *, flag: str = "") -> T:
    """``build()``, its refusal (``shard_cells = 0: must be at least 1``) named in the recipe's
    words: the file, the table and the key (``where``: ``[tokenize]``, ``[filter] where:``; a
    message that starts with the CLI's ``flag`` loses it)."""
    try:
        return build()
    except RecipeError:
        raise
    except UsageError as exc:
        message = _FIELD.sub(lambda m: f"{_RECIPE_KEYS[m.group(1)]} = ", str(exc)).removeprefix(flag)
        raise RecipeError(f"{recipe.path}: {where} {message}") from None


def _resolve_terms(recipe: Recipe, source: SliceConfig) -> None:
    """The filter's terms resolved (offline, as the stages will): a typo fails now, named by key."""
    try:
        resolve_filter(source.filter, experiment_name(source.organism))
    except (UnknownTermError, AmbiguousTermError) as exc:
        keys = [k for k, values in source.filter.given().items() if exc.query in values]
        where = f"[filter] {keys[0]} = {exc.query!r}:" if keys else "[filter]"
        raise RecipeError(f"{recipe.path}: {where} {exc}") from None


def _require(recipe: Recipe, key: str, path: Path) -> None:
    """A file or directory the recipe reads: it must be there (``run --dry-run`` says so too)."""
    if not Path(path).exists():
        raise RecipeError(f"{recipe.path}: {key} = {str(path)!r}: no such file or directory")


def _require_all(recipe: Recipe, table: str, kwargs: dict[str, Any], stages: list[StagePlan]) -> None:
    """The files an align step reads, but those an earlier stage writes."""
    written = {stage.output for stage in stages}
    for key, path in _path_items(kwargs):
        if path not in written:
            _require(recipe, f"[{table}] {key}", path)


def _local(recipe: Recipe, path: str) -> str:
    candidate = Path(path).expanduser()
    return str(candidate if candidate.is_absolute() else os.path.normpath(recipe.path.parent / candidate))


def _path_items(kwargs: dict[str, Any]) -> list[tuple[str, Path]]:
    """(key, local file) of each file an align step reads (``file.h5mu:rna`` names file.h5mu)."""
    files = []
    for key, value in kwargs.items():
        if key in _PATH_KEYS and value:
            text = str(value)
            head, _, tail = text.rpartition(":")
            files.append((key, Path(head if head and tail in ("rna", "atac", "prot", "protein") else text)))
    return files


def _paths(kwargs: dict[str, Any]) -> tuple[Path, ...]:
    return tuple(path for _, path in _path_items(kwargs))


def _files(source: SliceConfig) -> tuple[Path, ...]:
    files = [split_modality(p)[0] for p in source.inputs]
    if source.census_uri and "://" not in source.census_uri:
        files.append(Path(source.census_uri))
    return tuple(files)


def _bytes(recipe: Recipe, size: str) -> int:
    return parse_size(str(size), option=f"{recipe.path}: [tokenize] shard_size")


def _census_version(info: dict[str, Any]) -> dict[str, Any]:
    """The dated Census build a source resolved to (SourceInfo.to_json), where it has one."""
    build = info.get("census_build")
    return {"census_version": build} if build else {}


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
