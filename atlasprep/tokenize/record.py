"""What a store records of its build: the configuration, the tokenizer, the vocabulary files."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

from atlasprep.ontology.labels import labels_of
from atlasprep.shard import ShardInfo
from atlasprep.shard.manifest import Manifest, SplitsEntry, compose_manifest
from atlasprep.sources import (
    CellSource,
)
from atlasprep.tokenize.config import TokenizeConfig
from atlasprep.tokenize.coverage import VocabCoverage
from atlasprep.tokenize.encode import SCORING
from atlasprep.tokenize.fit import Fitted, Vocab
from atlasprep.tokenize.medians import MedianSketch
from atlasprep.tokenize.splits import SPLIT_NAMES, SplitPlan
from atlasprep.tokenize.tokenizer import Tokenizer
from atlasprep.tokenize.tokenizer_files import TOKENIZER_FILE

log = logging.getLogger("atlasprep.tokenize")


def build_spec(config: TokenizeConfig) -> dict[str, Any]:
    """The configuration a store records (and a resumed build must match): where the store
    lives is no part of what it holds."""
    spec = dataclasses.asdict(config)
    for where in ("out", "overwrite"):
        spec.pop(where)
    return spec


def build_manifest(
    config: TokenizeConfig,
    source: CellSource,
    fitted: Fitted,
    coverage: VocabCoverage,
    plan: SplitPlan | None,
    shards: list[ShardInfo],
    n_empty: int,
    *,
    truncated: dict[str, int] | None = None,
    steps: list[dict[str, Any]] | None = None,
    presence: dict[str, Any] | None = None,
    term_ids: Iterable[str] = (),
) -> Manifest:
    """The store's manifest, its tokenizer's files written first: what it holds and how it
    was built."""
    vocab_bytes = fitted.tokenizer.save_files(config.out)
    tokenizer_bytes = (config.out / TOKENIZER_FILE).read_bytes()
    return compose_manifest(
        tokenizer=tokenizer_record(config, fitted),
        tokenizer_file={"path": TOKENIZER_FILE, "sha256": _sha256(tokenizer_bytes)},
        vocab={"path": "vocab.json", "size": len(fitted.vocab.tokens), "sha256": _sha256(vocab_bytes)},
        gene_medians=medians_record(config, fitted.vocab),
        splits=splits_record(plan),
        shards=[s.to_json() for s in shards],
        provenance={
            "coverage": coverage.to_json(),
            "source": source.info.to_json(),
            "recipe": build_spec(config),
            "empty_cells": {"n": n_empty, "dropped": config.drop_empty},
            # cells with more gene tokens than max_len leaves room for, per split
            "truncated": {"max_len": config.max_len, "cells": truncated or {}},
            # each ontology term ID the store holds (obs columns, context tokens), with its label
            "labels": term_labels(term_ids, fitted.tokenizer),
            # the chain of steps that made the cells, this build last (atlasprep.provenance)
            "provenance": steps or [],
            # datasets (or joined files) that measured only some of the genes (absent: all did)
            **({"presence": presence} if presence else {}),
        },
    )


def term_labels(term_ids: Iterable[str], tokenizer: Tokenizer) -> dict[str, str]:
    """Term ID -> label for ``term_ids`` (the values of the shards' ``*_ontology_term_id``
    columns, collected as the cells were encoded) and the context tokens' values, so a store
    names its terms without the ontologies at hand."""
    ids = set(term_ids)
    for column in tokenizer.context:
        prefix = f"<{column}:"
        ids.update(t[len(prefix) : -1] for t in tokenizer.tokens if t.startswith(prefix))
    return labels_of(ids)


def presence_record(source: CellSource, positions: np.ndarray) -> dict[str, Any] | None:
    """Which of the store's genes each dataset of its cells measured, where some did not: the
    datasets, the vocabulary genes each measured, and the genes each left unmeasured (IDs)."""
    presence = getattr(source, "presence", None)
    if presence is None:
        return None
    datasets, matrix = presence(positions)
    if len(datasets) == 0 or matrix.all():
        return None
    genes = source.var().index.astype(str)
    return {
        "datasets": list(datasets),
        "n_measured": [int(n) for n in matrix.sum(axis=1)],
        "unmeasured": {
            d: genes[~row].tolist() for d, row in zip(datasets, matrix, strict=True) if not row.all()
        },
    }


def splits_record(plan: SplitPlan | None) -> SplitsEntry:
    """The manifest's splits: cells per split, the groups each took, and with a plan its linked
    components, holdouts, stratification and any fraction it could not meet."""
    if plan is None:
        return {"column": None, "n_cells": {"train": 0}, "groups": {}}
    record: SplitsEntry = {
        # one column: its name, as stores have always said; several: comma-joined (and listed)
        "column": plan.column,
        "columns": list(plan.columns),
        "n_cells": dict.fromkeys(plan.n_cells, 0),
        "groups": {s: plan.groups_in(s) for s in SPLIT_NAMES},
    }
    if plan.components is not None:
        record["components"] = plan.components
    if plan.holdout:
        record["holdout"] = plan.holdout
    if plan.stratify is not None:
        record["stratify"] = plan.stratify
    if plan.unmet:
        record["unmet"] = plan.unmet
    return record


def tokenizer_record(config: TokenizeConfig, fitted: Fitted) -> dict[str, Any]:
    """The manifest's account of the tokenizer (for people: tokenizer.json is for loading)."""
    hvg = None if fitted.tokenizer.hvg_genes is None else list(fitted.tokenizer.hvg_genes)
    record: dict[str, Any] = {
        "scheme": config.scheme,
        "max_len": config.max_len,
        "n_bins": config.n_bins,
        "hvg": None if hvg is None else {"flavor": "seurat_v3", "span": 0.3, "n": len(hvg), "genes": hvg},
        "special_tokens": config.special_tokens,
        "vocab_source": fitted.vocab.source,
        "context": list(config.context),
        "shard_format": config.format,
    }
    if config.scheme == "rank":
        column = fitted.tokenizer.n_counts_column
        record["n_counts"] = f"obs[{column!r}]" if column else "sum of the counts over all genes"
        # how genes of equal value were ordered: numpy's argsort (Geneformer's, CPU-dependent)
        # or "stable" (ascending token id, the same on every CPU)
        record["tie_order"] = str(fitted.tokenizer.tie_order)
    if fitted.segments or fitted.targets:
        record["segments"] = {
            s.modality: {
                "budget": s.budget,
                "separator": f"<sep:{s.modality}>",
                "n_features": len(s.tokens),
                "scoring": SCORING[s.modality],
            }
            for s in fitted.segments
        }
        record["targets"] = {
            t.modality: {"scoring": SCORING[t.modality], "features": list(t.features)} for t in fitted.targets
        }
    return record


def medians_record(config: TokenizeConfig, vocab: Vocab) -> dict[str, str] | None:
    if vocab.medians is None:
        return None
    if config.gene_medians is not None:
        origin = str(config.gene_medians)
    elif vocab.source.startswith("tokenizer "):  # a saved tokenizer's (tokenize with tokenizer)
        origin = vocab.source
    else:
        origin = f"sketched from the corpus (within ±{MedianSketch(n_genes=0).relative_error:.2%})"
    return {"path": "gene_medians.parquet", "source": origin}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
