"""Reading a token store back: what it holds (`inspect`) and whether it keeps its word (`validate`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import zarr

from atlasprep.errors import InputFormatError, SourceError
from atlasprep.shard.writer import sha256_of

__all__ = ["StoreProblem", "StoreSummary", "inspect_store", "read_manifest", "read_shard", "validate_store"]


def read_manifest(store: Path) -> dict[str, Any]:
    path = store / "manifest.json"
    if not store.is_dir():
        raise SourceError(f"{store}: no such directory")
    if not path.exists():
        raise InputFormatError(
            f"{store} has no manifest.json: not a token store, or an unfinished one "
            "(re-run the tokenize command)"
        )
    manifest: dict[str, Any] = json.loads(path.read_text())
    if manifest.get("format") != "atlasprep-token-store":
        raise InputFormatError(f"{path}: not an atlasprep token store manifest")
    return manifest


def read_shard(store: Path, relative: str) -> pa.Table:
    """A shard as an Arrow table, from either store format."""
    path = store / relative
    if path.suffix != ".zarr":
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_stream(source).read_all()
    group: Any = zarr.open_group(str(path), mode="r")  # zarr types every member as a union
    offsets = pa.array(group["offsets"][:].astype(np.int32))
    ragged = set(group.attrs["ragged"])
    columns = {}
    for name in group.attrs["columns"]:
        data = group[name][:]
        if data.dtype.kind in ("T", "U", "O"):
            data = data.astype(object)
        columns[name] = (
            pa.ListArray.from_arrays(offsets, pa.array(data)) if name in ragged else pa.array(data)
        )
    return pa.table(columns)


def stored_columns(store: Path) -> list[str]:
    """The columns the store's shards hold (from its first shard)."""
    manifest = read_manifest(store)
    if not manifest["shards"]:
        return []
    return read_shard(store, manifest["shards"][0]["path"]).column_names


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreSummary:
    n_cells: int
    n_tokens: int
    splits: dict[str, dict[str, int]]  # split -> {n_cells, n_tokens, n_shards}
    shards: list[dict[str, Any]]  # path, split, n_cells, n_tokens per shard
    length: dict[str, float]  # min, median, mean, max tokens per cell
    length_histogram: dict[str, list[float]]  # edges, counts
    composition: dict[str, dict[str, int]]  # column -> value -> cells (top values)

    def to_json(self) -> dict[str, Any]:
        return {
            "n_cells": self.n_cells,
            "n_tokens": self.n_tokens,
            "splits": self.splits,
            "shards": self.shards,
            "length": self.length,
            "length_histogram": self.length_histogram,
            "composition": self.composition,
        }


def inspect_store(store: Path, *, columns: Sequence[str] = (), top: int = 10) -> StoreSummary:
    """Cells and tokens per split, the length distribution and composition by obs columns."""
    manifest = read_manifest(store)
    splits: dict[str, dict[str, int]] = {}
    shards: list[dict[str, Any]] = []
    lengths: list[np.ndarray] = []
    counts: dict[str, dict[str, int]] = {c: {} for c in columns}
    for shard in manifest["shards"]:
        entry = splits.setdefault(shard["split"], {"n_cells": 0, "n_tokens": 0, "n_shards": 0})
        entry["n_cells"] += shard["n_cells"]
        entry["n_tokens"] += shard["n_tokens"]
        entry["n_shards"] += 1
        shards.append({k: shard[k] for k in ("path", "split", "n_cells", "n_tokens")})
        table = read_shard(store, shard["path"])  # one shard in memory at a time
        lengths.append(pc.list_value_length(table["input_ids"]).to_numpy())
        for column in columns:
            if column not in table.column_names:
                raise InputFormatError(f"{store}: the shards hold no column {column!r}")
            for value, n in zip(*_value_counts(table[column]), strict=True):
                counts[column][value] = counts[column].get(value, 0) + n
    all_lengths = np.concatenate(lengths) if lengths else np.zeros(0)
    hist, edges = np.histogram(all_lengths, bins=20) if len(all_lengths) else (np.zeros(0), np.zeros(0))
    return StoreSummary(
        n_cells=len(all_lengths),
        n_tokens=int(all_lengths.sum()),
        splits=splits,
        shards=shards,
        length={
            "min": float(all_lengths.min()) if len(all_lengths) else 0.0,
            "median": float(np.median(all_lengths)) if len(all_lengths) else 0.0,
            "mean": float(all_lengths.mean()) if len(all_lengths) else 0.0,
            "max": float(all_lengths.max()) if len(all_lengths) else 0.0,
        },
        length_histogram={"edges": edges.tolist(), "counts": hist.tolist()},
        composition={c: dict(sorted(v.items(), key=lambda kv: -kv[1])[:top]) for c, v in counts.items()},
    )


def _value_counts(column: pa.ChunkedArray) -> tuple[list[str], list[int]]:
    counted = pc.value_counts(column.cast(pa.string()))
    return [str(v) for v in counted.field("values").to_pylist()], counted.field("counts").to_pylist()


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreProblem:
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Checks:
    problems: list[StoreProblem] = field(default_factory=list)

    def add(self, where: str, what: str) -> None:
        self.problems.append(StoreProblem(where=where, what=what))


def validate_store(store: Path) -> list[StoreProblem]:
    """Every shard against the manifest (sha256, cells, tokens), token ids within the vocabulary,
    no group in two splits. An empty list means the store is sound."""
    manifest = read_manifest(store)
    checks = _Checks()
    vocab_path = store / manifest["vocab"]["path"]
    if not vocab_path.exists():
        checks.add("vocab.json", "missing")
        max_id = None
    else:
        data = vocab_path.read_bytes()
        if hashlib.sha256(data).hexdigest() != manifest["vocab"]["sha256"]:
            checks.add("vocab.json", "sha256 differs from the manifest")
        max_id = max(json.loads(data).values(), default=-1)
    column = manifest["splits"].get("column")
    seen: dict[str, str] = {}
    total = 0
    for shard in manifest["shards"]:
        path = store / shard["path"]
        if not path.exists():
            checks.add(shard["path"], "missing")
            continue
        if sha256_of(path) != shard["sha256"]:
            checks.add(shard["path"], "sha256 differs from the manifest (the file changed or is damaged)")
            continue
        table = read_shard(store, shard["path"])
        total += table.num_rows
        if table.num_rows != shard["n_cells"]:
            checks.add(shard["path"], f"{table.num_rows} cells, the manifest says {shard['n_cells']}")
        ids = pc.list_flatten(table["input_ids"])
        if len(ids) != shard["n_tokens"]:
            checks.add(shard["path"], f"{len(ids)} tokens, the manifest says {shard['n_tokens']}")
        if max_id is not None and len(ids):
            low, high = pc.min_max(ids).values()
            if low.as_py() < 0 or high.as_py() > max_id:
                checks.add(shard["path"], f"token ids outside the vocabulary (0..{max_id})")
        if column and column in table.column_names:
            for group in pc.unique(table[column].cast(pa.string())).to_pylist():
                if seen.setdefault(str(group), shard["split"]) != shard["split"]:
                    checks.add(
                        shard["path"], f"{column} {group!r} is in {seen[str(group)]} and {shard['split']}"
                    )
    if total != manifest["n_cells"] and not checks.problems:
        checks.add("manifest.json", f"{total} cells in the shards, the manifest says {manifest['n_cells']}")
    return checks.problems
