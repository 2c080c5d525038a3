"""The corpus passes before any token: genes, vocabulary, gene medians, highly variable genes,
context values and paired-modality features, fitted once over the selected cells (in this
process, or map-reduced over ranges of the cells on a runner: :mod:`atlasprep.tokenize.passes`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from atlasprep.errors import UsageError
from atlasprep.sources import (
    CellSource,
)
from atlasprep.sources._paths import split_modality
from atlasprep.tokenize.config import DEFAULT_OBS_COLUMNS, SPECIAL_TOKENS, TokenizeConfig
from atlasprep.tokenize.context import context_token, unknown_token
from atlasprep.tokenize.hvg import GeneMoments
from atlasprep.tokenize.medians import MedianSketch
from atlasprep.tokenize.passes import (
    Partials,
    PassRunner,
    cells_with_feature,
    count_batches,
    map_pass,
    merge_values,
    moment_blocks,
    present_values,
)
from atlasprep.tokenize.segments import KINDS, Segment, atac_idf
from atlasprep.tokenize.tokenizer import PairedModality, Tokenizer
from atlasprep.tokenize.vocab import gene_tokens, load_gene_mapping, load_gene_medians, load_token_dictionary

log = logging.getLogger("atlasprep.tokenize")


@dataclass(frozen=True, slots=True, kw_only=True)
class Vocab:
    tokens: dict[str, int]  # token -> id (special tokens first)
    column_tokens: np.ndarray  # per input column: its gene's id, -1 if not in the vocabulary
    source: str
    medians: dict[str, float] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Dictionaries:
    """The token dictionary, gene medians and gene mapping a build was given (None where not)."""

    tokens: dict[str, int] | None = None
    medians: dict[str, float] | None = None
    mapping: dict[str, str] | None = None

    @classmethod
    def load(cls, config: TokenizeConfig) -> Dictionaries:
        tokens, medians, mapping = config.token_dictionary, config.gene_medians, config.gene_mapping
        loaded = cls(
            tokens=None if tokens is None else load_token_dictionary(tokens),
            medians=None if medians is None or config.scheme != "rank" else load_gene_medians(medians),
            mapping=None if mapping is None else load_gene_mapping(mapping),
        )
        loaded.warn_unpaired(config)
        return loaded

    def warn_unpaired(self, config: TokenizeConfig) -> None:
        """Warn where the vocabulary's genes lack medians (Geneformer ranks only genes with
        one): most often a token dictionary and medians of two releases (gc104M with gc30M)."""
        if self.tokens is None or self.medians is None:
            return
        genes = [t for t in self.tokens if not (t.startswith("<") and t.endswith(">"))]
        missing = [g for g in genes if g not in self.medians]
        if len(missing) > max(10, len(genes) // 100):
            log.warning(
                "%s of the %s genes of %s have no median in %s and are never ranked; are both "
                "from one release (Geneformer's gc104M files together, or its gc30M ones)?",
                f"{len(missing):,}",
                f"{len(genes):,}",
                config.token_dictionary,
                config.gene_medians,
            )


def fit_medians(
    config: TokenizeConfig,
    source: CellSource,
    positions: np.ndarray,
    gene_ids: list[str],
    given: dict[str, float] | None,
    runner: PassRunner | None = None,
) -> dict[str, float] | None:
    """The rank scheme's normalization factors: given, or sketched in a first pass over the cells
    (on a runner: a sketch per range of the cells, merged)."""
    if config.scheme != "rank":
        return None
    if config.gene_medians is not None:
        return given
    log.info("computing gene medians from the corpus (first pass over %d cells)", len(positions))
    sketch = MedianSketch(n_genes=len(gene_ids))
    if runner is not None:
        for partial in map_pass(runner, config, positions, kind="medians", n_genes=len(gene_ids)):
            sketch.merge(partial)
    else:
        for X in count_batches(config, source, positions):
            sketch.add(X)
    values, _ = sketch.medians()
    return {g: float(v) for g, v in zip(gene_ids, values, strict=True) if np.isfinite(v)}


def build_vocab(
    config: TokenizeConfig,
    gene_ids: list[str],
    medians: dict[str, float] | None,
    given: dict[str, int] | None,
    mapping: dict[str, str] | None = None,
) -> Vocab:
    if config.token_dictionary is not None:
        assert given is not None
        tokens = dict(given)  # the context and paired-modality tokens are added to this copy
        origin = str(config.token_dictionary)
    else:
        tokens = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
        for g in dict.fromkeys(gene_ids):
            tokens.setdefault(g, len(tokens))
        origin = "corpus genes"
    # rank matches genes through the mapping (as it encodes); the other schemes have none
    column_tokens = gene_tokens(gene_ids, tokens, mapping if config.scheme == "rank" else None)
    return Vocab(tokens=tokens, column_tokens=column_tokens, source=origin, medians=medians)


def fit_hvg(
    config: TokenizeConfig,
    source: CellSource,
    positions: np.ndarray,
    column_tokens: np.ndarray,
    runner: PassRunner | None = None,
) -> np.ndarray:
    """The ``n_hvg`` most variable vocabulary genes (their input columns), in two passes (on a
    runner: each range's per-batch sums, added in batch order)."""
    in_vocab = np.flatnonzero(column_tokens >= 0)
    if config.n_hvg is not None and config.n_hvg > len(in_vocab):
        raise UsageError(f"n_hvg = {config.n_hvg}: more than the {len(in_vocab)} genes in the vocabulary")
    log.info("selecting %s highly variable genes (two passes over %d cells)", config.n_hvg, len(positions))
    first = GeneMoments(n_genes=len(in_vocab), measured=_measured(source, positions, in_vocab))
    for sums, squares, n_cells in _moment_blocks(config, source, positions, in_vocab, None, runner):
        first.merge(sums, squares, n_cells)
    second = first.clipped()
    for sums, squares, _ in _moment_blocks(config, source, positions, in_vocab, second.clip, runner):
        second.merge(sums, squares)
    return in_vocab[second.top(config.n_hvg or 0)]


def _moment_blocks(
    config: TokenizeConfig,
    source: CellSource,
    positions: np.ndarray,
    columns: np.ndarray,
    clip: np.ndarray | None,
    runner: PassRunner | None,
) -> Partials:
    """A pass's per-block sums, in block order: here, or each range's blocks from a runner."""
    if runner is None:
        return moment_blocks(config, source, positions, columns, clip)
    kind = "moments" if clip is None else "clipped"
    parts = map_pass(runner, config, positions, kind=kind, columns=columns, clip=clip)
    return [block for blocks in parts for block in blocks]


def _measured(source: CellSource, positions: np.ndarray, columns: np.ndarray) -> np.ndarray | None:
    """Per column, the selected cells whose file measured the gene, where files were joined on
    genes they did not all measure (None: every cell measured every gene)."""
    measured_cells = getattr(source, "measured_cells", None)
    if measured_cells is None:
        return None
    counts = np.asarray(measured_cells(positions))[columns]
    return None if (counts == len(positions)).all() else counts


def n_counts_column_of(config: TokenizeConfig, source: CellSource) -> str | None:
    """The obs column holding the cells' totals for ``rank``, if it is to be read."""
    name = config.n_counts_column
    if config.scheme != "rank" or name is None:
        return None
    if name in source.obs_columns:
        log.info("cell totals from obs[%r], as Geneformer reads obs['n_counts']", name)
        return name
    if name != "n_counts":  # asked for by name, not the default
        raise UsageError(f"n_counts_column = {name!r}: not an obs column of the input")
    return None


def stored_obs_columns(config: TokenizeConfig, source: CellSource) -> tuple[str, ...]:
    """The metadata columns to keep: the defaults the source has, or exactly those asked for."""
    if config.obs_columns != DEFAULT_OBS_COLUMNS:
        return config.obs_columns  # a missing one is an error when the first batch is read
    kept = tuple(c for c in config.obs_columns if c in source.obs_columns)
    if len(kept) < len(config.obs_columns):
        skipped = ", ".join(c for c in config.obs_columns if c not in kept)
        log.info("the source has no %s; those columns are left out of the shards", skipped)
    return kept


def hint_geneformer_inputs(
    config: TokenizeConfig, source: CellSource, gene_ids: list[str], vocab: Vocab
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
                    "set gene_column = %s, --gene-column on the command line "
                    "(Geneformer reads var['ensembl_id'])",
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
            "set where = 'filter_pass == 1' (--where) to do the same"
        )


def gene_ids_of(source: CellSource, config: TokenizeConfig) -> list[str]:
    return var_gene_ids(source.var(), config.gene_column)


def var_gene_ids(var: pd.DataFrame, gene_column: str | None) -> list[str]:
    """The gene IDs of a var: its index, or the ``gene_column`` named."""
    if gene_column is None:
        return [str(g) for g in var.index]
    if gene_column not in var.columns:
        raise UsageError(
            f"gene_column = {gene_column!r}: not a var column (var has: {', '.join(map(str, var.columns))})"
        )
    return [str(g) for g in var[gene_column]]


def fit_paired(
    config: TokenizeConfig, positions: np.ndarray, vocab: Vocab, runner: PassRunner | None = None
) -> tuple[tuple[Segment, ...], tuple[Segment, ...]]:
    """Segments and targets of the paired modalities; their tokens extend the vocabulary."""
    if not config.modalities and not config.targets:
        return (), ()
    path, main = split_modality(config.source.inputs[0]) if len(config.source.inputs) == 1 else (None, None)
    if path is None or main is None:
        raise UsageError("modalities and targets need one aligned MuData input (atlasprep align barcodes)")
    budgets = dict(config.segment_max_len)
    next_id = max(vocab.tokens.values()) + 1
    found: dict[str, list[Segment]] = {"segments": [], "targets": []}
    for kind, names in (("segments", config.modalities), ("targets", config.targets)):
        for modality in names:
            if modality not in KINDS or modality == main:
                raise UsageError(f"{modality!r}: pair the RNA with atac or prot")
            spec = f"{path}:{modality}"
            features, idf = paired_features(spec, modality, positions, config, runner)
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


def paired_features(
    spec: str, modality: str, positions: np.ndarray, config: TokenizeConfig, runner: PassRunner | None = None
) -> tuple[list[str], np.ndarray | None]:
    """A paired modality's features and, for ATAC, the corpus IDF (a first pass; on a runner:
    each range's counts of cells per peak, added)."""
    from atlasprep.sources.anndata import AnnDataSource  # anndata: only for a paired file

    other = AnnDataSource([spec])
    try:
        features = [str(f) for f in other.var().index]
        if modality != "atac":
            return features, None
        n = len(features)
        if runner is not None:
            parts = map_pass(runner, config, positions, kind="peaks", spec=spec, n_features=n)
            with_peak = np.asarray(np.sum(parts, axis=0, dtype=np.int64))
        else:
            with_peak = cells_with_feature(other, positions, config.source.batch_size, n)
        return features, atac_idf(with_peak, len(positions))
    finally:
        other.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class Fitted:
    """Everything the corpus passes found, fixed before the first token is made."""

    gene_ids: list[str]  # the source's genes, in its var order
    vocab: Vocab  # its tokens final: genes, then context values, then paired features
    hvg: np.ndarray | None  # bin with n_hvg: the columns kept (the tokenizer names their genes)
    obs_columns: tuple[str, ...]  # stored beside the tokens
    segments: tuple[Segment, ...]
    targets: tuple[Segment, ...]
    tokenizer: Tokenizer  # everything that turns a cell into tokens


def fit(
    config: TokenizeConfig,
    source: CellSource,
    positions: np.ndarray,
    given: Dictionaries,
    runner: PassRunner | None = None,
) -> Fitted:
    """The passes over the selected cells: medians (rank), the vocabulary and its context and
    paired-modality tokens (in that order: ids follow it), HVG (bin with n_hvg). On a runner the
    passes over the cells are map-reduced over ranges of them, to the same result."""
    gene_ids = gene_ids_of(source, config)
    medians = fit_medians(config, source, positions, gene_ids, given.medians, runner)
    vocab = build_vocab(config, gene_ids, medians, given.tokens, given.mapping)
    hint_geneformer_inputs(config, source, gene_ids, vocab)
    hvg = fit_hvg(config, source, positions, vocab.column_tokens, runner) if config.n_hvg else None
    if config.context:  # the values present, sorted, extend the vocabulary after the genes
        present = _context_values(config, source, positions, runner)
        for column in config.context:
            for value in present[column]:
                vocab.tokens.setdefault(context_token(column, value), max(vocab.tokens.values()) + 1)
    segments, targets = fit_paired(config, positions, vocab, runner)
    for column in config.context:  # last, so no other token's id moves: new data's unseen values
        vocab.tokens.setdefault(unknown_token(column), max(vocab.tokens.values()) + 1)
    n_counts_column = n_counts_column_of(config, source)
    tokens = vocab.tokens
    # only what touches the vocabulary is kept: the encoders read nothing else
    medians = None if vocab.medians is None else {g: m for g, m in vocab.medians.items() if g in tokens}
    mapping = None if given.mapping is None else {k: v for k, v in given.mapping.items() if v in tokens}
    tokenizer = Tokenizer(
        scheme=config.scheme,
        tokens=vocab.tokens,
        max_len=config.max_len,
        n_bins=config.n_bins,
        special_tokens=config.special_tokens,
        seed=config.seed,
        medians=medians,
        gene_mapping=mapping if config.scheme == "rank" else None,
        hvg_genes=None if hvg is None else tuple(gene_ids[c] for c in hvg),
        n_counts_column=n_counts_column,  # None unless rank reads it
        tie_order=config.tie_order,
        context=config.context,
        paired=tuple(_paired_modality(s, "segment") for s in segments)
        + tuple(_paired_modality(t, "target") for t in targets),
    )
    return Fitted(
        gene_ids=gene_ids,
        vocab=vocab,
        hvg=hvg,
        tokenizer=tokenizer,
        obs_columns=stored_obs_columns(config, source),
        segments=segments,
        targets=targets,
    )


def _context_values(
    config: TokenizeConfig, source: CellSource, positions: np.ndarray, runner: PassRunner | None
) -> dict[str, list[str]]:
    if runner is None:
        return present_values(source, positions, config.context)
    parts = map_pass(runner, config, positions, kind="context", context=config.context)
    return merge_values(parts, config.context)


def _paired_modality(segment: Segment, role: Literal["segment", "target"]) -> PairedModality:
    idf = None if segment.idf is None else tuple(float(v) for v in segment.idf)
    return PairedModality(
        modality=segment.modality, role=role, budget=segment.budget, features=segment.features, idf=idf
    )
