"""A token store's dataset card: ``README.md`` with the HuggingFace ``configs`` YAML that names
each split's shard files, so ``datasets.load_dataset("store/")`` gets the splits, and a few lines
for people (what the cells are, how they were tokenized, what to cite). Written with an Arrow
store, before its manifest; see ``docs/store-format.md`` for every file of a store."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["CARD_FILE", "dataset_card"]

CARD_FILE = "README.md"


def dataset_card(manifest: Mapping[str, Any]) -> str:
    """The card of a store whose manifest is ``manifest`` (its shards, splits and tokenizer)."""
    splits: dict[str, list[str]] = {}
    for shard in manifest["shards"]:
        splits.setdefault(str(shard["split"]), []).append(str(shard["path"]))
    yaml = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split, paths in splits.items():
        yaml.append(f"  - split: {split}")
        yaml.append("    path:")
        yaml.extend(f"    - {json.dumps(path)}" for path in sorted(paths))
    yaml += ["tags:", "- single-cell", "- atlasprep", "---", ""]
    tokenizer = manifest.get("tokenizer", {})
    source = manifest.get("source", {})
    counts = ", ".join(f"{split} {n:,}" for split, n in manifest["splits"]["n_cells"].items() if n)
    lines = [
        "# atlasprep token store",
        "",
        f"{manifest['n_cells']:,} cells ({counts}), tokenized with the `{tokenizer.get('scheme')}` scheme "
        f"(max_len {tokenizer.get('max_len')}; vocabulary of {manifest['vocab']['size']:,} tokens in "
        "`vocab.json`), from "
        f"{source.get('kind', 'a source')} `{source.get('uri') or source.get('census_build') or ''}`.",
        "",
        "Each row is a cell: `input_ids` (token ids), `values` where the scheme has them, `length`, "
        "`cell_id`, the obs columns kept and `split`. `manifest.json` lists every shard with its "
        "sha256 and records how the store was built; `tokenizer.json` (with `vocab.json` and "
        "`gene_medians.parquet`) tokenizes new data the same way (`atlasprep tokenize --tokenizer`).",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        'store = load_dataset("path/to/this/store")  # one split per shard group',
        "```",
        "",
        "Load it with PyTorch through `atlasprep.loader.ShardDataset` (every cell once per epoch, "
        "resumable). The format is specified in atlasprep's `docs/store-format.md`.",
        "",
    ]
    return "\n".join(yaml + lines)
