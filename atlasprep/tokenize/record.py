"""What a store records of its build: the configuration, the tokenizer, the vocabulary files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from typing import Any

from atlasprep import __version__
from atlasprep.shard import ShardInfo
from atlasprep.shard.manifest import STORE_FORMAT, STORE_FORMAT_VERSION
from atlasprep.sources import (
    CellSource,
)
from atlasprep.tokenize.config import TokenizeConfig
from atlasprep.tokenize.coverage import VocabCoverage
from atlasprep.tokenize.encode import SCORING
from atlasprep.tokenize.fit import Fitted, Vocab
from atlasprep.tokenize.medians import MedianSketch
from atlasprep.tokenize.splits import SplitPlan
from atlasprep.tokenize.tokenizer import TOKENIZER_FILE

log = logging.getLogger("atlasprep.tokenize")


def build_spec(config: TokenizeConfig) -> dict[str, Any]:
    """The configuration a store records (and a resumed build must match): where the store
    lives is no part of what it holds."""
    spec = dataclasses.asdict(config)
    for where in ("out", "overwrite"):
        spec.pop(where)
    spec["source"] = {
        k: v for k, v in spec["source"].items() if k not in ("out", "dry_run", "by", "overwrite")
    }
    return spec


def build_manifest(
    config: TokenizeConfig,
    source: CellSource,
    fitted: Fitted,
    coverage: VocabCoverage,
    plan: SplitPlan | None,
    shards: list[ShardInfo],
    n_empty: int,
) -> dict[str, Any]:
    """The store's manifest (its vocabulary files written first): what it holds and how it
    was built."""
    manifest = _manifest(config, source, fitted, coverage, plan, shards)
    manifest["empty_cells"] = {"n": n_empty, "dropped": config.drop_empty}
    tokenizer = manifest["tokenizer"]
    if config.scheme == "rank":
        column = fitted.n_counts_column
        tokenizer["n_counts"] = f"obs[{column!r}]" if column else "sum of the counts over all genes"
    if fitted.segments or fitted.targets:
        tokenizer["segments"] = {
            s.modality: {
                "budget": s.budget,
                "separator": f"<sep:{s.modality}>",
                "n_features": len(s.tokens),
                "scoring": SCORING[s.modality],
            }
            for s in fitted.segments
        }
        tokenizer["targets"] = {
            t.modality: {"scoring": SCORING[t.modality], "features": list(t.features)} for t in fitted.targets
        }
    return manifest


def _manifest(
    config: TokenizeConfig,
    source: CellSource,
    fitted: Fitted,
    coverage: VocabCoverage,
    plan: SplitPlan | None,
    shards: list[ShardInfo],
) -> dict[str, Any]:
    vocab, tokenizer, hvg_genes = fitted.vocab, fitted.tokenizer, fitted.hvg_genes
    per_split = dict.fromkeys(plan.n_cells if plan else ("train",), 0)
    for shard in shards:  # the cells stored: the selection, less any empty cells left out
        per_split[shard.split] = per_split.get(shard.split, 0) + shard.n_cells
    n_cells = sum(per_split.values())
    vocab_bytes = tokenizer.save_files(config.out)
    tokenizer_bytes = (config.out / TOKENIZER_FILE).read_bytes()
    spec = build_spec(config)
    return json.loads(
        json.dumps(
            {
                "format": STORE_FORMAT,
                "format_version": STORE_FORMAT_VERSION,
                "atlasprep_version": __version__,
                "gene_medians": medians_record(config, vocab),
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
                "tokenizer_file": {
                    "path": TOKENIZER_FILE,
                    "sha256": hashlib.sha256(tokenizer_bytes).hexdigest(),
                },
                "shards": [s.to_json() for s in shards],
            },
            default=str,
        )
    )


def medians_record(config: TokenizeConfig, vocab: Vocab) -> dict[str, str] | None:
    if vocab.medians is None:
        return None
    if config.gene_medians is not None:
        origin = str(config.gene_medians)
    else:
        origin = f"sketched from the corpus (within ±{MedianSketch(n_genes=0).relative_error:.2%})"
    return {"path": "gene_medians.parquet", "source": origin}
