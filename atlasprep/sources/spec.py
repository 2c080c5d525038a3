"""Where cells come from and which: one :class:`SourceSpec`, opened by :func:`open_source` and
narrowed by :func:`select`, the same for every stage that reads cells (slice, tokenize, run).

A spec names one source (the Census, a Census-layout SOMA store, the demo atlas, or AnnData
files), a :class:`CellFilter`, the sampling (``per_group`` balanced, then ``max_cells``, with
``seed``) and the genes to keep. :func:`select` is the one place those become cell positions and
var positions; a stage that reads cells takes both, so a slice and a token store made from one
spec hold the same cells and genes.
"""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from atlasprep._checks import MAX_SEED, check_int, check_name, check_names, invalid
from atlasprep.errors import UsageError
from atlasprep.sources._gene_view import GeneView, only_genes
from atlasprep.sources._paths import split_modality
from atlasprep.sources.base import CellSource
from atlasprep.sources.filters import (
    FILTER_COLUMNS,
    CellFilter,
    CompiledFilter,
    ResolvedFilter,
    resolve_filter,
)
from atlasprep.sources.organisms import experiment_name
from atlasprep.sources.sampling import sample_positions
from atlasprep.sources.where import parse_where
from atlasprep.sources.where.mask import where_mask

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "SELECTING_FIELDS",
    "Selection",
    "SourceSpec",
    "gene_positions",
    "one_input",
    "only_genes",
    "open_source",
    "read_gene_list",
    "refuse_fields",
    "resolve",
    "select",
    "whole_file",
]

log = logging.getLogger("atlasprep.sources")

DEFAULT_BATCH_SIZE = 4_096
# the spec's fields that narrow the cells or genes it reads (filter fields are spec.filter's)
SELECTING_FIELDS: tuple[str, ...] = (*FILTER_COLUMNS, "where", "per_group", "max_cells", "genes")
_FILTER_FIELDS = frozenset(("where", *FILTER_COLUMNS))


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceSpec:
    """Where cells come from (exactly one of ``census``, ``census_uri``, ``inputs``) and which:
    ``filter``, then ``per_group`` (up to N cells of each value of an obs column), then
    ``max_cells``, drawn with ``seed``; ``genes`` keeps those var features (Ensembl IDs, a
    version suffix ignored; None keeps every gene). Every value is checked here, once: the CLI,
    recipes and the Python API refuse the same values with the same message."""

    census: str | None = None  # "stable", "2025-11-08", "demo"
    census_uri: str | None = None
    inputs: tuple[str, ...] = ()  # AnnData files; "file.h5mu:rna" picks a MuData modality
    organism: str = "Homo sapiens"
    layer: str | None = None  # the counts matrix: SOMA X layer (default raw), AnnData X/raw/layers key
    filter: CellFilter = field(default_factory=CellFilter)
    per_group: tuple[str, int] | None = None  # (obs column, cells per group)
    max_cells: int | None = None
    genes: tuple[str, ...] | None = None  # feature IDs to keep, in any order (read_gene_list)
    # a filter on var columns, in the --where grammar (the Census's var_value_filter), e.g.
    # "feature_type == 'protein_coding'": the genes kept are those it and ``genes`` both keep
    var_filter: str | None = None
    seed: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE  # cells per read batch
    # several AnnData files measuring different genes: "inner" keeps the genes all measured,
    # "outer" keeps every gene (a file's unmeasured ones read as 0; the presence is recorded);
    # None refuses files whose genes differ, naming the counts
    join: str | None = None

    def __post_init__(self) -> None:
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
        if not isinstance(self.filter, CellFilter):
            raise invalid("filter", self.filter, "must be a CellFilter")
        check_int("batch_size", self.batch_size, at_least=1)
        if self.max_cells is not None:
            check_int("max_cells", self.max_cells, at_least=1)
        if self.per_group is not None:
            _check_per_group(self.per_group)
        if self.genes is not None:
            if not isinstance(self.genes, tuple) or not all(
                isinstance(g, str) and g.strip() for g in self.genes
            ):
                raise UsageError(f"genes = {_shortened(self.genes)}: each gene ID must be a non-empty string")
            if not self.genes:
                raise invalid(
                    "genes", self.genes, "name at least one gene ID (or leave genes out: every gene)"
                )
        check_int("seed", self.seed, at_least=0, at_most=MAX_SEED)
        if self.var_filter is not None:
            _on_var(self.var_filter, parse_where, self.var_filter)  # refused now, naming the token
        if self.join is not None and self.join not in ("inner", "outer"):
            raise invalid("join", self.join, "choose inner or outer")

    @property
    def is_named(self) -> bool:
        """Whether the spec names a source at all (a default spec names none)."""
        return bool(self.census or self.census_uri or self.inputs)

    @property
    def samples(self) -> bool:
        """Whether :func:`select` draws cells (per_group or max_cells), not only filters them."""
        return self.per_group is not None or self.max_cells is not None

    def local_files(self) -> tuple[Path, ...]:
        """The local files and directories the spec reads (``file.h5mu:rna`` reads file.h5mu)."""
        files = [split_modality(p)[0] for p in self.inputs if "://" not in p]
        if self.census_uri and "://" not in self.census_uri:
            files.append(Path(self.census_uri))
        return tuple(files)


def _check_per_group(value: object) -> None:
    if not isinstance(value, tuple) or len(value) != 2:
        raise invalid("per_group", value, "expected (obs column, cells per group), e.g. ('cell_type', 500)")
    column, count = value
    if not (isinstance(column, str) and column.strip()):
        raise invalid("per_group", value, "name an obs column, e.g. ('cell_type', 500)")
    if not isinstance(count, numbers.Integral) or isinstance(count, bool) or int(count) < 1:
        raise invalid("per_group", value, "the cells per group must be at least 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """The cells and genes a spec selects from an opened source."""

    compiled: CompiledFilter
    n_matched: int  # cells that pass the filter, before sampling
    positions: np.ndarray  # sorted int64 cell positions in the source
    var_positions: np.ndarray | None  # sorted int64 var positions; None: every gene

    @property
    def n_cells(self) -> int:
        return len(self.positions)


def read_gene_list(path: Path) -> tuple[str, ...]:
    """The feature IDs of a gene-list file (``-``: standard input): one per line; blank lines
    and ``#`` comments skipped."""
    if str(path) == "-":
        import sys

        return parse_gene_list(sys.stdin.read(), where="-")
    if not Path(path).is_file():
        raise invalid("genes", str(path), "no such file")
    return parse_gene_list(Path(path).read_text(), where=str(path))


def parse_gene_list(text: str, *, where: str) -> tuple[str, ...]:
    """The feature IDs of a gene list's text (``where`` names it in a refusal)."""
    lines = (line.strip() for line in text.splitlines())
    wanted = tuple(line for line in lines if line and not line.startswith("#"))
    if not wanted:
        raise invalid("genes", where, "no gene IDs in it (one Ensembl ID per line)")
    return wanted


def open_source(spec: SourceSpec, *, trim: bool = True) -> CellSource:
    """The source a spec names: the Census/SOMA/demo, or AnnData ``inputs``. ``trim=False``:
    TileDB keeps freed read memory for the next read (see
    :func:`~atlasprep.sources.soma.tiledb_config_for_batches`)."""
    if not spec.is_named:
        raise UsageError("census, census_uri, inputs: none given; name exactly one source")
    if spec.inputs:
        from atlasprep.sources.anndata import AnnDataSource

        return _joined(spec, AnnDataSource(spec.inputs, layer=spec.layer))
    from atlasprep.sources.census import open_census
    from atlasprep.sources.soma import tiledb_config_for_batches

    return open_census(
        census=spec.census,
        census_uri=spec.census_uri,
        organism=spec.organism,
        tiledb_config=tiledb_config_for_batches(spec.batch_size, trim=trim),
        X_name=spec.layer or "raw",
    )


def _joined(spec: SourceSpec, source: Any) -> CellSource:
    """Several files: their genes joined as ``spec.join`` says (refused unless they agree)."""
    files, present = source.presence()
    if present.all():
        return source
    counts = ", ".join(f"{Path(f).name} {n:,}" for f, n in zip(files, present.sum(axis=1), strict=True))
    shared = int(present.all(axis=0).sum())
    if spec.join is None:
        source.close()
        raise invalid(
            "join",
            None,
            f"the inputs measure different genes ({counts}; {shared:,} in all of them): set join to "
            "'inner' (the genes all measured) or 'outer' (every gene; unmeasured ones read as 0, and "
            "the presence is recorded)",
        )
    if spec.join == "inner":
        if shared == 0:
            source.close()
            raise invalid("join", "inner", f"the inputs share no gene ({counts})")
        return GeneView(source, np.flatnonzero(present.all(axis=0)))
    log.info("outer join of %s: %d genes in all files, %d in some", counts, shared, present.shape[1])
    return source


def resolve(spec: SourceSpec) -> ResolvedFilter:
    """The spec's filter resolved through the ontologies (offline): a bad term fails here,
    before any source opens."""
    return resolve_filter(spec.filter, experiment_name(spec.organism))


def select(spec: SourceSpec, source: CellSource, *, resolved: ResolvedFilter | None = None) -> Selection:
    """The cells of ``source`` that pass the spec's filter, sampled (per_group, then max_cells,
    seeded), and the var positions of its genes: the one selection every stage reads."""
    compiled = source.compile(resolve(spec) if resolved is None else resolved)
    matched = source.select(compiled)
    return Selection(
        compiled=compiled,
        n_matched=len(matched),
        positions=_sample(spec, source, matched),
        var_positions=gene_positions(spec, source),
    )


def _sample(spec: SourceSpec, source: CellSource, matched: np.ndarray) -> np.ndarray:
    if not spec.samples:
        return matched
    groups = None
    per_group = None
    if spec.per_group is not None:
        column, per_group = spec.per_group
        groups = source.obs_values(matched, [column])[column].to_numpy()
    return sample_positions(
        matched, max_cells=spec.max_cells, groups=groups, per_group=per_group, seed=spec.seed
    )


def gene_positions(spec: SourceSpec, source: CellSource) -> np.ndarray | None:
    """Sorted var positions of the spec's genes (None: every gene): Ensembl IDs (a version
    suffix dropped: ENSG….12 is ENSG…) or, where the var has a ``feature_name`` column (the
    CELLxGENE schema's), gene symbols. Names missing from var are skipped with a warning;
    none found is an error."""
    if spec.var_filter is not None:
        return _var_filtered(spec, source)
    if spec.genes is None:
        return None
    var = source.var()
    wanted = list(dict.fromkeys(g.split(".")[0] if g.startswith("ENS") else g for g in spec.genes))
    hit = var.index.isin(wanted)  # every var row of each (a file's var may name a gene twice)
    found = np.flatnonzero(hit)
    named = set(var.index[hit])
    unmatched = [g for g in wanted if g not in named]
    if unmatched and "feature_name" in var.columns:  # symbols: every var row of each
        symbols = var["feature_name"].astype(str).to_numpy()
        by_symbol = np.isin(symbols, unmatched)
        found = np.concatenate([found, np.flatnonzero(by_symbol)])
        unmatched = sorted(set(unmatched) - set(symbols[by_symbol].tolist()))
    if len(unmatched) == len(wanted):
        example = var.index[0] if len(var) else "ENSG00000141510"
        raise UsageError(
            f"genes = {_shortened(spec.genes)}: none of its {len(wanted)} IDs or symbols is in this "
            f"source's var (expected IDs such as {example})"
        )
    if unmatched:
        log.warning(
            "genes: %d of %d names are not in this source's var and are skipped (e.g. %s)",
            len(unmatched),
            len(wanted),
            ", ".join(unmatched[:3]),
        )
    return np.unique(found).astype(np.int64)


def _on_var(text: str, check: Any, arg: Any) -> Any:
    """``check(arg)``, its refusal naming ``var_filter`` (the where grammar speaks of obs)."""
    try:
        return check(arg)
    except UsageError as exc:
        message = str(exc).replace("where: ", "", 1).replace("obs column", "column")
        raise UsageError(f"var_filter = {text!r}: {message}") from None


def _var_filtered(spec: SourceSpec, source: CellSource) -> np.ndarray:
    """The var positions ``var_filter`` keeps (and ``genes``, when both are given)."""
    assert spec.var_filter is not None
    var = source.var()
    expr = parse_where(spec.var_filter)
    frame = (
        var.reset_index(names="feature_id") if "feature_id" not in var.columns else var.reset_index(drop=True)
    )
    try:
        keep = np.flatnonzero(where_mask(expr, frame, source="var"))
    except UsageError as exc:  # the where checks speak of obs: this filter is on var
        text = str(exc).replace("where: ", "", 1).replace("obs column", "column")
        raise UsageError(f"var_filter = {spec.var_filter!r}: {text}") from None
    if len(keep) == 0:
        raise UsageError(f"var_filter = {spec.var_filter!r}: no gene of this source's var passes it")
    if spec.genes is not None:
        named = gene_positions(replace(spec, var_filter=None), source)
        assert named is not None
        passing = len(keep)
        keep = np.intersect1d(keep, named)
        if len(keep) == 0:
            raise UsageError(
                f"var_filter = {spec.var_filter!r} and genes = {_shortened(spec.genes)}: no gene is in "
                f"both ({passing:,} pass the filter, {len(named):,} are named); drop one or widen it"
            )
    return keep.astype(np.int64)


def refuse_fields(spec: SourceSpec, fields: Sequence[str], why: str) -> None:
    """Refuse the first of ``fields`` that ``spec`` sets (source, filter or sampling fields a
    stage cannot honour), naming the field: ``max_cells = 5: {why}``. Filter fields (``tissue``,
    ``where`` …) are those of ``spec.filter``."""
    for name in fields:
        value = getattr(spec.filter if name in _FILTER_FIELDS else spec, name)
        if value is not None and value != ():
            shown = _shortened(value) if name == "genes" else repr(value)
            raise UsageError(f"{name} = {shown}: {why}")


def whole_file(spec: SourceSpec | str | os.PathLike[str], stage: str) -> str:
    """The one AnnData file a stage that reads a file whole (``align``) takes: a path as given,
    or a spec naming one file in ``inputs`` and nothing that selects cells or genes (such a stage
    keeps every cell; select them in a later slice or tokenize). ``file.h5mu:rna`` stays as it is."""
    if not isinstance(spec, SourceSpec):
        return os.fspath(spec)
    one_input(spec, stage)
    why = f"{stage} keeps every cell and gene of its input; select them in slice or tokenize"
    refuse_fields(spec, (*SELECTING_FIELDS, "layer"), why)
    return spec.inputs[0]


def one_input(spec: SourceSpec, stage: str) -> str:
    """The spec's one AnnData file, for a stage that reads one file: the Census and several
    files are refused, naming the field."""
    refuse_fields(spec, ("census", "census_uri"), f"{stage} reads one AnnData file (inputs)")
    if len(spec.inputs) != 1:
        raise invalid("inputs", spec.inputs, f"{stage} reads exactly one AnnData file")
    return spec.inputs[0]


def _shortened(genes: object) -> str:
    """A gene list as a message shows it: the first IDs, and how many (a list may hold 20,000)."""
    if isinstance(genes, tuple) and len(genes) > 3:
        return f"({', '.join(map(repr, genes[:3]))}, … {len(genes)} IDs)"
    return repr(genes)
