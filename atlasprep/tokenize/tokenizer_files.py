"""A tokenizer's files in a store: ``tokenizer.json`` (its parameters, the paired modalities'
features and statistics, and the names of the files that hold the rest), ``vocab.json``,
``gene_medians.parquet`` and ``gene_mapping.json``; written with the store, read back checked
against the manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import pyarrow as pa
import pyarrow.parquet as pq

from atlasprep._io import atomic_output, inside, write_bytes_atomic, write_json_atomic
from atlasprep.errors import CorruptStoreError, InputFormatError, OutputExistsError, UsageError
from atlasprep.tokenize.config import TieOrder
from atlasprep.tokenize.tokenizer import PairedModality, Tokenizer
from atlasprep.tokenize.vocab import load_token_dictionary

__all__ = [
    "TOKENIZER_FILE",
    "TokenizerRecord",
    "export_tokenizer",
    "load_tokenizer",
    "load_tokenizer_from",
    "save_tokenizer",
    "tokenizer_record",
]

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_FORMAT = "atlasprep-tokenizer"
TOKENIZER_FORMAT_VERSION = "0.1.0"
_MEDIANS_FILE = "gene_medians.parquet"
_MAPPING_FILE = "gene_mapping.json"


class TokenizerRecord(TypedDict):
    format: str
    format_version: str
    scheme: str
    max_len: int
    n_bins: int
    special_tokens: bool
    seed: int
    n_counts_column: str | None
    # rank: "stable" when asked; absent means "numpy" (Geneformer's), so a default store's
    # tokenizer.json keeps the bytes it had before there was a choice
    tie_order: NotRequired[str]
    context: list[str]
    hvg_genes: list[str] | None
    paired: list[dict[str, Any]]
    vocab: str
    gene_medians: str | None
    gene_mapping: str | None


def tokenizer_record(self: Tokenizer) -> TokenizerRecord:
    """``tokenizer.json``: the parameters, and the files of the store that hold the rest."""
    record: TokenizerRecord = {
        "format": TOKENIZER_FORMAT,
        "format_version": TOKENIZER_FORMAT_VERSION,
        "scheme": self.scheme,
        "max_len": self.max_len,
        "n_bins": self.n_bins,
        "special_tokens": self.special_tokens,
        "seed": self.seed,
        "n_counts_column": self.n_counts_column,
        "context": list(self.context),
        "hvg_genes": None if self.hvg_genes is None else list(self.hvg_genes),
        "paired": [
            {
                "modality": p.modality,
                "role": p.role,
                "budget": p.budget,
                "features": list(p.features),
                "idf": None if p.idf is None else list(p.idf),
            }
            for p in self.paired
        ],
        "vocab": "vocab.json",
        "gene_medians": _MEDIANS_FILE if self.medians is not None else None,
        "gene_mapping": _MAPPING_FILE if self.gene_mapping is not None else None,
    }
    if self.tie_order != TieOrder.numpy:
        record["tie_order"] = str(self.tie_order)
    return record


def save_tokenizer(self: Tokenizer, directory: Path) -> bytes:
    """Write the vocabulary (the bytes are returned, for the manifest's hash), the medians,
    the gene mapping and ``tokenizer.json`` into a store directory."""
    vocab_bytes = json.dumps(dict(self.tokens), sort_keys=True, separators=(",", ":")).encode()
    write_bytes_atomic(directory / "vocab.json", vocab_bytes)
    if self.medians is not None:
        used = sorted(g for g in self.medians if g in self.tokens)
        table = pa.table({"gene_id": used, "median": [self.medians[g] for g in used]})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        write_bytes_atomic(directory / _MEDIANS_FILE, sink.getvalue().to_pybytes())
    if self.gene_mapping is not None:
        mapping = {k: v for k, v in self.gene_mapping.items() if v in self.tokens}
        write_json_atomic(directory / _MAPPING_FILE, mapping)
    write_json_atomic(directory / TOKENIZER_FILE, tokenizer_record(self))
    return vocab_bytes


def load_tokenizer(store: str | Path) -> Tokenizer:
    """The tokenizer a store was built with (its files checked against the manifest)."""
    from atlasprep.shard.store import load_vocab, open_store

    store = Path(store)
    manifest = open_store(store)
    path = inside(store, TOKENIZER_FILE, what=str(store))
    if not path.is_file():
        raise CorruptStoreError(f"{path}: missing; the store was built before tokenizers were saved")
    declared = manifest.get("tokenizer_file")
    if isinstance(declared, dict) and declared.get("sha256") != hashlib.sha256(path.read_bytes()).hexdigest():
        raise CorruptStoreError(f"{path}: sha256 differs from the manifest (the tokenizer was edited)")
    record = _read_record(path)
    return _from_record(store, record, load_vocab(store, manifest))


def load_tokenizer_from(path: str | Path) -> Tokenizer:
    """A saved tokenizer wherever it is: a token store (checked against its manifest), a folder
    that ``tokenizer export`` wrote, or the ``tokenizer.json`` in either (the files it names are
    beside it)."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    if (folder / "manifest.json").is_file():
        return load_tokenizer(folder)
    record_path = path if path.is_file() else path / TOKENIZER_FILE
    if not record_path.is_file():
        raise UsageError(
            f"tokenizer = {str(path)!r}: not a token store, a tokenizer folder or a tokenizer.json "
            "(Tokenizer.export or the tokenizer export command writes a folder)"
        )
    record = _read_record(record_path)
    vocab = inside(folder, str(record.get("vocab") or "vocab.json"), what=f"{record_path} vocab")
    try:
        tokens = load_token_dictionary(vocab)
    except (UsageError, InputFormatError) as exc:
        raise CorruptStoreError(f"{record_path}: its vocabulary: {exc}") from None
    return _from_record(folder, record, tokens)


def export_tokenizer(tokenizer: Tokenizer | str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write a tokenizer (or a store's) alone into a new folder ``out`` (tokenizer.json,
    vocab.json and the medians and mapping it names), for a model card to ship; returns ``out``."""
    if not isinstance(tokenizer, Tokenizer):
        tokenizer = load_tokenizer_from(tokenizer)
    out = Path(out)
    if out.exists() or out.is_symlink():
        stranger = _not_exported(out)  # never replace what we did not write
        if stranger is not None:
            raise UsageError(
                f"out {out}: exists and is not a tokenizer folder ({stranger}); choose a new folder"
            )
        if not overwrite:
            raise OutputExistsError(f"out {out} exists; set overwrite to replace it")
    else:  # a new folder, as ``mkdir -p`` makes one (a model card's tokenizer/ subfolder)
        out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp:
        tmp.mkdir()
        save_tokenizer(tokenizer, tmp)
    return out


_EXPORTED = frozenset({TOKENIZER_FILE, "vocab.json", _MEDIANS_FILE, _MAPPING_FILE})


def _not_exported(folder: Path) -> str | None:
    """Why ``folder`` is not one that :func:`export_tokenizer` wrote (None when it is): a
    directory holding an atlasprep ``tokenizer.json`` and only the files an export writes."""
    if folder.is_symlink() or not folder.is_dir():
        return "not a folder"
    record = folder / TOKENIZER_FILE
    try:
        _read_record(record)
    except (CorruptStoreError, OSError):
        return f"no atlasprep {TOKENIZER_FILE}"
    for entry in sorted(folder.iterdir()):
        if entry.name not in _EXPORTED or entry.is_symlink() or not entry.is_file():
            return f"it holds {entry.name}, which an export does not write"
    return None


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror  # (its text is the path, which the message names already)
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CorruptStoreError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != TOKENIZER_FORMAT:
        raise CorruptStoreError(f"{path}: not an atlasprep tokenizer")
    return record


def _tie_order(store: Path, record: dict[str, Any]) -> TieOrder:
    """The record's tie order; a tokenizer saved before there was a choice ranked as numpy does."""
    value = record.get("tie_order", TieOrder.numpy.value)
    if value not in tuple(t.value for t in TieOrder):
        raise CorruptStoreError(
            f"{store}/{TOKENIZER_FILE}: tie_order {value!r} is not one of "
            f"{', '.join(t.value for t in TieOrder)} (written by a newer atlasprep?)"
        )
    return TieOrder(value)


def _check_fields(store: Path, record: dict[str, Any]) -> None:
    """Refuse a record whose fields are not of their kind (:class:`CorruptStoreError`): a
    newer format, a text where a list is (``context = "tissue"`` read as t, i, s, s, u, e)."""

    def whole(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    def names(v: object) -> bool:
        return isinstance(v, list) and all(isinstance(x, str) for x in v)

    version = record.get("format_version")
    ours = TOKENIZER_FORMAT_VERSION.split(".")[0]
    rules: list[tuple[str, bool, str]] = [
        ("format_version", isinstance(version, str) and version.split(".")[0] == ours, f"{ours}.x"),
        ("max_len", whole(record.get("max_len")), "a whole number"),
        ("n_bins", whole(record.get("n_bins")), "a whole number"),
        ("seed", whole(record.get("seed")), "a whole number"),
        ("special_tokens", isinstance(record.get("special_tokens"), bool), "true or false"),
        ("context", names(record.get("context", [])), "a list of obs columns"),
        ("hvg_genes", record.get("hvg_genes") is None or names(record.get("hvg_genes")), "a list of genes"),
        (
            "n_counts_column",
            record.get("n_counts_column") is None or isinstance(record.get("n_counts_column"), str),
            "a column name",
        ),
        ("paired", isinstance(record.get("paired", []), list), "a list"),
    ]
    for field, ok, want in rules:
        if not ok:
            raise CorruptStoreError(
                f"{store}/{TOKENIZER_FILE}: {field} {record.get(field)!r}: expected {want} (written by a "
                "newer atlasprep, or edited)"
            )


def _from_record(store: Path, record: dict[str, Any], tokens: dict[str, int]) -> Tokenizer:
    medians = mapping = None
    if record.get("gene_medians"):
        path = inside(store, record["gene_medians"], what="tokenizer.json gene_medians")
        try:
            table = pq.read_table(path, columns=["gene_id", "median"])
            medians = dict(zip(table["gene_id"].to_pylist(), table["median"].to_pylist(), strict=True))
        except (OSError, pa.ArrowException, KeyError, ValueError) as exc:
            raise CorruptStoreError(
                f"{path}: the tokenizer's gene medians cannot be read ({_first_line(exc)}); the store or "
                "folder is damaged: copy it again, or build it again"
            ) from None
    if record.get("gene_mapping"):
        target = inside(store, record["gene_mapping"], what="tokenizer.json gene_mapping")
        try:
            mapping = json.loads(target.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise CorruptStoreError(
                f"{target}: the tokenizer's gene mapping cannot be read ({_first_line(exc)}); the store "
                "or folder is damaged: copy it again, or build it again"
            ) from None
    _check_fields(store, record)
    hvg = record.get("hvg_genes")
    try:
        return Tokenizer(
            scheme=record["scheme"],
            tokens=tokens,
            max_len=int(record["max_len"]),
            n_bins=int(record["n_bins"]),
            special_tokens=bool(record["special_tokens"]),
            seed=int(record["seed"]),
            medians=medians,
            gene_mapping=mapping,
            hvg_genes=None if hvg is None else tuple(str(g) for g in hvg),
            n_counts_column=record.get("n_counts_column"),
            tie_order=_tie_order(store, record),
            context=tuple(record.get("context", ())),
            paired=tuple(
                PairedModality(
                    modality=str(p["modality"]),
                    role=p["role"],
                    budget=int(p["budget"]),
                    features=tuple(str(f) for f in p["features"]),
                    idf=None if p.get("idf") is None else tuple(float(v) for v in p["idf"]),
                )
                for p in record.get("paired", ())
            ),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptStoreError(f"{store}/{TOKENIZER_FILE}: incomplete ({exc!r})") from None
