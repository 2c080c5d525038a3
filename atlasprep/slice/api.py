"""`slice`: the cells that match a filter, streamed from a source into an AnnData store."""

from __future__ import annotations

import datetime as dt
import logging
import numbers
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pandas as pd

from atlasprep import __version__
from atlasprep.errors import EmptyResultError, OutputExistsError, UsageError
from atlasprep.ontology import SCHEMA_VERSION, ontology_versions
from atlasprep.slice.writer import AnnDataWriter, StoreFormat
from atlasprep.sources import (
    AnnDataSource,
    CellFilter,
    CellSource,
    CompiledFilter,
    ProgressCallback,
    SourceInfo,
    experiment_name,
    resolve_filter,
    sample_positions,
)
from atlasprep.sources.counts import counts_where

__all__ = ["DEFAULT_BATCH_SIZE", "SliceConfig", "SliceResult", "open_source", "slice_cells"]

log = logging.getLogger("atlasprep.slice")

DEFAULT_BATCH_SIZE = 4_096
MAX_SEED = 2**64 - 1  # seeds reach numpy's generators and the bin kernel's uint64 mixing


# Checks of config values, shared by the configs of every stage. A message names the field, its
# value and the valid range: "shard_cells = 0: must be at least 1"; the CLI and the recipe
# loader turn the field into their own name for it (--shard-cells, [tokenize] shard_cells).


def invalid(name: str, value: object, rule: str) -> UsageError:
    """The error for a config field ``name`` holding ``value``, which breaks ``rule``."""
    return UsageError(f"{name} = {value!r}: {rule}")


def check_int(name: str, value: object, *, at_least: int, at_most: int | None = None) -> None:
    """``value`` is a whole number (not a bool) in ``at_least`` … ``at_most``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise invalid(name, value, "must be a whole number")
    if int(value) < at_least:
        raise invalid(name, value, f"must be at least {at_least}")
    if at_most is not None and int(value) > at_most:
        raise invalid(name, value, f"must be at most {at_most}")


def check_fraction(name: str, value: object) -> None:
    """``value`` is a finite number in 0 … 1."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= float(value) <= 1:
        raise invalid(name, value, "must be a number between 0 and 1")  # NaN too


def check_choice(name: str, value: object, choices: Iterable[object]) -> None:
    options = tuple(choices)
    if value not in options:
        raise invalid(name, value, f"choose one of {', '.join(map(repr, options))}")


def check_names(name: str, values: object) -> None:
    """``values`` is a tuple of non-empty names (obs columns, modalities)."""
    if not isinstance(values, tuple) or not all(isinstance(v, str) and v.strip() for v in values):
        raise invalid(name, values, "each name must be a non-empty string")


def check_name(name: str, value: object) -> None:
    """``value`` is None or a non-empty name."""
    if value is not None and not (isinstance(value, str) and value.strip()):
        raise invalid(name, value, "must be a non-empty name (or left out)")


@dataclass(frozen=True, slots=True, kw_only=True)
class SliceConfig:
    """Everything `atlasprep slice` is asked; defaults live here and the CLI reads them."""

    census: str | None = None  # "stable", "2025-11-08", "demo"
    census_uri: str | None = None
    inputs: tuple[str, ...] = ()
    organism: str = "Homo sapiens"
    layer: str | None = None  # the counts matrix: SOMA X layer (default raw), AnnData X/raw/layers key
    filter: CellFilter = field(default_factory=CellFilter)
    max_cells: int | None = None
    per_group: tuple[str, int] | None = None  # (obs column, cells per group)
    seed: int = 0
    genes_file: Path | None = None
    out: Path | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    dry_run: bool = False
    by: tuple[str, ...] = ()
    allow_empty: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        """Every value checked here, once, before any work: the CLI, recipes and the Python API
        refuse the same values with the same message."""
        named = [
            f"{k} = {v!r}"
            for k, v in (("census", self.census), ("census_uri", self.census_uri), ("inputs", self.inputs))
            if v
        ]
        if len(named) > 1:
            raise UsageError(f"{' and '.join(named)}: name exactly one source")
        check_name("census", self.census)
        check_name("census_uri", self.census_uri)
        check_names("inputs", self.inputs)
        check_name("layer", self.layer)
        if not isinstance(self.organism, str) or not self.organism.strip():
            raise invalid("organism", self.organism, "name an organism, e.g. 'Homo sapiens'")
        check_int("batch_size", self.batch_size, at_least=1)
        if self.max_cells is not None:
            check_int("max_cells", self.max_cells, at_least=1)
        if self.per_group is not None:
            column, count = self.per_group
            if not (isinstance(column, str) and column.strip()):
                raise invalid("per_group", self.per_group, "name an obs column, e.g. ('cell_type', 500)")
            if not isinstance(count, numbers.Integral) or isinstance(count, bool) or int(count) < 1:
                raise invalid("per_group", self.per_group, "the cells per group must be at least 1")
        check_int("seed", self.seed, at_least=0, at_most=MAX_SEED)
        check_names("by", self.by)
        if self.out is not None and self.out.suffix.lstrip(".") not in get_args(StoreFormat):
            raise invalid("out", str(self.out), "the name must end in .h5ad or .zarr")


@dataclass(frozen=True, slots=True, kw_only=True)
class SliceResult:
    n_cells: int
    n_matched: int  # before sampling
    n_genes: int
    out: Path | None
    source: SourceInfo
    compiled: CompiledFilter
    breakdown: dict[str, dict[str, int]]
    seconds: float
    provenance: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "n_cells": self.n_cells,
            "n_matched": self.n_matched,
            "n_genes": self.n_genes,
            "out": str(self.out) if self.out else None,
            "source": self.source.to_json(),
            "filter": self.compiled.resolved.filter.to_json(),
            "compiled_filter": self.compiled.to_json(),
            "resolved_terms": self.compiled.resolved.to_json(),
            "breakdown": self.breakdown,
            "seconds": round(self.seconds, 3),
        }


def open_source(config: SliceConfig) -> CellSource:
    """The source a config names: the Census/SOMA/demo, or AnnData ``inputs``."""
    named = sum(x is not None for x in (config.census, config.census_uri)) + bool(config.inputs)
    if named != 1:
        raise UsageError("name exactly one source: --census VERSION|demo, --census-uri PATH or --input FILE")
    if config.inputs:
        return AnnDataSource(config.inputs, layer=config.layer)
    from atlasprep.sources.census import open_census
    from atlasprep.sources.soma import tiledb_config_for_batches

    return open_census(
        census=config.census,
        census_uri=config.census_uri,
        organism=config.organism,
        tiledb_config=tiledb_config_for_batches(config.batch_size),
        X_name=config.layer or "raw",
    )


def slice_cells(config: SliceConfig, progress: ProgressCallback | None = None) -> SliceResult:
    """Resolve the filter, select and sample cells, and stream them to ``config.out``."""
    started = time.perf_counter()
    _check(config)
    # resolve first: a bad term fails before anything remote is opened
    resolved = resolve_filter(config.filter, experiment_name(config.organism))
    for name, terms in resolved.terms.items():
        for t in terms:
            log.info(
                "%s: %r -> %s (%s, %s; %d descendants)",
                name,
                t.query,
                t.label,
                t.term_id,
                t.how,
                t.n_descendants,
            )
    source = open_source(config)
    try:
        compiled = source.compile(resolved)
        matched = source.select(compiled)
        positions = _sample(source, matched, config)
        breakdown = {col: _counts(source.obs_values(positions, [col])[col]) for col in config.by}
        var = source.var()
        var_positions = _gene_positions(config.genes_file, var.index) if config.genes_file else None
        out_var = var if var_positions is None else var.iloc[var_positions]
        provenance = _provenance(config, source.info, compiled, len(matched), len(positions))
        if len(positions) == 0 and not config.allow_empty:
            raise EmptyResultError(
                f"no cells match {compiled.value_filter() or 'the filter'}; "
                "loosen the filters, or pass --allow-empty to write an empty slice"
            )
        out = None
        if not config.dry_run and config.out is not None:
            out = _write(source, positions, var_positions, out_var, config, provenance, progress)
    finally:
        source.close()
    return SliceResult(
        n_cells=len(positions),
        n_matched=len(matched),
        n_genes=len(out_var),
        out=out,
        source=source.info,
        compiled=compiled,
        breakdown=breakdown,
        seconds=time.perf_counter() - started,
        provenance=provenance,
    )


def _write(
    source: CellSource,
    positions: np.ndarray,
    var_positions: np.ndarray | None,
    var: pd.DataFrame,
    config: SliceConfig,
    provenance: dict[str, Any],
    progress: ProgressCallback | None,
) -> Path:
    """Stream the cells into the store; on any failure nothing is left behind."""
    assert config.out is not None
    writer = AnnDataWriter(
        config.out,
        var=var.drop(columns=["soma_joinid"], errors="ignore"),
        overwrite=config.overwrite,
        counts=counts_where(source.info),
    )
    try:
        done = 0
        if progress is not None:
            progress(0, len(positions))
        for batch in source.iter_batches(
            positions, var_positions=var_positions, batch_size=config.batch_size
        ):
            writer.append(batch.cell_ids, batch.obs, batch.X)
            done += batch.n_cells
            if progress is not None:
                progress(done, len(positions))
        provenance["created"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        return writer.finish({"atlasprep": provenance})
    except BaseException:
        writer.abort()
        raise


def _check(config: SliceConfig) -> None:
    """What depends on the file system, checked when the slice starts (values were checked when
    the config was made)."""
    if not config.dry_run:
        if config.out is None:
            raise UsageError("--out PATH.h5ad|PATH.zarr is required (or pass --dry-run)")
        if config.out.exists() and not config.overwrite:
            raise OutputExistsError(f"{config.out} exists; pass --overwrite to replace it")


def _sample(source: CellSource, matched: np.ndarray, config: SliceConfig) -> np.ndarray:
    if config.per_group is None and config.max_cells is None:
        return matched
    groups = None
    per_group = None
    if config.per_group is not None:
        column, per_group = config.per_group
        groups = source.obs_values(matched, [column])[column].to_numpy()
    return sample_positions(
        matched, max_cells=config.max_cells, groups=groups, per_group=per_group, seed=config.seed
    )


def _counts(values: Any) -> dict[str, int]:
    counts = values.astype("string").fillna("<NA>").value_counts()
    return {str(k): int(v) for k, v in counts.items()}


def _gene_positions(path: Path, feature_ids: Any) -> np.ndarray:
    if not path.exists():
        raise UsageError(f"--genes {path}: no such file")
    wanted = [
        line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    wanted = [w.split(".")[0] if w.startswith("ENS") else w for w in wanted]  # drop version suffixes
    if not wanted:
        raise UsageError(f"--genes {path}: no gene IDs in the file (one Ensembl ID per line)")
    positions = feature_ids.get_indexer(list(dict.fromkeys(wanted)))
    missing = int((positions < 0).sum())
    if missing == len(positions):
        raise UsageError(
            f"--genes {path}: none of its {len(positions)} IDs is in var (expected Ensembl IDs such as "
            f"{feature_ids[0] if len(feature_ids) else 'ENSG00000141510'})"
        )
    if missing:
        log.warning(
            "--genes: %d of %d IDs are not in this source's var and are skipped", missing, len(positions)
        )
    return np.sort(positions[positions >= 0]).astype(np.int64)


def _provenance(
    config: SliceConfig, info: SourceInfo, compiled: CompiledFilter, n_matched: int, n_cells: int
) -> dict[str, Any]:
    resolved = compiled.resolved
    return {
        "atlasprep_version": __version__,
        "command": "slice",
        "source": info.to_json(),
        "census_build": info.census_build or "",
        "filters_given": {k: list(v) for k, v in resolved.filter.given().items()},
        "exact": resolved.filter.exact,
        "primary_only": resolved.filter.primary_only,
        "where": resolved.filter.where or "",
        "compiled_filter": compiled.value_filter() or "",
        "resolved_terms": {
            name: {t.query: t.term_id for t in terms} for name, terms in resolved.terms.items()
        },
        "seed": config.seed,
        "max_cells": config.max_cells if config.max_cells is not None else -1,
        "per_group": f"{config.per_group[0]}={config.per_group[1]}" if config.per_group else "",
        "genes_file": str(config.genes_file) if config.genes_file else "",
        "n_matched": n_matched,
        "n_cells": n_cells,
        "schema_version": SCHEMA_VERSION,
        "ontology_versions": ontology_versions(),
    }
