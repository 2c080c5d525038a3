"""The encode pass as jobs: ranges of the selected cells tokenized into spill files, in this
process or on workers that see the same store directory."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from atlasprep.errors import InputFormatError
from atlasprep.ontology.labels import labels_ahead
from atlasprep.shard import ShardLayout, ShardWriter, ragged
from atlasprep.shard.spill import SpillMemory
from atlasprep.shard.writer import Spill, write_spill
from atlasprep.sources import (
    CellBatch,
    CellSource,
    ProgressCallback,
    gene_positions,
    only_genes,
    open_source,
)
from atlasprep.sources.anndata import AnnDataSource
from atlasprep.tokenize.config import TokenizeConfig
from atlasprep.tokenize.coverage import VocabCoverage
from atlasprep.tokenize.encode import check_batch_counts
from atlasprep.tokenize.fit import Fitted
from atlasprep.tokenize.passes import PassRunner, cell_ranges
from atlasprep.tokenize.segments import Segment
from atlasprep.tokenize.tokenizer import PairedBatch, TokenizedBatch, Tokenizer

log = logging.getLogger("atlasprep.tokenize")


JobRunner = PassRunner  # runs jobs somewhere (a Dask cluster: :class:`atlasprep.run.DaskRunner`)


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
    column_tokens: np.ndarray
    encode: Callable[[CellBatch], TokenizedBatch]
    tokenizer: Tokenizer
    spill_dir: Path
    segments: tuple[Segment, ...] = ()
    targets: tuple[Segment, ...] = ()  # budget unused: the whole vector is stored
    read_columns: tuple[str, ...] = ()  # obs columns the tokenizer reads but does not store


@dataclass(frozen=True, slots=True, kw_only=True)
class EncodeResult:
    spills: list[Spill]
    coverage: VocabCoverage
    n_empty: int = 0  # cells without a gene token (left out when the config drops them)
    truncated: tuple[int, ...] = ()  # per split (split_names order): cells max_len cut genes from
    term_ids: frozenset[str] = frozenset()  # the values of the *_ontology_term_id columns written


def plan_jobs(
    config: TokenizeConfig,
    runner: JobRunner | None,
    positions: np.ndarray,
    layout: ShardLayout,
    writer: ShardWriter,
    fitted: Fitted,
) -> list[EncodeJob]:
    """The encode pass cut into ranges of whole batches: one range here, ``n_partitions`` on a runner."""
    parts = 1 if runner is None else runner.n_partitions
    ranges = cell_ranges(len(positions), config.source.batch_size, parts)  # whole batches each
    encode = fitted.tokenizer.encoder(fitted.gene_ids, hvg_columns=fitted.hvg)
    jobs = []
    for part, cells in enumerate(ranges):
        first = cells.start
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
                obs_columns=fitted.obs_columns,
                column_tokens=fitted.vocab.column_tokens,
                encode=encode,
                spill_dir=writer.spill_dir,
                segments=fitted.segments,
                targets=fitted.targets,
                tokenizer=fitted.tokenizer,
                read_columns=(column,) if (column := fitted.tokenizer.n_counts_column) else (),
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
    if source is None:  # on a worker: the same source, showing the same genes
        opened = open_source(config.source)
        source = only_genes(opened, gene_positions(config.source, opened))
    paired = {s.modality: AnnDataSource([s.spec]) for s in (*job.segments, *job.targets)}
    splice_paired = job.tokenizer.paired_encoder() if paired else None
    spills: list[Spill] = []
    tally = _Tally(
        coverage=VocabCoverage.of_genes(job.column_tokens), truncated=np.zeros(len(job.split_names), np.int64)
    )
    total = job.first_cell + len(job.positions)
    # Each batch's rows are spilled in a second thread while the next batch is tokenized (one
    # in flight; its counts are not held there, so at most two batches of counts are in
    # memory: the one tokenized and the one read ahead). In this process, the first spills
    # are kept in memory (shard.spill.SpillMemory); a worker's are files the driver reads.
    memory = None if owned else SpillMemory.from_environment()
    writing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atlasprep-spill")
    pending: Future[Spill | None] | None = None

    def collect() -> None:
        if pending is not None and (spill := pending.result()) is not None:
            spills.append(spill)

    try:
        done = 0
        for batch in source.iter_batches(
            job.positions,
            var_positions=None,
            batch_size=config.source.batch_size,
            obs_columns=list(dict.fromkeys([*job.obs_columns, *config.context, *job.read_columns])),
        ):
            cells = slice(done, done + batch.n_cells)
            check_batch_counts(batch.X, config)
            codes, slots = job.split_codes[cells], job.slots[cells]
            table, encoded = _batch_table(job, batch, codes)
            empty = tally.add(batch.X, job.column_tokens, encoded, codes)
            if splice_paired is not None:
                table = _with_segments(job, table, paired, job.positions[cells], splice_paired)
            if config.drop_empty and empty.any():
                table, codes, slots = table.filter(pa.array(~empty)), codes[~empty], slots[~empty]
            tally.add_terms(table, look_up=not owned)  # (a worker's are not labelled)
            collect()
            path = job.spill_dir / f"{job.part:05d}-{len(spills):06d}.arrow"
            pending = writing.submit(_spill_batch, job, table, path, codes, slots, memory)
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
    return tally.result(spills)


@dataclass(slots=True, kw_only=True)
class _Tally:
    """What a job counts as it encodes: coverage, unseen context values, cells cut by max_len
    (per split), cells without a gene token."""

    coverage: VocabCoverage
    truncated: np.ndarray  # per split
    n_empty: int = 0
    term_ids: set[str] = field(default_factory=set)

    def add(
        self, X: sp.csr_matrix, column_tokens: np.ndarray, encoded: TokenizedBatch, codes: np.ndarray
    ) -> np.ndarray:
        """Count a batch; its cells without a gene token (a mask)."""
        self.coverage = self.coverage.add(X, column_tokens).add_unknown(encoded.unknown_context)
        if encoded.truncated is not None:
            self.truncated += np.bincount(codes[encoded.truncated], minlength=len(self.truncated))
        empty = np.asarray(encoded.n_genes == 0)
        self.n_empty += int(empty.sum())
        return empty

    def add_terms(self, table: pa.Table, *, look_up: bool) -> None:
        """Note a batch's term IDs; new ones have their labels looked up ahead (``look_up``):
        the manifest's labels, their ontologies loading while cells are encoded."""
        new = term_ids(table) - self.term_ids
        if new and look_up:
            labels_ahead(new)
        self.term_ids |= new

    def result(self, spills: list[Spill]) -> EncodeResult:
        truncated = tuple(int(n) for n in self.truncated)
        return EncodeResult(
            spills=spills,
            coverage=self.coverage,
            n_empty=self.n_empty,
            truncated=truncated,
            term_ids=frozenset(self.term_ids),
        )


def term_ids(table: pa.Table) -> set[str]:
    """The values of a batch's ``*_ontology_term_id`` columns (the terms its manifest labels)."""
    found: set[str] = set()
    for name in table.column_names:
        if name.endswith("_ontology_term_id"):
            found.update(v for v in pc.unique(table[name]).to_pylist() if v is not None)
    return found


def _spill_batch(
    job: EncodeJob,
    table: pa.Table,
    path: Path,
    codes: np.ndarray,
    slots: np.ndarray,
    memory: SpillMemory | None,
) -> Spill | None:
    """Spill a batch's rows (their splits and slots given; none when every cell was left out),
    kept in ``memory`` where it has room."""
    if table.num_rows == 0:
        return None
    return write_spill(path, table, codes, slots, job.by_size, memory)


def _with_segments(
    job: EncodeJob,
    table: pa.Table,
    paired: dict[str, AnnDataSource],
    positions: np.ndarray,
    splice_paired: Callable[[TokenizedBatch, Mapping[str, sp.csr_matrix]], PairedBatch],
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
                "align the modalities by barcode with how = 'inner' (atlasprep align barcodes)"
            )
    lists = table["input_ids"].combine_chunks()
    values = None
    if "values" in table.column_names:
        values = table["values"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    cells = TokenizedBatch(
        input_ids=lists.flatten().to_numpy(),
        offsets=lists.offsets.to_numpy().astype(np.int64),
        values=values,
        n_genes=np.zeros(0, dtype=np.int64),  # not read by encode_paired
    )
    spliced = splice_paired(cells, {m: batch.X for m, batch in rows.items()})
    ids, offsets = spliced.input_ids, spliced.offsets
    columns = {
        "input_ids": ragged(ids, offsets, pa.int32()),
        "length": pa.array(np.diff(offsets).astype(np.int32)),
        "values": ragged(spliced.values, offsets, pa.float32()),
        "token_type": ragged(spliced.token_type, offsets, pa.int8()),
    }
    for modality, vector in spliced.targets.items():
        n, width = vector.shape
        columns[f"target_{modality}"] = ragged(
            vector.ravel(), np.arange(n + 1, dtype=np.int64) * width, pa.float32()
        )
    for name, column in columns.items():
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, column)
        else:
            table = table.add_column(table.column_names.index("split"), name, column)
    return table


def one_arrow_type(column: Any) -> Any:
    """An obs column as every store holds it, whatever the source: categories as their values,
    text as ``string`` (the Census gives ``large_string``, AnnData ``string``), so the stores
    of one vocabulary concatenate (HuggingFace ``concatenate_datasets`` needs one schema)."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_large_string(column.type):
        column = column.cast(pa.string())
    elif pa.types.is_large_binary(column.type):
        column = column.cast(pa.binary())
    return column


def _batch_table(job: EncodeJob, batch: Any, split_codes: np.ndarray) -> tuple[pa.Table, TokenizedBatch]:
    """One batch of cells as shard rows (tokens, values, lengths, metadata, split), and its
    tokens (each cell's number of gene tokens, the unseen context values)."""
    encoded = job.encode(batch)
    ids, offsets, values = encoded.input_ids, encoded.offsets, encoded.values
    columns = {
        "input_ids": ragged(ids, offsets, pa.int32()),
        "length": pa.array(np.diff(offsets).astype(np.int32)),
    }
    if values is not None:
        columns["values"] = ragged(values, offsets, pa.from_numpy_dtype(values.dtype))
    for name in job.obs_columns:
        columns[name] = one_arrow_type(batch.obs[name])
    table = pa.table(
        {
            "cell_id": pa.array(batch.cell_ids.astype(str)),
            **columns,
            "split": pa.array(np.array(job.split_names, dtype=str)[split_codes]),
        }
    )
    return table, encoded
