"""Reading a token store back: what it holds (`inspect`) and whether it keeps its word (`validate`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from atlasprep._io import TEMP_MARK, inside
from atlasprep.errors import AtlasprepError, CorruptStoreError, InputFormatError
from atlasprep.shard.cell_checks import CELL_ID, CellIds, HoldoutCheck
from atlasprep.shard.format import ShardReader, format_for, sha256_of, size_of
from atlasprep.shard.manifest import (
    BUILD_MARKER,
    Manifest,
    ShardEntry,
    StoreProblem,
    as_root,
    manifest_problems,
    read_manifest,
    read_manifest_json,
    shard_path,
    split_columns,
)

if TYPE_CHECKING:
    from atlasprep._remote import StoreRoot

log = logging.getLogger("atlasprep.shard")

__all__ = [
    "Leak",
    "StoreProblem",
    "StoreSummary",
    "Verify",
    "check_shards",
    "find_leaks",
    "inspect_store",
    "load_vocab",
    "open_shard",
    "open_store",
    "read_manifest",
    "read_shard",
    "shard_n_cells",
    "validate_store",
]

Verify = Literal["size", "sha256"]
# what reading a damaged shard raises (pyarrow, zarr, numpy, json)
_DAMAGED = (pa.ArrowException, OSError, KeyError, ValueError, TypeError)


def read_shard(store: StoreRoot | str, relative: str) -> pa.Table:
    """A shard as an Arrow table, whatever its format (its path checked to stay inside)."""
    store = as_root(store)
    try:
        return open_shard(store, relative).read_table()
    except _DAMAGED as exc:
        path = shard_path(store, relative)
        raise CorruptStoreError(f"{path}: cannot read the shard ({exc}); the store is damaged") from None


def open_shard(store: StoreRoot | str, relative: str) -> ShardReader:
    """A shard of a local store or one in object storage, open for reading by its format."""
    path = shard_path(as_root(store), relative)
    if isinstance(path, Path):
        return format_for(path).open(path)
    from atlasprep.shard.remote import open_remote_shard  # fsspec only for a store that needs it

    return open_remote_shard(path)


def shard_n_cells(path: Path) -> int:
    """A shard's cell count from its metadata, without reading its tokens."""
    return format_for(path).open(path).n_cells


def check_shards(
    store: StoreRoot, shards: Sequence[ShardEntry], *, verify: Verify = "size"
) -> list[StoreProblem]:
    """Each listed shard present, with the byte size and cell count the manifest says (cheap), and
    with ``verify="sha256"`` the bytes it says too. (In object storage: the sizes from one
    listing, :func:`atlasprep.shard.remote.check_remote_shards`.)"""
    if not isinstance(store, Path):
        from atlasprep.shard.remote import check_remote_shards

        return check_remote_shards(store, shards, verify=verify)
    problems = []
    for entry in shards:
        path = shard_path(store, entry["path"])
        what = _shard_problem(path, entry, verify)
        if what:
            problems.append(StoreProblem(where=entry["path"], what=what))
    return problems


def _shard_problem(path: Path, entry: ShardEntry, verify: Verify) -> str | None:
    if not path.exists():
        return "missing"
    if path.is_symlink():
        return "a symlink; shards are files of the store"
    try:
        n_bytes = size_of(path)
        if n_bytes != entry["n_bytes"]:
            return f"{n_bytes} bytes, the manifest says {entry['n_bytes']} (the file changed or is damaged)"
        if verify == "sha256" and sha256_of(path) != entry["sha256"]:
            return "sha256 differs from the manifest (the file changed or is damaged)"
        n = shard_n_cells(path)
    except _DAMAGED as exc:
        return f"cannot be read ({exc})"
    if n != entry["n_cells"]:
        return f"{n} cells, the manifest says {entry['n_cells']}"
    return None


def open_store(store: StoreRoot, *, verify: Verify = "size") -> Manifest:
    """A complete store's manifest, checked (:func:`read_manifest`), with every listed shard
    present at the size and cell count it says (and its sha256 with ``verify="sha256"``):
    :class:`CorruptStoreError` naming the first shard that is not."""
    manifest = read_manifest(store)
    problems = check_shards(store, manifest["shards"], verify=verify)
    if problems:
        more = f" ({len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CorruptStoreError(
            f"{store}: {problems[0]}{more}; the store was changed or damaged "
            f"(`atlasprep validate {store}` lists every problem); rebuild it"
        )
    return manifest


def load_vocab(store: StoreRoot, manifest: Manifest) -> dict[str, int]:
    """``vocab.json``, checked: present, the bytes the manifest hashed, token -> non-negative id,
    ids unique, ``<pad>`` among them (the loader pads with it)."""
    path = inside(store, manifest["vocab"]["path"], what=f"{store}/manifest.json vocab")
    if not path.is_file():
        raise CorruptStoreError(f"{path}: missing; a token store needs its vocabulary (rebuild the store)")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest["vocab"]["sha256"]:
        raise CorruptStoreError(f"{path}: sha256 differs from the manifest (the vocabulary was edited)")
    try:
        vocab = json.loads(data)
    except ValueError as exc:
        raise CorruptStoreError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(vocab, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in vocab.values()
    ):
        raise CorruptStoreError(f"{path}: not a vocabulary (token -> non-negative integer id)")
    if len(set(vocab.values())) != len(vocab):
        raise CorruptStoreError(f"{path}: two tokens share an id")
    if "<pad>" not in vocab:
        raise CorruptStoreError(f"{path}: no <pad> token; the loader pads batches with it")
    return vocab


def unlisted_files(store: StoreRoot, manifest: Manifest) -> list[StoreProblem]:
    """Files in ``shards/`` the manifest does not list (stale shards of an earlier build, temp
    files, strangers: readers of ``shards/`` would take them for cells), and a build's leftovers."""
    if not isinstance(store, Path):
        from atlasprep.shard.remote import remote_unlisted

        return remote_unlisted(store, manifest)
    listed = {entry["path"] for entry in manifest.get("shards", [])}
    problems = []
    shards = store / "shards"
    if shards.is_dir():
        for path in sorted(shards.iterdir()):
            relative = f"shards/{path.name}"
            if relative not in listed:
                kind = "a temporary file of an interrupted build" if TEMP_MARK in path.name else "not listed"
                problems.append(StoreProblem(where=relative, what=f"{kind} in the manifest"))
    for name in (".work", BUILD_MARKER):
        if (store / name).exists():
            problems.append(StoreProblem(where=name, what="left by an unfinished build"))
    return problems


def stored_columns(store: StoreRoot) -> list[str]:
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
    # how the splits were made: columns, linked groups, holdouts, stratification (the manifest's)
    split_plan: dict[str, Any] = field(default_factory=dict)
    truncated: dict[str, int] = field(default_factory=dict)  # split -> cells max_len cut genes from
    max_len: int | None = None
    labels: dict[str, str] = field(default_factory=dict)  # term ID -> label (the manifest's)

    def to_json(self) -> dict[str, Any]:
        return {
            "n_cells": self.n_cells,
            "n_tokens": self.n_tokens,
            "splits": self.splits,
            "shards": self.shards,
            "length": self.length,
            "length_histogram": self.length_histogram,
            "composition": self.composition,
            "split_plan": self.split_plan,
            "truncated": {"max_len": self.max_len, "cells": self.truncated},
            "labels": {t: self.labels[t] for c in self.composition.values() for t in c if t in self.labels},
        }


def inspect_store(store: StoreRoot, *, columns: Sequence[str] = (), top: int = 10) -> StoreSummary:
    """Cells and tokens per split, the length distribution and composition by obs columns."""
    manifest = open_store(store)
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
        split_plan=_split_plan(manifest),
        truncated=dict(manifest["truncated"]["cells"]) if "truncated" in manifest else {},
        max_len=manifest["truncated"]["max_len"] if "truncated" in manifest else None,
        labels=dict(manifest.get("labels") or {}),
    )


def _split_plan(manifest: Manifest) -> dict[str, Any]:
    """The manifest's account of the splits, without the per-split group lists (long)."""
    splits = manifest["splits"]
    plan: dict[str, Any] = {"columns": split_columns(splits)}
    for key in ("components", "holdout", "unmet"):
        if key in splits:
            plan[key] = splits[key]
    if "stratify" in splits:
        plan["stratify"] = {k: v for k, v in splits["stratify"].items() if k != "composition"}
    return plan


def _value_counts(column: pa.ChunkedArray) -> tuple[list[str], list[int]]:
    counted = pc.value_counts(column.cast(pa.string()))
    return [str(v) for v in counted.field("values").to_pylist()], counted.field("counts").to_pylist()


@dataclass(frozen=True, slots=True, kw_only=True)
class Leak:
    """A value of a column that cells of more than one split hold."""

    column: str
    value: str
    n_cells: dict[str, int]  # split -> cells with the value

    def to_json(self) -> dict[str, Any]:
        return {"column": self.column, "value": self.value, "n_cells": self.n_cells}

    def __str__(self) -> str:
        where = ", ".join(f"{split} {n:,}" for split, n in self.n_cells.items())
        return f"{self.column} {self.value!r} is in {len(self.n_cells)} splits ({where} cells)"


class _LeakCounter:
    """Cells per (value, split) of some columns, a shard at a time (one value_counts each)."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.counts: dict[str, dict[str, dict[str, int]]] = {c: {} for c in columns}
        self.held: set[str] = set()  # the columns some shard counted held
        self.n_shards = 0

    def add(self, columns: Mapping[str, Any], split: str, *, where: str, required: bool = True) -> None:
        """Count one shard's values (Arrow or numpy arrays by column); a column it lacks is an
        error, or (``required=False``, a store whose builder kept the column out) skipped."""
        self.n_shards += 1
        for column, counts in self.counts.items():
            if column not in columns:
                if not required:
                    continue
                raise InputFormatError(f"{where}: the shards hold no column {column!r}")
            self.held.add(column)
            array = columns[column]
            chunked = array if isinstance(array, pa.ChunkedArray) else pa.chunked_array([array])
            for value, n in zip(*_value_counts(chunked), strict=True):
                per_split = counts.setdefault(value, {})
                per_split[split] = per_split.get(split, 0) + n

    def unchecked(self) -> list[str]:
        """The columns no shard counted held (a store whose builder kept them out)."""
        return [c for c in self.counts if c not in self.held] if self.n_shards else []

    def leaks(self) -> list[Leak]:
        return [
            Leak(column=column, value=value, n_cells=dict(sorted(per_split.items())))
            for column, counts in self.counts.items()
            for value, per_split in sorted(counts.items())
            if len(per_split) > 1
        ]


def find_leaks(store: StoreRoot, columns: Sequence[str]) -> list[Leak]:
    """Every value of ``columns`` that cells of two or more splits hold, with its cells per split
    (reads only those columns of each shard)."""
    manifest = open_store(store)
    counter = _LeakCounter(columns)
    for shard in manifest["shards"]:
        path = shard_path(store, shard["path"])
        try:
            reader = open_shard(store, shard["path"])
            stored = reader.columns()
            values = {c: pa.array(reader.strings(c), type=pa.string()) for c in columns if c in stored}
        except _DAMAGED as exc:
            raise CorruptStoreError(f"{path}: cannot read the shard ({exc}); the store is damaged") from None
        counter.add(values, shard["split"], where=str(store))
    return counter.leaks()


def _cell_ids(store: StoreRoot, manifest: Mapping[str, Any]) -> Iterator[tuple[str, pa.Array]]:
    """Each sound shard's split and ``cell_id`` column, again (:meth:`CellIds.repeated`)."""
    for shard in manifest["shards"]:
        with contextlib.suppress(*_DAMAGED):  # (reported by the first pass)
            reader = open_shard(store, shard["path"])
            if CELL_ID in reader.columns():
                yield shard["split"], pa.array(reader.strings(CELL_ID), type=pa.string())


@dataclass(frozen=True, slots=True, kw_only=True)
class _Checks:
    problems: list[StoreProblem] = field(default_factory=list)

    def add(self, where: str, what: str) -> None:
        self.problems.append(StoreProblem(where=where, what=what))


def validate_store(store: StoreRoot) -> list[StoreProblem]:
    """The manifest's structure (paths inside the store, each shard once, counts adding up), every
    shard against it (sha256, cells, tokens), token ids within the vocabulary, no group in two
    splits, and no file in ``shards/`` it does not list. An empty list means the store is sound."""
    manifest = read_manifest_json(store)
    checks = _Checks()
    checks.problems.extend(manifest_problems(store, manifest))
    if checks.problems:  # a manifest that cannot be trusted is not followed any further
        return checks.problems
    max_id = None
    try:
        max_id = max(load_vocab(store, manifest).values(), default=-1)  # type: ignore[arg-type]
    except CorruptStoreError as exc:
        checks.add("vocab.json", str(exc).split(": ", 1)[-1])
    if isinstance(store, Path) and manifest.get("tokenizer_file") is not None:
        from atlasprep.tokenize.tokenizer_files import load_tokenizer

        try:  # tokenizer.json against its sha256, and the medians and mapping it names
            load_tokenizer(store)
        except AtlasprepError as exc:
            checks.add("tokenizer.json", str(exc))
    counter = _LeakCounter(split_columns(manifest["splits"]))
    cell_ids, holdouts = CellIds(), HoldoutCheck(list(manifest["splits"].get("holdout") or []))
    for shard in manifest["shards"]:
        found = check_shards(store, [shard], verify="sha256")
        if found:
            checks.problems.extend(found)
            continue
        table = read_shard(store, shard["path"])
        ids = pc.list_flatten(table["input_ids"])
        if len(ids) != shard["n_tokens"]:
            checks.add(shard["path"], f"{len(ids)} tokens, the manifest says {shard['n_tokens']}")
        if max_id is not None and len(ids):
            low, high = pc.min_max(ids).values()
            if low.as_py() < 0 or high.as_py() > max_id:
                checks.add(shard["path"], f"token ids outside the vocabulary (0..{max_id})")
        named = {c: table[c] for c in counter.counts if c in table.column_names}
        counter.add(named, shard["split"], where=shard["path"], required=False)
        if CELL_ID in table.column_names:
            cell_ids.add(table[CELL_ID])
        holdouts.add({c: table[c] for c in holdouts.columns if c in table.column_names}, shard["split"])
    for column in counter.unchecked():
        log.warning(
            "%s: the shards hold no column %s (a split column), so its leakage was not checked; keep it "
            "in the store (obs_columns) to have it checked",
            store,
            column,
        )
    holdouts.warn_unchecked(store)
    checks.problems.extend(
        StoreProblem(where="manifest.json splits", what=str(leak)) for leak in counter.leaks()
    )
    checks.problems.extend(StoreProblem(where="manifest.json splits", what=p) for p in holdouts.problems())
    repeated = cell_ids.repeated(lambda: _cell_ids(store, manifest))
    checks.problems.extend(StoreProblem(where="shards", what=line) for line in repeated)
    checks.problems.extend(unlisted_files(store, manifest))  # type: ignore[arg-type]
    return checks.problems
