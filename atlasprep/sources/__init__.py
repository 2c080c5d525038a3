"""Sources of cells: the Census, Census-layout SOMA stores, the demo atlas, AnnData files.

Every source yields bounded :class:`CellBatch` streams over a selection made by a
:class:`CellFilter`, resolved once and compiled per source.
"""

from atlasprep.sources.anndata import AnnDataSource
from atlasprep.sources.base import CellBatch, CellSource, ProgressCallback, SourceInfo
from atlasprep.sources.census import ORGANISMS, census_summary, experiment_name, open_census
from atlasprep.sources.filters import (
    FILTER_COLUMNS,
    CellFilter,
    CompiledFilter,
    ResolvedFilter,
    compile_filter,
    resolve_filter,
    soma_quote,
)
from atlasprep.sources.sampling import sample_positions
from atlasprep.sources.soma import SomaSource, tiledb_config_for_batches

__all__ = [
    "FILTER_COLUMNS",
    "ORGANISMS",
    "AnnDataSource",
    "CellBatch",
    "CellFilter",
    "CellSource",
    "CompiledFilter",
    "ProgressCallback",
    "ResolvedFilter",
    "SomaSource",
    "SourceInfo",
    "census_summary",
    "compile_filter",
    "experiment_name",
    "open_census",
    "resolve_filter",
    "sample_positions",
    "soma_quote",
    "tiledb_config_for_batches",
]
