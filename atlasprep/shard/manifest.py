"""A token store's manifest, read as a stranger wrote it.

A store on disk may come from anyone (a CI artifact, another lab), so nothing in
``manifest.json`` is trusted before it is checked: the format name and version, the type of
every field, each shard path relative and inside ``shards/`` (symlinks resolved), each shard
listed once, and the cell counts adding up. :func:`read_manifest` refuses a manifest with any
problem; :func:`manifest_problems` lists them all (``atlasprep validate``).

Which files are atlasprep's own is decided here too (:func:`own_entry`): a store directory is
written into, resumed or cleared only when it carries atlasprep's marker — a manifest of this
format (a complete store) or :data:`BUILD_MARKER` (a build atlasprep started) — and only the
files whose names atlasprep gives are ever deleted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, overload

from atlasprep import __version__
from atlasprep._io import TEMP_MARK, inside
from atlasprep._names import Scheme
from atlasprep.errors import CorruptStoreError, InputFormatError, SourceError, UnsafePathError

if TYPE_CHECKING:
    from atlasprep._remote import RemotePath, RemoteRoot, StoreRoot

__all__ = [
    "BUILD_MARKER",
    "STORE_FORMAT",
    "STORE_FORMAT_VERSION",
    "ComponentsEntry",
    "HoldoutEntry",
    "Manifest",
    "ShardEntry",
    "SplitsEntry",
    "StoreProblem",
    "StratifyEntry",
    "compose_manifest",
    "manifest_problems",
    "own_entry",
    "read_manifest",
    "read_manifest_json",
    "shard_path",
    "split_columns",
]

STORE_FORMAT = "atlasprep-token-store"
STORE_FORMAT_VERSION = "0.1.0"
# a build atlasprep started and has not finished (removed once the manifest is written)
BUILD_MARKER = ".atlasprep-build.json"
BUILD_FORMAT = "atlasprep-token-store-build"
_TOP_FILES = frozenset(
    {
        "manifest.json",
        "vocab.json",
        "gene_medians.parquet",
        "tokenizer.json",
        "gene_mapping.json",
        "README.md",  # the dataset card (Arrow stores)
        BUILD_MARKER,
    }
)
_TOP_DIRS = frozenset({"shards", ".work"})
SHARD_NAME = re.compile(r"^[A-Za-z0-9_]+-\d{5,}\.(arrow|zarr)$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ShardEntry(TypedDict):
    path: str  # relative to the store: shards/<split>-<NNNNN>.<ext>
    split: str
    n_cells: int
    n_tokens: int
    n_bytes: int
    sha256: str


class VocabEntry(TypedDict):
    path: str
    size: int
    sha256: str


class FileEntry(TypedDict):
    path: str
    sha256: str


class ComponentsEntry(TypedDict):
    n: int  # connected components over the split columns
    largest_share: float  # the largest one's share of the cells
    largest: list[str]  # its values ("column=value" with several columns)


class HoldoutEntry(TypedDict):
    query: str  # as given: tissue=lung
    column: str  # the obs column it matched: tissue_ontology_term_id
    term: str | None  # the term it resolved to (None: matched verbatim)
    label: str | None
    n_values: int  # values taken: the term and its descendants, or 1
    n_cells: int  # cells that matched (the groups linked to them add more)
    values: NotRequired[list[str]]  # the values taken, sorted (stores since 0.1.0's holdout check)


class StratifyEntry(TypedDict):
    column: str
    metric: str  # how divergence is measured
    divergence: dict[str, float]  # split -> divergence of its composition from the whole's
    composition: dict[str, dict[str, int]]  # split -> label -> cells


class SplitsEntry(TypedDict):
    # the obs column(s) whose linked groups the splits take whole, comma-joined (None: one split)
    column: str | None
    n_cells: dict[str, int]
    groups: dict[str, list[str]]  # split -> values (several columns: "column=value")
    # stores built before linked splits have none of the keys below
    columns: NotRequired[list[str]]
    components: NotRequired[ComponentsEntry]
    holdout: NotRequired[list[HoldoutEntry]]
    stratify: NotRequired[StratifyEntry]
    unmet: NotRequired[list[str]]  # fractions the plan could not meet (split_fallback)


def split_columns(splits: Mapping[str, Any]) -> list[str]:
    """The columns a store's splits keep whole, from its manifest (any version: stores before
    linked splits name one ``column``)."""
    columns = splits.get("columns")
    if isinstance(columns, list):
        return [str(c) for c in columns]
    column = splits.get("column")
    return [column] if isinstance(column, str) and column else []


class Manifest(TypedDict, total=False):
    format: str
    format_version: str
    atlasprep_version: str
    n_cells: int
    vocab: VocabEntry
    splits: SplitsEntry
    shards: list[ShardEntry]
    tokenizer: dict[str, Any]
    tokenizer_file: FileEntry  # tokenizer.json (stores built before it was saved have none)
    gene_medians: dict[str, str] | None  # rank: the medians' file and where they came from
    # provenance: the vocabulary's coverage of the corpus, the source as resolved, the build's
    # configuration, and the cells without a gene token
    coverage: dict[str, Any]
    source: dict[str, Any]
    recipe: dict[str, Any]
    empty_cells: dict[str, Any]
    truncated: TruncatedEntry  # cells max_len cut genes from (stores before it say nothing)
    labels: dict[str, str]  # term ID -> label, for the IDs the store holds
    provenance: list[dict[str, Any]]  # the steps that made the cells (atlasprep.provenance)
    presence: dict[str, Any]  # datasets that measured only some genes, and which they did not


class TruncatedEntry(TypedDict):
    max_len: int
    cells: dict[str, int]  # split -> cells with more gene tokens than max_len left room for


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreProblem:
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


def _read_v0(manifest: dict[str, Any]) -> dict[str, Any]:
    """Format 0.x, as this version writes it (0.1.0: stores before tokenizer.json have no
    ``tokenizer_file``, which readers treat as optional)."""
    return manifest


# the readers of each major format version: a manifest is read by its own version's reader,
# which returns it in the current shape (a new major version adds a reader, and an upgrade)
_READERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"0": _read_v0}


def compose_manifest(
    *,
    tokenizer: dict[str, Any],
    tokenizer_file: FileEntry,
    vocab: VocabEntry,
    gene_medians: dict[str, str] | None,
    splits: SplitsEntry,
    shards: list[ShardEntry],
    provenance: dict[str, Any],
) -> Manifest:
    """A complete store's manifest, from its parts; the counts are added up here, from the
    shards (splits without cells keep their 0). ``provenance``: coverage, source, recipe,
    empty_cells — what the build records of itself. Values become plain JSON (``str`` for the
    rest, such as paths)."""
    per_split = dict.fromkeys(splits["n_cells"], 0)
    for shard in shards:
        per_split[shard["split"]] = per_split.get(shard["split"], 0) + shard["n_cells"]
    manifest = {
        "format": STORE_FORMAT,
        "format_version": STORE_FORMAT_VERSION,
        "atlasprep_version": __version__,
        "gene_medians": gene_medians,
        "tokenizer": tokenizer,
        "tokenizer_file": tokenizer_file,
        "vocab": vocab,
        "n_cells": sum(per_split.values()),
        "splits": {**splits, "n_cells": per_split},
        "shards": shards,
        **provenance,
    }
    composed: Manifest = json.loads(json.dumps(manifest, default=str))
    return composed


def as_root(store: StoreRoot | str) -> StoreRoot:
    """A store named by a string (a local path, or a URL) as the root the readers take."""
    if isinstance(store, str):
        from atlasprep._remote import store_root

        return store_root(store)
    return store


def read_manifest_json(store: StoreRoot | str) -> dict[str, Any]:
    """``manifest.json`` parsed, with its format name and version checked (nothing else)."""
    store = as_root(store)
    if not store.is_dir():
        if isinstance(store, Path) and store.is_file():
            raise SourceError(f"{store}: a file, not a token store (a folder holding manifest.json)")
        raise SourceError(f"{store}: no such directory")
    path = store / "manifest.json"
    if not path.exists():
        raise InputFormatError(
            f"{store} has no manifest.json: not a token store, or an unfinished one "
            "(re-run the tokenize command)"
        )
    inside(store, "manifest.json", what=f"{store}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptStoreError(f"{path}: not valid JSON ({exc}); the store is damaged") from None
    except RecursionError:
        raise CorruptStoreError(f"{path}: not a manifest (nested too deeply); the store is damaged") from None
    if not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT:
        raise InputFormatError(f"{path}: not an atlasprep token store manifest (no format {STORE_FORMAT!r})")
    version = manifest.get("format_version")
    read = _READERS.get(version.split(".")[0]) if isinstance(version, str) else None
    if read is None:
        readable = ", ".join(f"{major}.x" for major in _READERS)
        raise CorruptStoreError(
            f"{path}: store format version {version!r}; this atlasprep reads {readable} "
            "(update atlasprep, or rebuild the store with this version)"
        )
    return read(manifest)


def read_manifest(store: StoreRoot | str) -> Manifest:
    """The manifest of a complete store (a path, a URL or a root), every field checked;
    :class:`CorruptStoreError` (or :class:`UnsafePathError` for a path leading out) naming the
    first problem otherwise."""
    store = as_root(store)
    manifest = read_manifest_json(store)
    problems = manifest_problems(store, manifest)
    if problems:
        unsafe = [p for p in problems if p.what.startswith("unsafe path")]
        first = (unsafe or problems)[0]
        more = (
            f" ({len(problems) - 1} more; `atlasprep validate {store}` lists them)"
            if len(problems) > 1
            else ""
        )
        error = UnsafePathError if unsafe else CorruptStoreError
        raise error(f"{store}: {first}{more}; the store was changed or damaged, rebuild it")
    return manifest  # type: ignore[return-value]  # checked field by field above


@overload
def shard_path(store: Path, relative: str) -> Path: ...
@overload
def shard_path(store: RemoteRoot, relative: str) -> RemotePath: ...
@overload
def shard_path(store: StoreRoot, relative: str) -> Path | RemotePath: ...
def shard_path(store: StoreRoot, relative: str) -> Path | RemotePath:
    """A shard's path from the manifest, inside the store's ``shards/`` (else UnsafePathError)."""
    path = inside(store, relative, what=f"{store}/manifest.json shard")
    parts = PurePosixPath(relative).parts
    if len(parts) != 2 or parts[0] != "shards":
        raise UnsafePathError(f"{store}/manifest.json: shard {relative!r} is not a file in shards/")
    return path


def manifest_problems(store: StoreRoot, manifest: Mapping[str, Any]) -> list[StoreProblem]:
    """Everything wrong with a manifest's structure: types, paths, duplicates, totals."""
    problems: list[StoreProblem] = []

    def add(where: str, what: str) -> None:
        problems.append(StoreProblem(where=where, what=what))

    for what in _header_problems(store, manifest):
        add("manifest.json", what)
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        add("manifest.json", "no shards list")
        return problems
    seen: dict[str, int] = {}
    per_split: dict[str, int] = {}
    total = 0
    for i, entry in enumerate(shards):
        where = f"manifest.json shards[{i}]"
        wrong = _entry_problem(entry)
        if wrong:
            add(where, wrong)
            continue
        try:
            shard_path(store, entry["path"])
        except UnsafePathError as exc:
            add(where, f"unsafe path: {exc}")
            continue
        key = PurePosixPath(entry["path"]).as_posix()
        if key in seen:
            add(where, f"{entry['path']} is listed twice (also shards[{seen[key]}])")
            continue
        seen[key] = i
        per_split[entry["split"]] = per_split.get(entry["split"], 0) + entry["n_cells"]
        total += entry["n_cells"]
    n_cells = manifest.get("n_cells")
    if not _is_count(n_cells):
        add("manifest.json", f"n_cells {n_cells!r} is not a count")
    elif not problems and n_cells != total:
        add("manifest.json", f"n_cells is {n_cells}, its shards hold {total}")
    splits = manifest.get("splits")
    declared = splits.get("n_cells") if isinstance(splits, dict) else None
    if not isinstance(declared, dict):
        add("manifest.json", "no splits.n_cells")
    elif not problems:
        for split in sorted(set(declared) | set(per_split)):
            if declared.get(split, 0) != per_split.get(split, 0):
                add(
                    "manifest.json",
                    f"splits.n_cells[{split!r}] is {declared.get(split)}, "
                    f"its shards hold {per_split.get(split, 0)}",
                )
    return problems


def _header_problems(store: StoreRoot, manifest: Mapping[str, Any]) -> list[str]:
    """What is wrong with a manifest's vocabulary entry and its tokenizer's tie order."""
    problems = []
    vocab = manifest.get("vocab")
    if not isinstance(vocab, dict) or not isinstance(vocab.get("sha256"), str):
        problems.append("no vocab entry (path, size, sha256)")
    else:
        try:
            inside(store, vocab.get("path"), what="vocab")
            if vocab.get("path") != "vocab.json":
                problems.append(f"vocab path {vocab.get('path')!r}: the vocabulary is vocab.json")
        except UnsafePathError as exc:
            problems.append(f"unsafe path: {exc}")
    tokenizer = manifest.get("tokenizer")
    tie_order = tokenizer.get("tie_order", "numpy") if isinstance(tokenizer, dict) else "numpy"
    if tie_order not in ("numpy", "stable"):  # absent: a store ranked before the choice, as numpy
        problems.append(f"tokenizer.tie_order {tie_order!r}: expected 'numpy' or 'stable'")
    scheme = tokenizer.get("scheme") if isinstance(tokenizer, dict) else None
    if scheme not in tuple(Scheme):
        problems.append(
            f"tokenizer.scheme {scheme!r}: expected one of {', '.join(repr(str(s)) for s in Scheme)}"
        )
    labels = manifest.get("labels", {})
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        problems.append("labels: expected term ID -> label (text -> text)")
    return problems


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry_problem(entry: object) -> str | None:
    if not isinstance(entry, dict):
        return "not a shard entry"
    for key in ("n_cells", "n_tokens", "n_bytes"):
        if not _is_count(entry.get(key)):
            return f"{key} {entry.get(key)!r} is not a count"
    if not isinstance(entry.get("split"), str) or not entry["split"]:
        return f"split {entry.get('split')!r} is not a split name"
    if not isinstance(entry.get("sha256"), str) or not _SHA256.match(entry["sha256"]):
        return f"sha256 {entry.get('sha256')!r} is not a sha256 digest"
    if not isinstance(entry.get("path"), str):
        return f"path {entry.get('path')!r} is not a path"
    return None


def own_entry(relative: PurePosixPath) -> bool:
    """Whether a path in a store directory is one atlasprep names (and so may delete):
    its top-level files and folders, shards named as it names them, and its temporaries."""
    parts = relative.parts
    name = parts[-1]
    if TEMP_MARK in name:
        return True
    if len(parts) == 1:
        return name in _TOP_FILES or name in _TOP_DIRS
    if parts[0] == "shards" and len(parts) == 2:
        return bool(SHARD_NAME.match(name))
    return False
