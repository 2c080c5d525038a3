"""Gene vocabularies and normalization factors as files: Geneformer's JSON dictionaries."""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from atlasprep.errors import InputFormatError, UsageError

__all__ = ["gene_tokens", "load_gene_mapping", "load_gene_medians", "load_json_dict", "load_token_dictionary"]


def load_json_dict(path: str | Path) -> dict[str, Any]:
    """A JSON object from ``path`` (``.json`` or gzip-compressed ``.json.gz``)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            value = json.load(handle)
    except (UnicodeDecodeError, ValueError) as exc:  # (JSONDecodeError is a ValueError)
        pickled = path.suffix in (".pkl", ".pickle") or _starts_like_a_pickle(path)
        raise InputFormatError(
            f"{path}: a Python pickle, not JSON; atlasprep never loads pickles (loading one can run "
            "code): give the .json dictionaries Geneformer ships beside its .pkl ones"
            if pickled
            else f"{path}: not a JSON file ({exc})"
        ) from None
    except RecursionError:
        raise InputFormatError(f"{path}: not a JSON object of gene -> value (nested too deeply)") from None
    except OSError as exc:
        raise InputFormatError(f"{path}: not a JSON file ({exc})") from None
    if not isinstance(value, dict):
        raise InputFormatError(
            f"{path}: expected a JSON object (gene -> value), found {type(value).__name__}"
        )
    return value


def _starts_like_a_pickle(path: Path) -> bool:
    """Whether a file starts as pickle protocol 2-5 does (``0x80``, then the protocol)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _first_bad(path: Path, value: dict[str, Any], ok: Callable[[object], bool], want: str) -> None:
    for key, item in value.items():
        if not ok(item):
            raise InputFormatError(
                f"{path}: {key!r} maps to {item!r}; every value must be {want} ({len(value):,} entries)"
            )


def load_token_dictionary(path: str | Path) -> dict[str, int]:
    """A token dictionary (token -> id, as Geneformer's): non-negative integer ids, each once,
    ``<pad>`` among the tokens (loaders pad with it)."""
    path = Path(path)
    value = load_json_dict(path)
    _first_bad(path, value, _is_id, "an integer token id from 0 to 2,147,483,647")
    tokens = {str(k): int(v) for k, v in value.items()}
    if len(set(tokens.values())) != len(tokens):
        raise InputFormatError(f"{path}: two tokens share an id; a token dictionary gives each token its own")
    if "<pad>" not in tokens:
        raise InputFormatError(
            f"{path}: no '<pad>' token; add one (Geneformer's dictionaries have <pad> = 0)"
        )
    return tokens


def load_gene_medians(path: str | Path) -> dict[str, float]:
    """Per-gene normalization factors (gene -> nonzero median, as Geneformer's): positive, finite."""
    path = Path(path)
    value = load_json_dict(path)
    _first_bad(path, value, _is_positive, "a positive finite number")
    return {str(k): float(v) for k, v in value.items()}


def load_gene_mapping(path: str | Path) -> dict[str, str]:
    """A gene mapping (an ID or symbol -> Ensembl ID): text to text."""
    path = Path(path)
    value = load_json_dict(path)
    _first_bad(path, value, lambda v: isinstance(v, str) and v != "", "a gene ID (text)")
    return {str(k): str(v) for k, v in value.items()}


def _is_id(value: object) -> bool:  # (ids are stored as int32)
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31


def _is_positive(value: object) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def gene_tokens(
    gene_ids: Sequence[str], tokens: Mapping[str, int], mapping: Mapping[str, str] | None = None
) -> np.ndarray:
    """Each input gene's token (-1: none). With a gene mapping, an ID is upper-cased and
    mapped first, as the rank encoder (Geneformer's ``sum_ensembl_ids``) matches it."""
    if mapping is None:
        return np.array([tokens.get(str(g), -1) for g in gene_ids], dtype=np.int32)
    usable = {k: v for k, v in mapping.items() if v in tokens}
    return np.array([tokens.get(usable.get(str(g).upper(), ""), -1) for g in gene_ids], dtype=np.int32)
