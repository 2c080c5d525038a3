"""`tokenize`: cells from any source, tokenized, shuffled and split into a token store.

A store is complete only when its ``manifest.json`` exists; it is written last, atomically.
Re-running the same command on an incomplete store (a crash, even ``kill -9``) redoes the work
and ends with the same bytes as an uninterrupted run; a complete store is refused without
``overwrite``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

import numpy as np

from atlasprep._io import write_bytes_atomic, write_json_atomic
from atlasprep._jit import warm_up
from atlasprep.errors import InputFormatError, UsageError
from atlasprep.provenance import hash_ahead, new_step, source_inputs
from atlasprep.shard import ShardLayout, ShardWriter
from atlasprep.shard.assemble import finish_shards
from atlasprep.shard.card import CARD_FILE, dataset_card
from atlasprep.shard.directory import ClaimedStore, plan_claim
from atlasprep.sources import (
    CellSource,
    ProgressCallback,
    Selection,
    only_genes,
    open_source,
    resolve,
    select,
)
from atlasprep.tokenize.coverage import VocabCoverage
from atlasprep.tokenize.split_holdout import holdout_columns, resolve_holdouts
from atlasprep.tokenize.splits import SPLIT_NAMES, SplitPlan, split_cells

__all__ = [
    "DEFAULT_OBS_COLUMNS",
    "SPECIAL_TOKENS",
    "TOKENIZE_BATCH_SIZE",
    "EncodeJob",
    "EncodeResult",
    "JobRunner",
    "TokenizeConfig",
    "TokenizeResult",
    "Tokenizer",
    "check_columns",
    "fit_tokenizer",
    "run_encode_job",
    "tokenize_cells",
]
from atlasprep.tokenize.config import (
    DEFAULT_OBS_COLUMNS,
    SPECIAL_TOKENS,
    TOKENIZE_BATCH_SIZE,
    TokenizeConfig,
    TokenizeResult,
)
from atlasprep.tokenize.fit import Dictionaries, Fitted, fit
from atlasprep.tokenize.jobs import EncodeJob, EncodeResult, JobRunner, plan_jobs, run_encode_job
from atlasprep.tokenize.loaded import fit_loaded, with_tokenizer
from atlasprep.tokenize.record import build_manifest, build_spec, presence_record
from atlasprep.tokenize.tokenizer import Tokenizer

log = logging.getLogger("atlasprep.tokenize")


def tokenize_cells(
    config: TokenizeConfig, progress: ProgressCallback | None = None, *, runner: JobRunner | None = None
) -> TokenizeResult:
    """Tokenize the selected cells into a store: select → fit → plan the layout → claim the
    directory → encode jobs → shards → manifest. ``runner`` spreads the encode pass over ranges
    of the cells (each job opens the source itself); the store's bytes are the same either way."""
    started = time.perf_counter()
    warm_up()  # numba's one-off start-up, while the source opens
    # whether out may be written is settled before any work; it is changed only when the
    # shards are about to be written, and a failed build removes what it wrote
    claim = plan_claim(config.out, build_spec(config), overwrite=config.overwrite)
    saved = None if config.tokenizer is None else Tokenizer.load(config.tokenizer)
    origin, config = str(config.tokenizer), config if saved is None else with_tokenizer(config, saved)
    given = Dictionaries.load(config)  # the files a user gave, read and checked before any cell
    store: ClaimedStore | None = None
    try:
        with _selected(config) as (source, positions, _):
            hash_ahead(config.source.inputs)  # the provenance record's digests, while the cells are read
            if saved is None:
                fitted = fit(config, source, positions, given, runner)
            else:  # a saved tokenizer: no corpus pass, new data tokenized as its corpus was
                fitted = fit_loaded(config, source, saved, origin)
            plan, layout = _layout(config, source, positions)
            store = claim.claim()
            writer = ShardWriter(config.out, layout, fmt=config.format)
            jobs = plan_jobs(config, runner, positions, layout, writer, fitted)
            results = _run_jobs(jobs, runner, source, len(positions), progress)
            coverage, n_empty = _collect(config, fitted, results, writer, len(positions))
            truncated = _truncated(results, layout.names)
            previous, inputs = source_inputs(config.source, source, positions)
            steps = [*previous, new_step("tokenize", build_spec(config), inputs, clock=False)]
            manifest = build_manifest(
                config,
                source,
                fitted,
                coverage,
                plan,
                finish_shards(writer, runner),  # on a runner, each shard written by a worker
                n_empty,
                truncated=truncated,
                steps=steps,
                presence=presence_record(source, positions),
                term_ids=frozenset().union(*(result.term_ids for result in results)),
            )
        if config.format == "arrow":  # a dataset card HuggingFace datasets loads the splits by
            write_bytes_atomic(config.out / CARD_FILE, dataset_card(manifest).encode())
        write_json_atomic(config.out / "manifest.json", manifest)  # last: the store is complete
        store.finish()
    except BaseException:
        if store is not None:
            store.abandon()
        raise
    return TokenizeResult(out=config.out, manifest=manifest, seconds=time.perf_counter() - started)


def fit_tokenizer(config: TokenizeConfig) -> Tokenizer:
    """The tokenizer a build of ``config`` would fit, fitted on the same cells; no store."""
    given = Dictionaries.load(config)
    with _selected(config) as (source, positions, _):
        return fit(config, source, positions, given).tokenizer


@contextlib.contextmanager
def _selected(config: TokenizeConfig) -> Iterator[tuple[CellSource, np.ndarray, Selection]]:
    """The source as tokenize reads it (its var: the spec's genes), open, and the positions of
    the cells to tokenize, in source order: the spec's selection (filter, per_group, max_cells,
    genes), as slice makes it."""
    resolved = resolve(config.source)  # a bad term fails before the source opens
    resolve_holdouts(config.holdout, config.split_columns, exact=config.holdout_exact)  # so does a holdout's
    source = open_source(config.source)
    try:
        check_columns(config, source)
        selection = select(config.source, source, resolved=resolved)
        if selection.n_cells == 0:
            raise UsageError("no cells match the filters; nothing to tokenize")
        yield only_genes(source, selection.var_positions), selection.positions, selection
    finally:
        source.close()


def check_columns(config: TokenizeConfig, source: CellSource) -> None:
    """The obs columns the build reads (context, split_by, stratify, the holdouts'), refused
    when ``source`` lacks one, before any pass over the cells (``run --dry-run`` checks too)."""
    stratify = (config.stratify,) if config.stratify else ()
    holdouts = holdout_columns(config.holdout, config.split_columns)
    wanted = dict.fromkeys((*config.context, *config.split_columns, *stratify, *holdouts))
    have = set(source.obs_columns)
    missing = [column for column in wanted if column not in have]
    if missing:
        has = ", ".join(source.obs_columns)
        raise InputFormatError(f"{source.info.uri}: obs has no column {', '.join(missing)} (it has: {has})")


def _layout(
    config: TokenizeConfig, source: CellSource, positions: np.ndarray
) -> tuple[SplitPlan | None, ShardLayout]:
    """Each cell's split (whole linked groups of ``split_by``, holdouts in test) and its slot in
    its split's shuffle."""
    plan = None
    codes, names = np.zeros(len(positions), dtype=np.uint8), ["train"]
    if config.split_by:
        plan = split_cells(config, source, positions)
        # each cell's split as a 1-byte code (a string per cell would cost 8 to 28 bytes)
        assert plan.cell_splits is not None
        codes, names = plan.cell_splits, list(SPLIT_NAMES)
    layout = ShardLayout.plan_codes(
        codes,
        names,
        cells_per_shard=None if config.shard_bytes else config.shard_cells,
        bytes_per_shard=config.shard_bytes,
        seed=config.seed,
        shuffle=config.shuffle,
    )
    return plan, layout


def _run_jobs(
    jobs: list[EncodeJob],
    runner: JobRunner | None,
    source: CellSource,
    n_cells: int,
    progress: ProgressCallback | None,
) -> list[EncodeResult]:
    if progress is not None:
        progress(0, n_cells)
    if runner is None:  # in this process, with progress per batch
        return [run_encode_job(jobs[0], progress, source=source)]
    results = runner.map(run_encode_job, jobs)
    if progress is not None:
        progress(n_cells, n_cells)
    return results


def _truncated(results: list[EncodeResult], names: tuple[str, ...] | list[str]) -> dict[str, int]:
    """Cells whose genes max_len cut, per split (those that have cells)."""
    counts = dict.fromkeys(names, 0)
    for result in results:
        for name, n in zip(names, result.truncated, strict=False):
            counts[name] += n
    return counts


def _collect(
    config: TokenizeConfig, fitted: Fitted, results: list[EncodeResult], writer: ShardWriter, n_cells: int
) -> tuple[VocabCoverage, int]:
    """The jobs' spills handed to the writer; the vocabulary's coverage (checked against
    min_gene_match) and the cells without a gene token."""
    coverage = VocabCoverage.of_genes(fitted.vocab.column_tokens)
    for result in results:
        coverage = coverage.merge(result.coverage)
        for spill in result.spills:
            writer.register(spill)
    coverage.require(config.min_gene_match)
    n_empty = sum(result.n_empty for result in results)
    if n_empty == n_cells:  # a store of special tokens only would train nothing
        raise InputFormatError(
            f"none of the {n_empty:,} cells has a counted gene in the vocabulary (cells without "
            "counts, or a var whose IDs are not the vocabulary's); check that var holds the "
            "vocabulary's gene IDs (or set gene_mapping / gene_column)"
        )
    if n_empty:
        log.warning(
            "%d of %d cells have no gene in the vocabulary (empty droplets?): %s",
            n_empty,
            n_cells,
            "left out, as Geneformer's tokenizer leaves them out"
            if config.drop_empty
            else "kept with no gene token; set drop_empty to leave them out, as Geneformer does",
        )
    return coverage, n_empty
