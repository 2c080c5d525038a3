"""`tokenize`: cells from any source, tokenized, shuffled and split into a token store.

A store is complete only when its ``manifest.json`` exists; it is written last, atomically.
Re-running the same command on an incomplete store (a crash, even ``kill -9``) redoes the work
and ends with the same bytes as an uninterrupted run; a complete store is refused without
``overwrite``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from atlasprep import __version__
from atlasprep._io import write_bytes_atomic, write_json_atomic
from atlasprep._jit import warm_up
from atlasprep.errors import InputFormatError, UsageError
from atlasprep.shard import ShardInfo, ShardLayout, ShardWriter, ragged
from atlasprep.shard.directory import ClaimedStore, plan_claim
from atlasprep.shard.manifest import STORE_FORMAT, STORE_FORMAT_VERSION
from atlasprep.shard.writer import ShardFormat, Spill, write_spill
from atlasprep.slice.api import SliceConfig, open_source
from atlasprep.sources import (
    CellBatch,
    CellSource,
    ProgressCallback,
    experiment_name,
    resolve_filter,
    sample_positions,
)
from atlasprep.sources.anndata import AnnDataSource, split_modality
from atlasprep.sources.base import remap_columns
from atlasprep.sources.counts import check_counts
from atlasprep.tokenize.binning import bin_values, cap_genes
from atlasprep.tokenize.context import context_token, insert_context
from atlasprep.tokenize.coverage import VocabCoverage
from atlasprep.tokenize.hvg import GeneMoments
from atlasprep.tokenize.medians import MedianSketch
from atlasprep.tokenize.rank import RankEncoder
from atlasprep.tokenize.raw import raw_encode
from atlasprep.tokenize.segments import KINDS, Segment, atac_idf, encode_segment, segment_vector, splice
from atlasprep.tokenize.splits import assign_splits
from atlasprep.tokenize.vocab import load_gene_mapping, load_gene_medians, load_token_dictionary

__all__ = [
    "DEFAULT_OBS_COLUMNS",
    "SPECIAL_TOKENS",
    "TOKENIZE_BATCH_SIZE",
    "EncodeJob",
    "EncodeResult",
    "JobRunner",
    "TokenizeConfig",
    "TokenizeResult",
    "run_encode_job",
    "tokenize_cells",
]

log = logging.getLogger("atlasprep.tokenize")

Scheme = Literal["rank", "bin", "raw"]
Encoded = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # ids, offsets, values
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<mask>", "<cls>", "<eos>")
DEFAULT_OBS_COLUMNS: tuple[str, ...] = (
    "dataset_id",
    "donor_id",
    "cell_type_ontology_term_id",
    "tissue_ontology_term_id",
    "assay_ontology_term_id",
)
# Cells per batch for `atlasprep tokenize` (slice streams 4,096): twice as many cells share a
# length, so the rank kernel makes fewer sort calls, and a shard gathers from half as many spills;
# a batch of dense cells still closes at the value budget (batch size × 2,000 stored values).
TOKENIZE_BATCH_SIZE = 8_192


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenizeConfig:
    """Everything `atlasprep tokenize` is asked; defaults live here and the CLI reads them."""

    source: SliceConfig  # where cells come from: census/census_uri/inputs, filter, sampling
    out: Path
    scheme: Scheme = "rank"
    max_len: int = 4096
    n_bins: int = 51
    n_hvg: int | None = None  # bin: keep the N most variable genes (Seurat v3, streamed)
    token_dictionary: Path | None = None
    gene_medians: Path | None = None
    gene_mapping: Path | None = None
    special_tokens: bool = True
    gene_column: str | None = None  # var column with Ensembl IDs (default: the var index)
    # rank: each cell's total, as Geneformer reads obs["n_counts"] (in its own dtype) when the
    # input has this column; else (or with None) the sum of the cell's counts over all genes
    n_counts_column: str | None = "n_counts"
    assume_normalized: bool = False  # accept non-integer X for rank/bin
    min_gene_match: float = 0.0
    obs_columns: tuple[str, ...] = DEFAULT_OBS_COLUMNS
    context: tuple[str, ...] = ()  # obs columns whose value becomes one token after <cls>
    shard_cells: int = 10_000
    shard_bytes: int | None = None  # instead of shard_cells: cut shards at this many bytes
    shuffle: bool = True
    seed: int = 0
    split_by: str | None = None
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    holdout: tuple[str, ...] = ()  # values of split_by sent to test
    format: ShardFormat = "arrow"
    overwrite: bool = False
    # cells without a single vocabulary gene (empty droplets, a var of symbols): kept as their
    # special tokens only, or left out of the store, as Geneformer's tokenizer leaves them out
    drop_empty: bool = False
    # an aligned MuData (source inputs "file.h5mu:rna"): paired modalities as token segments
    # after the RNA tokens ("atac", "prot"), each within its budget, or stored whole as targets
    modalities: tuple[str, ...] = ()
    segment_max_len: tuple[tuple[str, int], ...] = ()
    targets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Every value checked here, once, before any work (the source's in :class:`SliceConfig`):
        the CLI, recipes and the Python API refuse the same values with the same message."""
        from typing import get_args

        from atlasprep.slice.api import (
            check_choice,
            check_fraction,
            check_int,
            check_name,
            check_names,
            invalid,
        )

        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        if not isinstance(self.source, SliceConfig):
            raise invalid("source", self.source, "must be a SliceConfig (where the cells come from)")
        check_choice("scheme", self.scheme, get_args(Scheme))
        check_choice("format", self.format, get_args(ShardFormat))
        # room for a gene token (rank with special tokens: between <cls> and <eos>); lengths are int32
        least = 3 if self.scheme == "rank" and self.special_tokens else 1
        check_int("max_len", self.max_len, at_least=least, at_most=2**31 - 1)
        # scGPT's binning: bin 0 holds zeros, and the edges of bins 1… need two quantiles at least
        check_int("n_bins", self.n_bins, at_least=3)
        if self.n_hvg is not None:
            check_int("n_hvg", self.n_hvg, at_least=1)
            if self.scheme != "bin":
                raise invalid(
                    "n_hvg",
                    self.n_hvg,
                    f"selects genes for scheme = 'bin' (scGPT); drop it for scheme = {self.scheme!r}",
                )
        check_fraction("min_gene_match", self.min_gene_match)
        check_int("shard_cells", self.shard_cells, at_least=1)
        if self.shard_bytes is not None:
            check_int("shard_bytes", self.shard_bytes, at_least=1)
            if self.shard_cells != defaults["shard_cells"]:
                raise UsageError(
                    f"shard_bytes = {self.shard_bytes!r} and shard_cells = {self.shard_cells!r}: "
                    "cut shards by cells or by bytes, not both"
                )
        check_int("seed", self.seed, at_least=0, at_most=2**64 - 1)
        split = self.split
        if (
            not isinstance(split, tuple)
            or len(split) != 3
            or not all(
                isinstance(f, int | float) and not isinstance(f, bool) and math.isfinite(f) and f >= 0
                for f in split
            )
            or abs(math.fsum(split) - 1) > 1e-9
        ):
            raise invalid(
                "split", split, "must be three fractions (train, val, test), each at least 0, that sum to 1"
            )
        for name in ("split_by", "gene_column", "n_counts_column"):
            check_name(name, getattr(self, name))
        check_names("holdout", self.holdout)
        if self.split_by is None and split != defaults["split"]:
            raise invalid(
                "split", split, "fractions of a column's groups: name it, e.g. split_by = 'donor_id'"
            )
        if self.split_by is None and self.holdout:
            raise invalid(
                "holdout",
                self.holdout,
                "groups of a column sent to test: name it, e.g. split_by = 'donor_id'",
            )
        check_names("obs_columns", self.obs_columns)
        check_names("context", self.context)
        for name in ("modalities", "targets"):
            check_names(name, getattr(self, name))
            for modality in getattr(self, name):
                check_choice(name, modality, tuple(KINDS))
        for pair in self.segment_max_len:
            if not (isinstance(pair, tuple) and len(pair) == 2 and pair[0] in self.modalities):
                raise invalid(
                    "segment_max_len",
                    self.segment_max_len,
                    f"each budget is (modality, tokens) for a modality of modalities = {self.modalities!r}",
                )
            check_int("segment_max_len", pair[1], at_least=1, at_most=2**31 - 1)
        for name in ("token_dictionary", "gene_medians", "gene_mapping"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise invalid(name, str(path), "no such file")


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenizeResult:
    out: Path
    manifest: dict[str, Any]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"out": str(self.out), "seconds": round(self.seconds, 3), **self.manifest}


class JobRunner(Protocol):
    """Runs encode jobs somewhere (a Dask cluster: :class:`atlasprep.run.DaskRunner`)."""

    @property
    def n_partitions(self) -> int: ...

    def map(
        self, fn: Callable[[EncodeJob], EncodeResult], jobs: Sequence[EncodeJob]
    ) -> list[EncodeResult]: ...


def tokenize_cells(
    config: TokenizeConfig, progress: ProgressCallback | None = None, *, runner: JobRunner | None = None
) -> TokenizeResult:
    """Tokenize the selected cells into a store. ``runner`` spreads the encode pass over ranges
    of the cells (each job opens the source itself); the store's bytes are the same either way."""
    started = time.perf_counter()
    warm_up()  # numba's one-off start-up, while the source opens
    # whether --out may be written is settled before any work; it is changed only when the
    # shards are about to be written, and a failed build removes what it wrote
    claim = plan_claim(config.out, _spec(config), overwrite=config.overwrite)
    given = _Dictionaries.load(config)  # the files a user gave, read and checked before any cell
    resolved = resolve_filter(config.source.filter, experiment_name(config.source.organism))
    source = open_source(config.source)
    store: ClaimedStore | None = None
    try:
        positions = source.select(source.compile(resolved))
        if config.source.max_cells is not None:
            positions = sample_positions(
                positions, max_cells=config.source.max_cells, seed=config.source.seed
            )
        if len(positions) == 0:
            raise UsageError("no cells match the filters; nothing to tokenize")
        gene_ids = _gene_ids(source, config)
        obs_columns = _obs_columns(config, source)
        medians = _medians(config, source, positions, gene_ids, given.medians)
        vocab = _vocab(config, gene_ids, medians, given.tokens)
        _hint_geneformer_inputs(config, source, gene_ids, vocab)
        hvg = _hvg_columns(config, source, positions, vocab.column_tokens) if config.n_hvg else None
        n_counts_column = _n_counts_column(config, source)
        encode = _encoder(config, vocab, gene_ids, hvg, n_counts_column, given.mapping)
        if config.context:  # the values present, sorted, extend the vocabulary after the genes
            present = source.obs_values(positions, list(config.context))
            for column in config.context:
                for value in sorted(present[column].astype("string").fillna("<NA>").unique()):
                    vocab.tokens.setdefault(context_token(column, str(value)), max(vocab.tokens.values()) + 1)
        segments, targets = _paired(config, positions, vocab)
        labels = source.obs_values(positions, [config.split_by])[config.split_by] if config.split_by else None
        if labels is not None:
            plan = assign_splits(
                labels,
                column=config.split_by or "",
                fractions=config.split,
                holdout=config.holdout,
                seed=config.seed,
            )
            # each cell's split as a 1-byte code (a string per cell would cost 8 to 28 bytes)
            splits = pd.Categorical(labels.astype("string").fillna("<NA>").map(plan.groups))
            plan.check(labels, splits.codes)
            codes, names = splits.codes, [str(c) for c in splits.categories]
        else:
            plan = None
            codes, names = np.zeros(len(positions), dtype=np.uint8), ["train"]
        layout = ShardLayout.plan_codes(
            codes,
            names,
            cells_per_shard=None if config.shard_bytes else config.shard_cells,
            bytes_per_shard=config.shard_bytes,
            seed=config.seed,
            shuffle=config.shuffle,
        )
        store = claim.claim()
        writer = ShardWriter(config.out, layout, fmt=config.format)
        special_ids = np.array([i for t, i in vocab.tokens.items() if t.startswith("<")], np.int32)
        planned = _encode_jobs(config, runner, positions, layout, writer, obs_columns, vocab, encode)
        jobs = [
            dataclasses.replace(
                job,
                segments=segments,
                targets=targets,
                special_ids=special_ids,
                read_columns=(n_counts_column,) if n_counts_column else (),
            )
            for job in planned
        ]
        if progress is not None:
            progress(0, len(positions))
        if runner is None:  # in this process, with progress per batch
            results = [run_encode_job(jobs[0], progress, source=source)]
        else:
            results = runner.map(run_encode_job, jobs)
            if progress is not None:
                progress(len(positions), len(positions))
        coverage = VocabCoverage.of_genes(vocab.column_tokens)
        for result in results:
            coverage = coverage.merge(result.coverage)
            for spill in result.spills:
                writer.register(spill)
        coverage.require(config.min_gene_match)
        n_empty = sum(result.n_empty for result in results)
        if n_empty == len(positions):  # a store of special tokens only would train nothing
            raise InputFormatError(
                f"none of the {n_empty:,} cells has a counted gene in the vocabulary (cells without "
                "counts, or a var whose IDs are not the vocabulary's); check that var holds the "
                "vocabulary's gene IDs (or pass --gene-mapping / --gene-column)"
            )
        if n_empty:
            log.warning(
                "%d of %d cells have no gene in the vocabulary (empty droplets?): %s",
                n_empty,
                len(positions),
                "left out, as Geneformer's tokenizer leaves them out"
                if config.drop_empty
                else "kept with no gene token; --drop-empty leaves them out, as Geneformer does",
            )
        shards = writer.finish()
        hvg_genes = None if hvg is None else [gene_ids[c] for c in hvg]
        manifest = _manifest(config, source, vocab, coverage, plan, shards, hvg_genes)
        manifest["empty_cells"] = {"n": n_empty, "dropped": config.drop_empty}
        if config.scheme == "rank":
            manifest["tokenizer"]["n_counts"] = (
                f"obs[{n_counts_column!r}]" if n_counts_column else "sum of the counts over all genes"
            )
        if segments or targets:
            manifest["tokenizer"]["segments"] = {
                s.modality: {
                    "budget": s.budget,
                    "separator": f"<sep:{s.modality}>",
                    "n_features": len(s.tokens),
                    "scoring": _SCORING[s.modality],
                }
                for s in segments
            }
            manifest["tokenizer"]["targets"] = {
                t.modality: {"scoring": _SCORING[t.modality], "features": list(t.features)} for t in targets
            }
        write_json_atomic(config.out / "manifest.json", manifest)  # last: the store is complete
        store.finish()
    except BaseException:
        if store is not None:
            store.abandon()
        raise
    finally:
        source.close()
    return TokenizeResult(out=config.out, manifest=manifest, seconds=time.perf_counter() - started)


@dataclass(frozen=True, slots=True, kw_only=True)
class EncodeJob:
    """One contiguous range of the selected cells, tokenized into spill files: in this process
    or on a worker that sees the same store directory."""

    config: TokenizeConfig
    part: int
    first_cell: int  # this range's first cell, in the order of the selection
    positions: np.ndarray  # the cells' positions in the source
    split_names: tuple[str, ...]  # the store's splits, sorted
    split_codes: np.ndarray  # the cells' splits, as indices into split_names
    slots: np.ndarray  # their slots within their split
    by_size: bool
    obs_columns: tuple[str, ...]
    tokens: dict[str, int]
    column_tokens: np.ndarray
    encode: Callable[[CellBatch, int], Encoded]
    spill_dir: Path
    segments: tuple[Segment, ...] = ()
    targets: tuple[Segment, ...] = ()  # budget unused: the whole vector is stored
    special_ids: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    read_columns: tuple[str, ...] = ()  # obs columns the tokenizer reads but does not store


@dataclass(frozen=True, slots=True, kw_only=True)
class EncodeResult:
    spills: list[Spill]
    coverage: VocabCoverage
    n_empty: int = 0  # cells without a gene token (left out when the config drops them)


def _encode_jobs(
    config: TokenizeConfig,
    runner: JobRunner | None,
    positions: np.ndarray,
    layout: ShardLayout,
    writer: ShardWriter,
    obs_columns: tuple[str, ...],
    vocab: _Vocab,
    encode: Callable[[CellBatch, int], Encoded],
) -> list[EncodeJob]:
    """The encode pass cut into ranges of whole batches: one range here, ``n_partitions`` on a runner."""
    n = len(positions)
    batch = config.source.batch_size
    n_batches = math.ceil(n / batch)
    parts = 1 if runner is None else max(1, min(runner.n_partitions, n_batches))
    per_part = math.ceil(n_batches / parts) * batch  # whole batches per part
    jobs = []
    for part, first in enumerate(range(0, n, per_part)):
        cells = slice(first, min(n, first + per_part))
        jobs.append(
            EncodeJob(
                config=config,
                part=part,
                first_cell=first,
                positions=positions[cells],
                split_names=layout.names,
                split_codes=layout.codes[cells],
                slots=layout.slots[cells],
                by_size=layout.bytes_per_shard is not None,
                obs_columns=obs_columns,
                tokens=vocab.tokens,
                column_tokens=vocab.column_tokens,
                encode=encode,
                spill_dir=writer.spill_dir,
            )
        )
    return jobs


def run_encode_job(
    job: EncodeJob, progress: ProgressCallback | None = None, *, source: CellSource | None = None
) -> EncodeResult:
    """Tokenize one range of cells into spill files. The source is the one given (left open),
    else the job opens and closes its own (on a worker)."""
    config = job.config
    owned = source is None
    source = open_source(config.source) if source is None else source
    paired = {s.modality: AnnDataSource([s.spec]) for s in (*job.segments, *job.targets)}
    spills: list[Spill] = []
    coverage = VocabCoverage.of_genes(job.column_tokens)
    total = job.first_cell + len(job.positions)
    # Each batch's rows are spilled in a second thread while the next batch is tokenized (one
    # in flight; its counts are not held there, so at most two batches of counts are in
    # memory: the one tokenized and the one read ahead).
    writing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atlasprep-spill")
    pending: Future[Spill | None] | None = None

    def collect() -> None:
        if pending is not None and (spill := pending.result()) is not None:
            spills.append(spill)

    n_empty = 0
    try:
        done = 0
        for batch in source.iter_batches(
            job.positions,
            var_positions=None,
            batch_size=config.source.batch_size,
            obs_columns=list(dict.fromkeys([*job.obs_columns, *config.context, *job.read_columns])),
        ):
            cells = slice(done, done + batch.n_cells)
            _check_counts(batch.X, config)
            coverage = coverage.add(batch.X, job.column_tokens)
            codes, slots = job.split_codes[cells], job.slots[cells]
            table, genes = _batch_table(job, batch, job.first_cell + done, codes)
            if paired:
                table = _with_segments(job, table, paired, job.positions[cells])
            empty = genes == 0
            n_empty += int(empty.sum())
            if config.drop_empty and empty.any():
                table, codes, slots = table.filter(pa.array(~empty)), codes[~empty], slots[~empty]
            collect()
            path = job.spill_dir / f"{job.part:05d}-{len(spills):06d}.arrow"
            pending = writing.submit(_spill_batch, job, table, path, codes, slots)
            done += batch.n_cells
            if progress is not None:
                progress(job.first_cell + done, total)
        collect()
    finally:
        writing.shutdown(wait=True)
        if owned:
            source.close()
        for other in paired.values():
            other.close()
    return EncodeResult(spills=spills, coverage=coverage, n_empty=n_empty)


def _spill_batch(
    job: EncodeJob, table: pa.Table, path: Path, codes: np.ndarray, slots: np.ndarray
) -> Spill | None:
    """Spill a batch's rows (their splits and slots given; none when every cell was left out)."""
    if table.num_rows == 0:
        return None
    return write_spill(path, table, codes, slots, job.by_size)


def _with_segments(
    job: EncodeJob, table: pa.Table, paired: dict[str, AnnDataSource], positions: np.ndarray
) -> pa.Table:
    """Add the paired modalities' segments (and target columns) to a batch's rows."""
    whole = len(positions) + 1
    rows = {
        m: next(src.iter_batches(positions, var_positions=None, batch_size=whole, obs_columns=[]))
        for m, src in paired.items()
    }
    for m, batch in rows.items():
        if not np.array_equal(batch.cell_ids, table["cell_id"].to_numpy(zero_copy_only=False)):
            raise InputFormatError(
                f"{job.config.source.inputs[0]}: modality {m!r} lists other cells than the RNA; "
                "align it with atlasprep align barcodes --how inner"
            )
    lists = table["input_ids"].combine_chunks()
    offsets = lists.offsets.to_numpy().astype(np.int64)
    ids = lists.flatten().to_numpy()
    if "values" in table.column_names:
        values = table["values"].combine_chunks().flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    else:
        values = np.zeros(len(ids), dtype=np.float32)
    parts = [(s.sep_id, s.token_type, *encode_segment(s, rows[s.modality].X)) for s in job.segments]
    special = job.config.scheme == "rank" and job.config.special_tokens
    ids, offsets, values, types = splice((ids, offsets, values), parts, keep_tail=1 if special else 0)
    types[np.isin(ids, job.special_ids)] = 0
    columns = {
        "input_ids": ragged(ids, offsets, pa.int32()),
        "length": pa.array(np.diff(offsets).astype(np.int32)),
        "values": ragged(values, offsets, pa.float32()),
        "token_type": ragged(types, offsets, pa.int8()),
    }
    for target in job.targets:
        vector = segment_vector(target.modality, rows[target.modality].X, target.idf).astype(np.float32)
        n, width = vector.shape
        columns[f"target_{target.modality}"] = ragged(
            vector.ravel(), np.arange(n + 1, dtype=np.int64) * width, pa.float32()
        )
    for name, column in columns.items():
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, column)
        else:
            table = table.add_column(table.column_names.index("split"), name, column)
    return table


def _batch_table(
    job: EncodeJob, batch: Any, first_row: int, split_codes: np.ndarray
) -> tuple[pa.Table, np.ndarray]:
    """One batch of cells as shard rows (tokens, values, lengths, metadata, split), and each
    cell's number of gene tokens."""
    config = job.config
    ids, offsets, values = job.encode(batch, first_row)
    special = config.scheme == "rank" and config.special_tokens
    genes = np.diff(offsets) - (2 if special else 0)
    if config.context:
        ids, offsets, values = insert_context(
            ids,
            offsets,
            _context_ids(batch.obs, config.context, job.tokens),
            at=1 if special else 0,
            max_len=config.max_len,
            keep_tail=1 if special else 0,
            values=values,
        )
    columns = {
        "input_ids": ragged(ids, offsets, pa.int32()),
        "length": pa.array(np.diff(offsets).astype(np.int32)),
    }
    if values is not None:
        columns["values"] = ragged(values, offsets, pa.from_numpy_dtype(values.dtype))
    for name in job.obs_columns:
        column = batch.obs[name]
        columns[name] = column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column
    table = pa.table(
        {
            "cell_id": pa.array(batch.cell_ids.astype(str)),
            **columns,
            "split": pa.array(np.array(job.split_names, dtype=str)[split_codes]),
        }
    )
    return table, genes


@dataclass(frozen=True, slots=True, kw_only=True)
class _Vocab:
    tokens: dict[str, int]  # token -> id (special tokens first)
    column_tokens: np.ndarray  # per input column: its gene's id, -1 if not in the vocabulary
    source: str
    medians: dict[str, float] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Dictionaries:
    """The token dictionary, gene medians and gene mapping a build was given (None where not)."""

    tokens: dict[str, int] | None = None
    medians: dict[str, float] | None = None
    mapping: dict[str, str] | None = None

    @classmethod
    def load(cls, config: TokenizeConfig) -> _Dictionaries:
        tokens, medians, mapping = config.token_dictionary, config.gene_medians, config.gene_mapping
        return cls(
            tokens=None if tokens is None else load_token_dictionary(tokens),
            medians=None if medians is None or config.scheme != "rank" else load_gene_medians(medians),
            mapping=None if mapping is None else load_gene_mapping(mapping),
        )


def _medians(
    config: TokenizeConfig,
    source: CellSource,
    positions: np.ndarray,
    gene_ids: list[str],
    given: dict[str, float] | None,
) -> dict[str, float] | None:
    """The rank scheme's normalization factors: given, or sketched in a first pass over the cells."""
    if config.scheme != "rank":
        return None
    if config.gene_medians is not None:
        return given
    log.info("computing gene medians from the corpus (first pass over %d cells)", len(positions))
    sketch = MedianSketch(n_genes=len(gene_ids))
    for X in _count_batches(config, source, positions):
        sketch.add(X)
    values, _ = sketch.medians()
    return {g: float(v) for g, v in zip(gene_ids, values, strict=True) if np.isfinite(v)}


def _vocab(
    config: TokenizeConfig,
    gene_ids: list[str],
    medians: dict[str, float] | None,
    given: dict[str, int] | None,
) -> _Vocab:
    if config.token_dictionary is not None:
        assert given is not None
        tokens = dict(given)  # the context and paired-modality tokens are added to this copy
        origin = str(config.token_dictionary)
    else:
        tokens = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
        for g in dict.fromkeys(gene_ids):
            tokens.setdefault(g, len(tokens))
        origin = "corpus genes"
    column_tokens = np.array([tokens.get(g, -1) for g in gene_ids], dtype=np.int32)
    return _Vocab(tokens=tokens, column_tokens=column_tokens, source=origin, medians=medians)


def _hvg_columns(
    config: TokenizeConfig, source: CellSource, positions: np.ndarray, column_tokens: np.ndarray
) -> np.ndarray:
    """The ``n_hvg`` most variable vocabulary genes (their input columns), in two passes."""
    in_vocab = np.flatnonzero(column_tokens >= 0)
    if config.n_hvg is not None and config.n_hvg > len(in_vocab):
        raise UsageError(f"--n-hvg {config.n_hvg} is more than the {len(in_vocab)} genes in the vocabulary")
    log.info("selecting %s highly variable genes (two passes over %d cells)", config.n_hvg, len(positions))
    first = GeneMoments(n_genes=len(in_vocab))
    for X in _count_batches(config, source, positions):
        first.add(sp.csr_matrix(X)[:, in_vocab])
    second = first.clipped()
    for X in _count_batches(config, source, positions):
        second.add(sp.csr_matrix(X)[:, in_vocab])
    return in_vocab[second.top(config.n_hvg or 0)]


def _count_batches(config: TokenizeConfig, source: CellSource, positions: np.ndarray) -> Iterator[Any]:
    """The cells' counts, batch by batch, checked (a pass before the tokens)."""
    for batch in source.iter_batches(
        positions, var_positions=None, batch_size=config.source.batch_size, obs_columns=[]
    ):
        _check_counts(batch.X, config)
        yield batch.X


def _n_counts_column(config: TokenizeConfig, source: CellSource) -> str | None:
    """The obs column holding the cells' totals for ``rank``, if it is to be read."""
    name = config.n_counts_column
    if config.scheme != "rank" or name is None:
        return None
    if name in source.obs_columns:
        log.info("cell totals from obs[%r], as Geneformer reads obs['n_counts']", name)
        return name
    if name != "n_counts":  # asked for by name, not the default
        raise UsageError(f"--n-counts-column {name!r} is not an obs column of the input")
    return None


def _encoder(
    config: TokenizeConfig,
    vocab: _Vocab,
    gene_ids: list[str],
    hvg: np.ndarray | None,
    n_counts_column: str | None = None,
    mapping: dict[str, str] | None = None,
) -> Callable[[CellBatch, int], Encoded]:
    """``encode(batch, first_row)``: a batch's tokens; ``first_row`` is its first cell's place."""
    column_tokens = vocab.column_tokens
    if config.scheme == "rank":
        assert vocab.medians is not None
        ranking = functools.partial(
            RankEncoder.from_dictionaries,
            token_dictionary=vocab.tokens,
            gene_medians=vocab.medians,
            gene_mapping=mapping,
            max_len=config.max_len,
            special_tokens=config.special_tokens,
        )
        whole = ranking(gene_ids)
        # A file joined to others on one var is ranked as Geneformer ranks it, alone: its own
        # genes, in its own order, summed where two of its own IDs name one gene.
        by_file: dict[bytes, tuple[np.ndarray, RankEncoder]] = {}

        def own_encoder(stored: np.ndarray) -> tuple[np.ndarray, RankEncoder]:
            key = stored.tobytes()
            if key not in by_file:
                own = stored[stored >= 0]
                by_file[key] = (own, ranking([gene_ids[c] for c in own], require_genes=False))
            return by_file[key]

        def encode_rank(batch: CellBatch, first_row: int) -> Encoded:
            n_counts = None if n_counts_column is None else _totals(batch.obs, n_counts_column)
            X, encoder = batch.X, whole
            if batch.stored_columns is not None:
                own, encoder = own_encoder(np.asarray(batch.stored_columns, dtype=np.int64))
                position = np.full(X.shape[1], -1, dtype=np.int64)
                position[own] = np.arange(len(own))
                X = remap_columns(X, position, len(own))
            ranked = encoder.encode(X, n_counts, x_dtype=batch.stored_dtype, dense=batch.stored_dense)
            return ranked.input_ids, ranked.offsets, None

        return encode_rank
    if config.scheme == "raw":

        def encode_raw(batch: CellBatch, first_row: int) -> Encoded:
            cells = raw_encode(batch.X, column_tokens, max_len=config.max_len)
            return cells.input_ids, cells.offsets, cells.values

        return encode_raw

    # bins over the vocabulary genes (or the most variable of them), as scGPT
    columns = np.flatnonzero(column_tokens >= 0) if hvg is None else hvg
    tokens = column_tokens[columns]

    def encode_bin(batch: CellBatch, first_row: int) -> Encoded:
        binned = bin_values(sp.csr_matrix(batch.X)[:, columns], config.n_bins)
        binned = cap_genes(binned, config.max_len, seed=config.seed, first_row=first_row)
        ids = tokens[binned.indices]
        offsets = binned.indptr.astype(np.int64)
        return ids.astype(np.int32), offsets, binned.data.astype(np.int32)

    return encode_bin


def _totals(obs: pa.Table, column: str) -> np.ndarray:
    """A batch's cell totals from an obs column, in the column's own dtype."""
    values = obs[column]
    if values.null_count or not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
        raise InputFormatError(
            f"obs[{column!r}] must hold each cell's total counts as numbers (it has {values.type}, "
            f"{values.null_count} missing); fix it, or pass --n-counts-column none to use the sum "
            "of the counts"
        )
    totals = values.to_numpy()
    if (totals < 0).any() or not np.isfinite(totals).all():
        raise InputFormatError(
            f"obs[{column!r}] has a negative or infinite total; fix it, or pass --n-counts-column none "
            "to use the sum of the counts"
        )
    return totals


def _context_ids(obs: pa.Table, columns: tuple[str, ...], tokens: dict[str, int]) -> np.ndarray:
    """(cells × columns) context token ids of a batch."""
    out = np.empty((obs.num_rows, len(columns)), dtype=np.int32)
    for j, column in enumerate(columns):
        values = obs[column].to_pandas().astype("string").fillna("<NA>")
        lookup = {v: tokens[context_token(column, v)] for v in values.unique()}
        out[:, j] = values.map(lookup).to_numpy(dtype=np.int32)
    return out


def _obs_columns(config: TokenizeConfig, source: CellSource) -> tuple[str, ...]:
    """The metadata columns to keep: the defaults the source has, or exactly those asked for."""
    if config.obs_columns != DEFAULT_OBS_COLUMNS:
        return config.obs_columns  # a missing one is an error when the first batch is read
    kept = tuple(c for c in config.obs_columns if c in source.obs_columns)
    if len(kept) < len(config.obs_columns):
        skipped = ", ".join(c for c in config.obs_columns if c not in kept)
        log.info("the source has no %s; those columns are left out of the shards", skipped)
    return kept


def _hint_geneformer_inputs(
    config: TokenizeConfig, source: CellSource, gene_ids: list[str], vocab: _Vocab
) -> None:
    """Say so when the input follows Geneformer's conventions in a way atlasprep does not read
    by itself: gene IDs in a var column (Geneformer reads ``var["ensembl_id"]``) that names far
    more vocabulary genes than the IDs in use, and an obs ``filter_pass`` column (Geneformer
    tokenizes only the cells where it is 1)."""
    if config.token_dictionary is not None and gene_ids:
        var = source.var()
        in_use = float(np.mean(vocab.column_tokens >= 0))
        for column in var.columns:
            if column == config.gene_column or not (
                pd.api.types.is_string_dtype(var[column])
                or isinstance(var[column].dtype, pd.CategoricalDtype)
            ):
                continue
            share = float(var[column].astype(str).isin(vocab.tokens.keys()).mean())
            if share >= max(2 * in_use, 0.5):
                log.warning(
                    "var column %r names %.0f%% of its genes in the vocabulary, the IDs in use (%s) %.0f%%: "
                    "pass --gene-column %s (Geneformer reads var['ensembl_id'])",
                    column,
                    100 * share,
                    f"var[{config.gene_column!r}]" if config.gene_column else "the var index",
                    100 * in_use,
                    column,
                )
                break
    where = config.source.filter.where or ""
    if config.scheme == "rank" and "filter_pass" in source.obs_columns and "filter_pass" not in where:
        log.warning(
            "obs has Geneformer's filter_pass column: Geneformer tokenizes only the cells where it is 1; "
            "pass --where 'filter_pass == 1' to do the same"
        )


def _gene_ids(source: CellSource, config: TokenizeConfig) -> list[str]:
    var = source.var()
    if config.gene_column is None:
        return [str(g) for g in var.index]
    if config.gene_column not in var.columns:
        raise UsageError(
            f"--gene-column {config.gene_column!r} is not a var column "
            f"(var has: {', '.join(map(str, var.columns))})"
        )
    return [str(g) for g in var[config.gene_column]]


def _check_counts(X: Any, config: TokenizeConfig) -> None:
    """Counts are counts: negative or non-finite values are refused by every scheme (raw would
    store NaN). rank and bin read raw counts, so non-integer values are refused too unless
    ``assume_normalized``: normalized input would silently change every token."""

    source = config.source
    if source.inputs:
        names = {None: "the count matrix", "X": "X", "raw": "raw.X"}
        matrix = names.get(source.layer, f"layers[{source.layer!r}]")
        where = f"{matrix} of {', '.join(source.inputs)}"
    else:
        where = f"X[{source.layer or 'raw'!r}] of the Census {source.census or source.census_uri}"
    check_counts(
        X,
        where=where,
        integer=config.scheme != "raw" and not config.assume_normalized,
        hint=f"--scheme {config.scheme} needs raw integer counts (normalized data?); point at raw counts, "
        "or pass --assume-normalized",
    )


_SCORING = {
    "atac": "TF-IDF: log1p(count / cell total * 1e4) * log(1 + N / (1 + cells with the peak))",
    "prot": "CLR per cell: log1p(x) - mean over the cell's proteins of log1p(x)",
}


def _paired(
    config: TokenizeConfig, positions: np.ndarray, vocab: _Vocab
) -> tuple[tuple[Segment, ...], tuple[Segment, ...]]:
    """Segments and targets of the paired modalities; their tokens extend the vocabulary."""
    if not config.modalities and not config.targets:
        return (), ()
    path, main = split_modality(config.source.inputs[0]) if len(config.source.inputs) == 1 else (None, None)
    if path is None or main is None:
        raise UsageError("--modalities/--targets need one aligned MuData input (atlasprep align barcodes)")
    budgets = dict(config.segment_max_len)
    next_id = max(vocab.tokens.values()) + 1
    found: dict[str, list[Segment]] = {"segments": [], "targets": []}
    for kind, names in (("segments", config.modalities), ("targets", config.targets)):
        for modality in names:
            if modality not in KINDS or modality == main:
                raise UsageError(f"{modality!r}: pair the RNA with atac or prot")
            spec = f"{path}:{modality}"
            features, idf = _features(spec, modality, positions, config.source.batch_size)
            sep_id = -1
            tokens = np.zeros(0, dtype=np.int32)
            if kind == "segments":
                for token in (f"<sep:{modality}>", *(f"{KINDS[modality][0]}:{f}" for f in features)):
                    if token not in vocab.tokens:
                        vocab.tokens[token] = next_id
                        next_id += 1
                sep_id = vocab.tokens[f"<sep:{modality}>"]
                tokens = np.array([vocab.tokens[f"{KINDS[modality][0]}:{f}"] for f in features], np.int32)
            found[kind].append(
                Segment(
                    modality=modality,
                    spec=spec,
                    budget=budgets.get(modality, 256),
                    sep_id=sep_id,
                    tokens=tokens,
                    idf=idf,
                    features=tuple(features),
                )
            )
    return tuple(found["segments"]), tuple(found["targets"])


def _features(
    spec: str, modality: str, positions: np.ndarray, batch_size: int
) -> tuple[list[str], np.ndarray | None]:
    """A paired modality's features and, for ATAC, the corpus IDF (a first pass)."""
    other = AnnDataSource([spec])
    try:
        features = [str(f) for f in other.var().index]
        if modality != "atac":
            return features, None
        with_peak = np.zeros(len(features), dtype=np.int64)
        for batch in other.iter_batches(positions, var_positions=None, batch_size=batch_size, obs_columns=[]):
            X = sp.csr_matrix(batch.X)
            X.eliminate_zeros()
            with_peak += np.bincount(X.indices, minlength=len(features))
        return features, atac_idf(with_peak, len(positions))
    finally:
        other.close()


def _spec(config: TokenizeConfig) -> dict[str, Any]:
    """The configuration a store records (and a resumed build must match): where the store
    lives is no part of what it holds."""
    spec = dataclasses.asdict(config)
    for where in ("out", "overwrite"):
        spec.pop(where)
    spec["source"] = {
        k: v for k, v in spec["source"].items() if k not in ("out", "dry_run", "by", "overwrite")
    }
    return spec


def _manifest(
    config: TokenizeConfig,
    source: CellSource,
    vocab: _Vocab,
    coverage: VocabCoverage,
    plan: Any,
    shards: list[ShardInfo],
    hvg_genes: list[str] | None,
) -> dict[str, Any]:
    per_split = dict.fromkeys(plan.n_cells if plan else ("train",), 0)
    for shard in shards:  # the cells stored: the selection, less any empty cells left out
        per_split[shard.split] = per_split.get(shard.split, 0) + shard.n_cells
    n_cells = sum(per_split.values())
    vocab_bytes = json.dumps(vocab.tokens, sort_keys=True, separators=(",", ":")).encode()
    write_bytes_atomic(config.out / "vocab.json", vocab_bytes)
    if vocab.medians is not None:
        used = sorted(g for g in vocab.medians if g in vocab.tokens)
        table = pa.table({"gene_id": used, "median": [vocab.medians[g] for g in used]})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        write_bytes_atomic(config.out / "gene_medians.parquet", sink.getvalue().to_pybytes())
    spec = _spec(config)
    return json.loads(
        json.dumps(
            {
                "format": STORE_FORMAT,
                "format_version": STORE_FORMAT_VERSION,
                "atlasprep_version": __version__,
                "gene_medians": _medians_record(config, vocab),
                "tokenizer": {
                    "scheme": config.scheme,
                    "max_len": config.max_len,
                    "n_bins": config.n_bins,
                    "hvg": None
                    if hvg_genes is None
                    else {"flavor": "seurat_v3", "span": 0.3, "n": len(hvg_genes), "genes": hvg_genes},
                    "special_tokens": config.special_tokens,
                    "vocab_source": vocab.source,
                    "context": list(config.context),
                    "shard_format": config.format,
                },
                "vocab": {
                    "path": "vocab.json",
                    "size": len(vocab.tokens),
                    "sha256": hashlib.sha256(vocab_bytes).hexdigest(),
                },
                "coverage": coverage.to_json(),
                "source": source.info.to_json(),
                "recipe": spec,
                "n_cells": n_cells,
                "splits": {
                    "column": config.split_by,
                    "n_cells": per_split,
                    "groups": {s: plan.groups_in(s) for s in ("train", "val", "test")} if plan else {},
                },
                "shards": [s.to_json() for s in shards],
            },
            default=str,
        )
    )


def _medians_record(config: TokenizeConfig, vocab: _Vocab) -> dict[str, str] | None:
    if vocab.medians is None:
        return None
    if config.gene_medians is not None:
        origin = str(config.gene_medians)
    else:
        origin = f"sketched from the corpus (within ±{MedianSketch(n_genes=0).relative_error:.2%})"
    return {"path": "gene_medians.parquet", "source": origin}
