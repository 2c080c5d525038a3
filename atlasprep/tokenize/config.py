"""What `tokenize` is asked (:class:`TokenizeConfig`, every value checked once) and what it answers."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atlasprep._checks import (
    as_paths,
    check_choice,
    check_fraction,
    check_int,
    check_name,
    check_names,
    invalid,
)
from atlasprep._names import DEFAULT_OBS_COLUMNS, TOKENIZE_BATCH_SIZE, Scheme, TieOrder  # noqa: F401  (re-exported)
from atlasprep.errors import UsageError
from atlasprep.shard.format import ShardFormatName
from atlasprep.shard.manifest import Manifest
from atlasprep.sources import SourceSpec
from atlasprep.tokenize.segments import KINDS

log = logging.getLogger("atlasprep.tokenize")


# ids, offsets, values, and each cell's gene tokens before max_len cut them
Encoded = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]


SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<mask>", "<cls>", "<eos>")


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenizeConfig:
    """Everything `atlasprep tokenize` is asked; defaults live here and the CLI reads them."""

    source: SourceSpec  # where cells come from and which: filter, sampling, genes
    out: Path
    scheme: Scheme = Scheme.rank  # a plain "rank" is taken too
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
    # rank: how genes of equal value are ordered (TieOrder); "numpy" is Geneformer's exact order
    tie_order: TieOrder = TieOrder.numpy  # a plain "stable" is taken too
    assume_normalized: bool = False  # accept non-integer X for rank/bin
    min_gene_match: float = 0.0
    obs_columns: tuple[str, ...] = DEFAULT_OBS_COLUMNS
    context: tuple[str, ...] = ()  # obs columns whose value becomes one token after <cls>
    shard_cells: int = 10_000
    shard_bytes: int | None = None  # instead of shard_cells: cut shards at this many bytes
    shuffle: bool = True
    seed: int = 0
    # obs column(s) whose linked groups the splits take whole: "donor_id", or several
    # (("donor_id", "dataset_id"), or "donor_id,dataset_id"): no value of any on two sides
    split_by: str | tuple[str, ...] | None = None
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    # "COLUMN=VALUE" (or a bare value of a one-column split_by): those cells, and every group
    # linked to them, go to test; an ontology field takes the term and its descendants
    holdout: tuple[str, ...] = ()
    holdout_exact: bool = False  # holdout terms without their descendants
    stratify: str | None = None  # obs column whose composition each split keeps close to the whole's
    split_fallback: bool = False  # a group too large for the fractions: keep going, and record it
    format: ShardFormatName = ShardFormatName.arrow  # a plain "arrow" is taken too
    overwrite: bool = False
    # cells without a single vocabulary gene (empty droplets, a var of symbols): kept as their
    # special tokens only, or left out of the store, as Geneformer's tokenizer leaves them out
    drop_empty: bool = False
    # an aligned MuData (source inputs "file.h5mu:rna"): paired modalities as token segments
    # after the RNA tokens ("atac", "prot"), each within its budget, or stored whole as targets
    modalities: tuple[str, ...] = ()
    segment_max_len: tuple[tuple[str, int], ...] = ()
    targets: tuple[str, ...] = ()
    # a saved tokenizer (a store, an exported tokenizer folder, or its tokenizer.json): new data
    # tokenized exactly as that corpus was, no corpus passes; it fixes the encoding fields
    tokenizer: Path | None = None

    def __post_init__(self) -> None:
        """Every value checked here, once, before any work (the source's in its own config):
        the CLI, recipes and the Python API refuse the same values with the same message."""
        if not isinstance(self.source, SourceSpec):
            raise invalid("source", self.source, "must be a SourceSpec (where the cells come from)")
        as_paths(self, "out", "token_dictionary", "gene_medians", "gene_mapping", "tokenizer")
        _check_encoding(self)
        _check_shards(self)
        _check_splits(self)
        _check_paired(self)
        _check_tokenizer(self)
        for name in ("token_dictionary", "gene_medians", "gene_mapping"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise invalid(name, str(path), "no such file")

    @property
    def split_columns(self) -> tuple[str, ...]:
        """``split_by`` as a tuple of columns (empty without one)."""
        if self.split_by is None:
            return ()
        return (self.split_by,) if isinstance(self.split_by, str) else tuple(self.split_by)


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TokenizeConfig)}


def _check_encoding(config: TokenizeConfig) -> None:
    check_choice("scheme", config.scheme, tuple(Scheme))
    object.__setattr__(config, "scheme", Scheme(config.scheme))  # "rank" given, Scheme.rank kept
    # room for a gene token (rank with special tokens: between <cls> and <eos>); lengths are int32
    least = 3 if config.scheme == "rank" and config.special_tokens else 1
    check_int("max_len", config.max_len, at_least=least, at_most=2**31 - 1)
    # scGPT's binning: bin 0 holds zeros, and the edges of bins 1… need two quantiles at least
    check_int("n_bins", config.n_bins, at_least=3)
    if config.n_hvg is not None:
        check_int("n_hvg", config.n_hvg, at_least=1)
        if config.scheme != "bin":
            raise invalid(
                "n_hvg",
                config.n_hvg,
                f"selects genes for scheme = 'bin' (scGPT); drop it for scheme = {str(config.scheme)!r}",
            )
    check_choice("tie_order", config.tie_order, tuple(t.value for t in TieOrder))
    object.__setattr__(config, "tie_order", TieOrder(config.tie_order))
    if config.tie_order != TieOrder.numpy and config.scheme != "rank":
        raise invalid(
            "tie_order",
            str(config.tie_order),
            f"orders the genes of scheme = 'rank' (Geneformer); drop it for scheme = {str(config.scheme)!r}",
        )
    check_fraction("min_gene_match", config.min_gene_match)
    for name in ("gene_column", "n_counts_column"):
        check_name(name, getattr(config, name))
    check_names("obs_columns", config.obs_columns)
    check_names("context", config.context)


def _check_shards(config: TokenizeConfig) -> None:
    check_choice("format", config.format, tuple(ShardFormatName))
    object.__setattr__(config, "format", ShardFormatName(config.format))
    check_int("shard_cells", config.shard_cells, at_least=1)
    if config.shard_bytes is not None:
        check_int("shard_bytes", config.shard_bytes, at_least=1)
        if config.shard_cells != _DEFAULTS["shard_cells"]:
            raise UsageError(
                f"shard_bytes = {config.shard_bytes!r} and shard_cells = {config.shard_cells!r}: "
                "cut shards by cells or by bytes, not both"
            )
    check_int("seed", config.seed, at_least=0, at_most=2**64 - 1)


def _check_splits(config: TokenizeConfig) -> None:
    split = config.split
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
    by = config.split_by
    if isinstance(by, list | tuple) or (isinstance(by, str) and "," in by):
        names = tuple(n.strip() for n in by.split(",")) if isinstance(by, str) else tuple(by)
        if len(set(names)) != len(names) or not names:
            raise invalid("split_by", by, "name each column once")
        check_names("split_by", names)
        object.__setattr__(config, "split_by", names[0] if len(names) == 1 else names)
    else:
        check_name("split_by", by)
    check_names("holdout", config.holdout)
    check_name("stratify", config.stratify)
    for name in ("holdout_exact", "split_fallback"):
        if not isinstance(getattr(config, name), bool):
            raise invalid(name, getattr(config, name), "must be true or false")
    if config.split_by is None:
        needs = {
            "split": split != _DEFAULTS["split"],
            "holdout": bool(config.holdout),
            "stratify": config.stratify is not None,
            "split_fallback": config.split_fallback,
        }
        for name, given in needs.items():
            if given:
                raise invalid(
                    name,
                    getattr(config, name),
                    "applies to a column's groups (a column such as donor_id): name it, set split_by",
                )
    if config.holdout_exact and not config.holdout:
        raise invalid("holdout_exact", True, "applies to holdout terms; give a holdout, e.g. tissue=lung")
    if len(config.split_columns) > 1:
        bare = [h for h in config.holdout if "=" not in h]
        if bare:
            raise invalid("holdout", bare[0], "name its column (COLUMN=VALUE) when split_by has several")


def _check_paired(config: TokenizeConfig) -> None:
    for name in ("modalities", "targets"):
        check_names(name, getattr(config, name))
        for modality in getattr(config, name):
            check_choice(name, modality, tuple(KINDS))
    for pair in config.segment_max_len:
        if not (isinstance(pair, tuple) and len(pair) == 2 and pair[0] in config.modalities):
            raise invalid(
                "segment_max_len",
                config.segment_max_len,
                f"each budget is (modality, tokens) for a modality of modalities = {config.modalities!r}",
            )
        check_int("segment_max_len", pair[1], at_least=1, at_most=2**31 - 1)


def parse_max_len(text: str) -> dict[str, int]:
    """``max_len`` as the flag and a recipe may give it: ``1536`` (the RNA's), or budgets per
    modality, ``rna=1536,atac=512`` (an aligned MuData's segments)."""
    budgets: dict[str, int] = {}
    for part in text.split(","):
        name, sep, value = part.rpartition("=")
        if not value.strip().isdigit() or (sep and not name.strip()):
            raise invalid("max_len", text, "expected a number, or rna=1536,atac=512")
        modality = name.strip() if sep else "rna"
        if modality in budgets:
            raise invalid("max_len", text, f"{modality} has two budgets; give each modality one")
        budgets[modality] = int(value)
    return budgets


# the fields a saved tokenizer fixes: with ``tokenizer``, each must stay at its default
TOKENIZER_FIELDS: tuple[str, ...] = (
    "scheme",
    "max_len",
    "n_bins",
    "n_hvg",
    "token_dictionary",
    "gene_medians",
    "gene_mapping",
    "special_tokens",
    "tie_order",
    "context",
    "modalities",
    "segment_max_len",
    "targets",
)


def _check_tokenizer(config: TokenizeConfig) -> None:
    if config.tokenizer is None:
        return
    if not Path(config.tokenizer).exists():
        raise invalid("tokenizer", str(config.tokenizer), "no such store, folder or file")
    for name in TOKENIZER_FIELDS:
        value = getattr(config, name)
        if value != _DEFAULTS[name]:
            raise invalid(
                name, value, f"the tokenizer ({config.tokenizer}) fixes it; drop it, or drop the tokenizer"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenizeResult:
    out: Path
    manifest: Manifest
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"out": str(self.out), "seconds": round(self.seconds, 3), **self.manifest}
