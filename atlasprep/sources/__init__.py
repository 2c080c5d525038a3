"""Sources of cells: the Census, Census-layout SOMA stores, the demo atlas, AnnData files.

A :class:`SourceSpec` names where cells come from and which (filter, sampling, genes);
:func:`open_source` opens it and :func:`select` turns it into cell and var positions. Every
source yields bounded :class:`CellBatch` streams over a selection made by a
:class:`CellFilter`, resolved once and compiled per source.
"""

from typing import TYPE_CHECKING, Any

from atlasprep.sources.base import CellBatch, CellSource, ProgressCallback, SourceInfo
from atlasprep.sources.filters import (
    FILTER_COLUMNS,
    CellFilter,
    CompiledFilter,
    ResolvedFilter,
    compile_filter,
    resolve_filter,
    soma_quote,
)
from atlasprep.sources.organisms import ORGANISMS, experiment_name
from atlasprep.sources.sampling import sample_positions
from atlasprep.sources.spec import (
    DEFAULT_BATCH_SIZE,
    SELECTING_FIELDS,
    Selection,
    SourceSpec,
    gene_positions,
    one_input,
    only_genes,
    open_source,
    read_gene_list,
    refuse_fields,
    resolve,
    select,
    whole_file,
)
from atlasprep.sources.where import parse_where

if TYPE_CHECKING:
    from atlasprep.sources.anndata import AnnDataSource
    from atlasprep.sources.census import census_summary, open_census
    from atlasprep.sources.soma import SomaSource, tiledb_config_for_batches

# The SOMA sources load tiledbsoma (and the Census client): imported on first use, so that
# reading AnnData files never pays for them.
_LAZY = {
    "AnnDataSource": "anndata",  # anndata itself takes ~0.5 s to import: not for --help
    "SomaSource": "soma",
    "tiledb_config_for_batches": "soma",
    "census_summary": "census",
    "open_census": "census",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"atlasprep.sources.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "FILTER_COLUMNS",
    "ORGANISMS",
    "SELECTING_FIELDS",
    "AnnDataSource",
    "CellBatch",
    "CellFilter",
    "CellSource",
    "CompiledFilter",
    "ProgressCallback",
    "ResolvedFilter",
    "Selection",
    "SomaSource",
    "SourceInfo",
    "SourceSpec",
    "census_summary",
    "compile_filter",
    "experiment_name",
    "gene_positions",
    "one_input",
    "only_genes",
    "open_census",
    "open_source",
    "parse_where",
    "read_gene_list",
    "refuse_fields",
    "resolve",
    "resolve_filter",
    "sample_positions",
    "select",
    "soma_quote",
    "tiledb_config_for_batches",
    "whole_file",
]
