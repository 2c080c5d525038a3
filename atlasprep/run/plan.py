"""A recipe as a plan: each stage's library config, built and checked before anything runs.

``[source]`` and ``[filter]`` become one :class:`~atlasprep.sources.SourceSpec`; each stage
reads what the stage before it wrote (harmonize → align → slice → tokenize): after a
``[slice]``, tokenize reads the slice, whose cells and genes the spec already selected.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from atlasprep import __version__
from atlasprep._io import inside
from atlasprep.errors import AmbiguousTermError, UnknownTermError, UsageError
from atlasprep.harmonize.api import HarmonizeConfig
from atlasprep.ontology import SCHEMA_VERSION, ontology_versions
from atlasprep.reference.genes import GENE_ANNOTATIONS
from atlasprep.run.recipe import FLAG_KEYS, Recipe, RecipeError
from atlasprep.run.stages import (
    BarcodesStage,
    CcfStage,
    HarmonizeStage,
    SliceStage,
    Stage,
    TokenizeStage,
    TrainStage,
)
from atlasprep.shard.sizes import parse_size
from atlasprep.slice.api import SliceConfig
from atlasprep.sources import CellFilter, SourceSpec, read_gene_list, resolve
from atlasprep.sources._paths import split_modality
from atlasprep.tokenize.api import TokenizeConfig
from atlasprep.train.masked import TrainConfig

__all__ = ["Plan", "StagePlan", "pins", "plan_recipe", "stage_source"]

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
_RECIPE_KEYS = {
    "shard_bytes": "shard_size",
    "primary_only": "all_data",
    "segment_max_len": "max_len",
    **{field: key for keys in FLAG_KEYS.values() for key, field in keys.items() if key != "no_shuffle"},
}
_FIELD = re.compile(rf"(?<![\w-])({'|'.join(map(re.escape, _RECIPE_KEYS))}) = ")
_SPEC_FIELDS = frozenset(f.name for f in dataclasses.fields(SourceSpec))
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class StagePlan:
    name: str
    stage: Stage  # what runs, with the library config it runs with
    output: Path
    inputs: tuple[Path, ...] = ()  # local files it reads

    @property
    def config(self) -> Any:  # each stage's own config type
        return self.stage.config

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
    source = _source(recipe)
    stages: list[StagePlan] = []
    if recipe.has("harmonize"):
        stages.append(_harmonize_stage(recipe, source))
        source = _reads(source, stages[-1].output)
    if recipe.has("align.ccf"):
        stages.append(_ccf_stage(recipe, source, stages))
        source = _reads(source, stages[-1].output)
    if recipe.has("align.barcodes"):
        stages.append(_barcodes_stage(recipe, stages))
        # later stages read the RNA; tokenize adds the paired modalities
        source = _reads(source, f"{stages[-1].output}:rna")
    if (recipe.has("slice") or recipe.has("tokenize")) and not (
        source.census or source.census_uri or source.inputs
    ):
        raise RecipeError(
            f"{recipe.path}: [source] needs census, census_uri or input (where the cells come from)"
        )
    if recipe.has("slice") or recipe.has("tokenize"):
        _resolve_terms(recipe, source)
    if recipe.has("slice"):
        stage = _slice_stage(recipe, source, stages)
        stages.append(stage)
        # the slice applied the filter, sampling and genes: tokenize reads exactly its cells
        source = _read_back(stage.output, source)
    if recipe.has("tokenize"):
        stages.append(_tokenize_stage(recipe, source, sliced=recipe.has("slice")))
    if recipe.has("train"):
        stages.append(_train_stage(recipe, stages))
    return Plan(recipe=recipe, stages=tuple(stages))


def _train_stage(recipe: Recipe, stages: list[StagePlan]) -> StagePlan:
    """[train] on the store [tokenize] builds: the model and its record in ``model/``."""
    if not stages or stages[-1].name != "tokenize":
        raise RecipeError(f"{recipe.path}: [train] trains on the store [tokenize] builds; add a [tokenize]")
    store = stages[-1].output
    t = recipe.table("train")
    config = _built(recipe, "[train]", lambda: TrainConfig(store=store, out=recipe.out / "model", **t))
    return StagePlan(
        name="train", stage=TrainStage(config=config), output=recipe.out / "model", inputs=(store,)
    )


def _reads(source: SourceSpec, written: Path | str) -> SourceSpec:
    """``source``'s filter and sampling, applied to what an earlier stage wrote."""
    return replace(source, inputs=(str(written),), census=None, census_uri=None, layer=None)


def _harmonize_stage(recipe: Recipe, source: SourceSpec) -> StagePlan:
    """harmonize reads [source]'s one file whole; [filter] and the sampling apply to what it
    writes (the labels are ontology terms only after it)."""
    if len(source.inputs) != 1:
        raise RecipeError(f"{recipe.path}: [harmonize] needs exactly one file in [source] input")
    h = recipe.table("harmonize")
    if h.get("mapping") is not None:
        _require(recipe, "[harmonize] mapping", h["mapping"])
    whole = SourceSpec(
        inputs=source.inputs,
        layer=h.pop("counts_layer", source.layer),  # the stages after it read its X
        filter=CellFilter(primary_only=False),
        batch_size=source.batch_size,
    )
    config = _built(
        recipe,
        "[harmonize]",
        lambda: HarmonizeConfig(
            source=whole,
            out=recipe.out / "harmonized.h5ad",
            maps=tuple((column, field) for column, field in h.pop("map", {}).items()),
            sets=tuple((field, value) for field, value in h.pop("set", {}).items()),
            report=recipe.out / "harmonize.report.json",
            overwrite=True,
            **h,
        ),
    )
    return StagePlan(
        name="harmonize", stage=HarmonizeStage(config=config), output=config.out, inputs=(config.input,)
    )


def _ccf_stage(recipe: Recipe, source: SourceSpec, stages: list[StagePlan]) -> StagePlan:
    ccf = recipe.table("align.ccf")
    if ccf.get("spatial") is None:
        if not source.inputs:
            raise RecipeError(f"{recipe.path}: [align.ccf] needs spatial (or one file in [source] input)")
        ccf["spatial"] = Path(source.inputs[0])
    _require_all(recipe, "align.ccf", ccf, stages)
    registered = recipe.out / "registered.h5ad"
    step = CcfStage(config={**ccf, "out": registered, "overwrite": True})
    return StagePlan(name="align.ccf", stage=step, output=registered, inputs=_paths(ccf))


def _barcodes_stage(recipe: Recipe, stages: list[StagePlan]) -> StagePlan:
    barcodes = {
        k: _local(recipe, v) if k in ("rna", "atac", "protein") and v else v
        for k, v in recipe.table("align.barcodes").items()
    }
    _require_all(recipe, "align.barcodes", barcodes, stages)
    aligned = recipe.out / "aligned.h5mu"
    step = BarcodesStage(config={**barcodes, "out": aligned, "overwrite": True})
    return StagePlan(name="align.barcodes", stage=step, output=aligned, inputs=_paths(barcodes))


def _slice_stage(recipe: Recipe, source: SourceSpec, stages: list[StagePlan]) -> StagePlan:
    """The slice stage: [source] and [filter], with [slice]'s own sampling keys, into [slice] out."""
    out = recipe.out
    s = recipe.table("slice")
    target = inside(out, s.pop("out", "slice.h5ad"), what=f"{recipe.path} [slice] out")
    taken = {stage.output for stage in stages} | {out / "tokens", out / "recipe.resolved.json"}
    if target in taken or out / ".stages" in (target, *target.parents):
        raise RecipeError(
            f"{recipe.path}: [slice] out = {str(target.relative_to(out))!r}: another stage writes "
            "there; choose another name"
        )
    sampling = {k: s.pop(k) for k in list(s) if k in _SPEC_FIELDS}
    config = _built(
        recipe,
        "[slice]",
        lambda: SliceConfig(source=replace(source, **sampling), out=target, overwrite=True, **s),
    )
    return StagePlan(
        name="slice", stage=SliceStage(config=config), output=target, inputs=source.local_files()
    )


def _read_back(written: Path, source: SourceSpec) -> SourceSpec:
    """The spec that reads a slice an earlier stage wrote: every cell and gene of it, as it is."""
    return SourceSpec(
        inputs=(str(written),),
        organism=source.organism,
        filter=CellFilter(primary_only=False),  # the slice kept the cells its filter asked for
        batch_size=source.batch_size,
    )


def _tokenize_stage(recipe: Recipe, source: SourceSpec, *, sliced: bool) -> StagePlan:
    t = recipe.table("tokenize")
    if sliced and (t.get("modalities") or t.get("targets")):
        raise RecipeError(
            f"{recipe.path}: [tokenize] modalities/targets read the aligned MuData, which a [slice] "
            "(an AnnData of the RNA) does not hold; drop the [slice], or the modalities"
        )
    shard_size = t.pop("shard_size", None)
    shard_bytes = _bytes(recipe, shard_size) if shard_size else None
    config = _built(
        recipe,
        "[tokenize]",
        lambda: TokenizeConfig(source=source, out=recipe.out / "tokens", shard_bytes=shard_bytes, **t),
    )
    return StagePlan(
        name="tokenize", stage=TokenizeStage(config=config), output=config.out, inputs=source.local_files()
    )


def pins(stages: tuple[StagePlan, ...], results: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every version a rerun needs to get the same corpus."""
    census = None
    for stage in stages:
        source = stage_source(stage)
        if source is not None and (source.census or source.census_uri):
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


def stage_source(stage: StagePlan) -> SourceSpec | None:
    """The cells a stage reads, where it reads them through a :class:`SourceSpec`."""
    config = stage.config
    return config.source if isinstance(config, TokenizeConfig | SliceConfig | HarmonizeConfig) else None


def _source(recipe: Recipe) -> SourceSpec:
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
        lead="where: ",
    )
    genes = values.pop("genes", None)
    if isinstance(genes, Path):
        _require(recipe, "[source] genes", genes)
        genes = _built(recipe, "[source]", lambda: read_gene_list(genes))
    inputs = tuple(_local(recipe, str(p)) for p in values.pop("inputs", ()))
    for spec in inputs:
        _require(recipe, "[source] input", split_modality(spec)[0])
    census_uri = values.pop("census_uri", None)
    if census_uri and "://" not in census_uri:
        census_uri = _local(recipe, census_uri)
        _require(recipe, "[source] census_uri", Path(census_uri))
    return _built(
        recipe,
        "[source]",
        lambda: SourceSpec(**values, inputs=inputs, census_uri=census_uri, filter=cell_filter, genes=genes),
    )


def _built(recipe: Recipe, where: str, build: Callable[[], T], *, lead: str = "") -> T:
    """``build()``, its refusal (``shard_cells = 0: must be at least 1``) named in the recipe's
    words: the file, the table and the key (``where``: ``[tokenize]``, ``[filter] where:``; a
    message that starts with ``lead``, the field again, loses it)."""
    try:
        return build()
    except RecipeError:
        raise
    except UsageError as exc:
        message = _FIELD.sub(lambda m: f"{_RECIPE_KEYS[m.group(1)]} = ", str(exc)).removeprefix(lead)
        raise RecipeError(f"{recipe.path}: {where} {message}") from None


def _resolve_terms(recipe: Recipe, source: SourceSpec) -> None:
    """The filter's terms resolved (offline, as the stages will): a typo fails now, named by key."""
    try:
        resolve(source)
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
            files.append((key, split_modality(str(value))[0]))
    return files


def _paths(kwargs: dict[str, Any]) -> tuple[Path, ...]:
    return tuple(path for _, path in _path_items(kwargs))


def _bytes(recipe: Recipe, size: str) -> int:
    return parse_size(str(size), option=f"{recipe.path}: [tokenize] shard_size")


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
