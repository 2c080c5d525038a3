"""`slice`: the cells that match a filter, streamed from a source into an AnnData store."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pandas as pd
import scipy.sparse as sp

from atlasprep import __version__
from atlasprep._checks import as_paths, check_names, invalid
from atlasprep._jit import warm_up
from atlasprep.errors import EmptyResultError, OutputExistsError, UsageError
from atlasprep.ontology import SCHEMA_VERSION, ontology_versions
from atlasprep.ontology._parser import release_ontologies
from atlasprep.provenance import PROVENANCE_KEY, hash_ahead, new_step, now, source_inputs, steps_json
from atlasprep.slice._obs import obs_types_of
from atlasprep.slice.writer import AnnDataWriter, StoreFormat, x_dataset_kwargs
from atlasprep.sources import (
    DEFAULT_BATCH_SIZE,
    CellSource,
    CompiledFilter,
    ProgressCallback,
    Selection,
    SourceInfo,
    SourceSpec,
    open_source,
    resolve,
    select,
)
from atlasprep.sources.counts import counts_where

__all__ = ["DEFAULT_BATCH_SIZE", "SliceConfig", "SliceResult", "slice_cells"]

log = logging.getLogger("atlasprep.slice")


@dataclass(frozen=True, slots=True, kw_only=True)
class SliceConfig:
    """Everything `atlasprep slice` is asked: the cells (``source``: where from, filter,
    sampling, genes) and where they go; defaults live here and the CLI reads them."""

    source: SourceSpec = field(default_factory=SourceSpec)
    out: Path | None = None
    dry_run: bool = False
    by: tuple[str, ...] = ()  # obs columns to break the counts down by
    allow_empty: bool = False
    overwrite: bool = False
    compression: str | None = None  # X's codec: gzip or lzf (h5ad), gzip or zstd (zarr, its default)
    obs_columns: tuple[str, ...] | None = None  # the obs columns written (None: every column)

    def __post_init__(self) -> None:
        """Every value checked here, once, before any work (the source's by :class:`SourceSpec`):
        the CLI, recipes and the Python API refuse the same values with the same message."""
        if not isinstance(self.source, SourceSpec):
            raise invalid("source", self.source, "must be a SourceSpec (where the cells come from)")
        as_paths(self, "out")
        check_names("by", self.by)
        if self.obs_columns is not None:
            check_names("obs_columns", self.obs_columns)
        if self.out is not None and self.out.suffix.lstrip(".") not in get_args(StoreFormat):
            raise invalid("out", str(self.out), "the name must end in .h5ad or .zarr")
        if self.out is not None:
            x_dataset_kwargs(self.out, self.compression)  # a codec the format lacks is refused now


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


def slice_cells(config: SliceConfig, progress: ProgressCallback | None = None) -> SliceResult:
    """Resolve the filter, select and sample cells, and stream them to ``config.out``."""
    started = time.perf_counter()
    _check(config)
    warm_up()  # numba's one-off start-up (the COO -> CSR kernels), while terms resolve and obs is read
    spec = config.source
    resolved = resolve(spec)  # first: a bad term fails before anything remote is opened
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
    source = open_source(spec)
    hash_ahead(spec.inputs)  # the provenance record's digests, while the cells are read
    try:
        selection = select(spec, source, resolved=resolved)
        release_ontologies()  # the terms are resolved: their files' memory serves the stream
        positions = selection.positions
        breakdown = {col: _counts(source.obs_values(positions, [col])[col]) for col in config.by}
        var = source.var()
        out_var = var if selection.var_positions is None else _genes_of(var, selection.var_positions, source)
        provenance = _provenance(spec, source.info, selection)
        if len(positions) == 0 and not config.allow_empty:
            raise EmptyResultError(
                f"no cells match {selection.compiled.value_filter() or 'the filter'}; "
                "loosen the filters, or set allow_empty to write an empty slice"
            )
        out = None
        if not config.dry_run and config.out is not None:
            previous, inputs = source_inputs(spec, source, positions)
            provenance[PROVENANCE_KEY] = steps_json([*previous, new_step("slice", config, inputs)])
            out = _write(source, selection, out_var, config, provenance, progress)
    finally:
        source.close()
    return SliceResult(
        n_cells=len(positions),
        n_matched=selection.n_matched,
        n_genes=len(out_var),
        out=out,
        source=source.info,
        compiled=selection.compiled,
        breakdown=breakdown,
        seconds=time.perf_counter() - started,
        provenance=provenance,
    )


def _write(
    source: CellSource,
    selection: Selection,
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
        compression=config.compression,
        obs_types=obs_types_of(source.info),
        index_name=getattr(source, "obs_index_name", None),  # AnnData files: as they name it
    )
    n_cells = selection.n_cells
    try:
        done = 0
        if progress is not None:
            progress(0, n_cells)
        columns = None if config.obs_columns is None else list(config.obs_columns)
        for batch in source.iter_batches(
            selection.positions,
            var_positions=selection.var_positions,
            batch_size=config.source.batch_size,
            obs_columns=columns,
        ):
            obs = batch.obs
            if columns is not None:  # exactly those named, as get_anndata's obs_column_names gives
                obs = obs.select(columns)
            writer.append(batch.cell_ids, obs, batch.X)
            done += batch.n_cells
            del batch, obs  # not held while the next one is awaited: one batch in memory, not two
            if progress is not None:
                progress(done, n_cells)
        provenance["created"] = now()
        steps = provenance.pop(PROVENANCE_KEY)  # beside the flat record: a JSON list of steps
        uns: dict[str, Any] = {"atlasprep": provenance, PROVENANCE_KEY: steps}
        presence = feature_presence(source, selection.var_positions, selection.positions)
        if presence is not None:  # joined files: which genes each measured
            uns[PRESENCE_KEY] = presence
        return writer.finish(uns)
    except BaseException:
        writer.abort()
        raise


PRESENCE_KEY = "feature_presence"


def _genes_of(var: pd.DataFrame, positions: np.ndarray, source: CellSource) -> pd.DataFrame:
    """var's rows at ``positions``; from AnnData files, without the categories no kept gene
    holds, as ``adata[:, genes]`` gives them (``anndata.settings.remove_unused_categories``)."""
    kept = var.iloc[positions]
    if obs_types_of(source.info) != "used":
        return kept
    categorical = [c for c in kept.columns if isinstance(kept[c].dtype, pd.CategoricalDtype)]
    if not categorical:
        return kept
    return kept.assign(**{c: kept[c].cat.remove_unused_categories() for c in categorical})


def feature_presence(
    source: CellSource, var_positions: np.ndarray | None, positions: np.ndarray
) -> dict[str, Any] | None:
    """Which genes each dataset measured: ``{"files": [...], "matrix": datasets × var (CSR, 1
    where measured)}``, for files joined on their genes (each file a dataset), or from the
    Census's ``feature_dataset_presence_matrix`` for the datasets of the selected cells; None
    where every dataset measured every gene."""
    presence = getattr(source, "presence", None)
    if presence is None:
        return None
    files, matrix = presence(positions)
    if var_positions is not None:
        matrix = matrix[:, var_positions]
    if len(files) == 0 or matrix.all():
        return None
    return {"files": np.asarray(files, dtype=object), "matrix": sp.csr_matrix(matrix.astype(np.uint8))}


def _check(config: SliceConfig) -> None:
    """What depends on the file system, checked when the slice starts (values were checked when
    the config was made)."""
    if not config.dry_run:
        if config.out is None:
            raise UsageError("out: required (PATH.h5ad or PATH.zarr), or set dry_run to count the cells")
        if config.out.exists() and not config.overwrite:
            raise OutputExistsError(f"out {config.out} exists; set overwrite to replace it")


def _counts(values: Any) -> dict[str, int]:
    counts = values.astype("string").fillna("<NA>").value_counts()
    return {str(k): int(v) for k, v in counts.items()}


def _provenance(spec: SourceSpec, info: SourceInfo, selection: Selection) -> dict[str, Any]:
    compiled = selection.compiled
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
        "seed": spec.seed,
        "max_cells": spec.max_cells if spec.max_cells is not None else -1,
        "per_group": f"{spec.per_group[0]}={spec.per_group[1]}" if spec.per_group else "",
        "n_genes_asked": len(spec.genes) if spec.genes is not None else -1,  # -1: every gene
        "n_matched": selection.n_matched,
        "n_cells": selection.n_cells,
        "schema_version": SCHEMA_VERSION,
        "ontology_versions": ontology_versions(),
    }
