"""`slice`: the cells that match a filter, streamed from a source into an AnnData store."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from atlasprep import __version__
from atlasprep.errors import EmptyResultError, OutputExistsError, UsageError
from atlasprep.ontology import SCHEMA_VERSION, ontology_versions
from atlasprep.slice.writer import AnnDataWriter, format_of
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

__all__ = ["DEFAULT_BATCH_SIZE", "SliceConfig", "SliceResult", "open_source", "slice_cells"]

log = logging.getLogger("atlasprep.slice")

DEFAULT_BATCH_SIZE = 4_096


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
        config.out, var=var.drop(columns=["soma_joinid"], errors="ignore"), overwrite=config.overwrite
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
    if config.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if config.max_cells is not None and config.max_cells < 1:
        raise UsageError("--max-cells must be at least 1")
    if config.per_group is not None and config.per_group[1] < 1:
        raise UsageError("--per-group COLUMN=N needs N >= 1")
    if not config.dry_run:
        if config.out is None:
            raise UsageError("--out PATH.h5ad|PATH.zarr is required (or pass --dry-run)")
        format_of(config.out)
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
