"""Tokenizers: Geneformer rank value encoding, scGPT value binning, raw log1p values.

Batch kernels over CSR cells; :class:`Tokenizer` holds a fitted tokenizer as a value (saved with
every store, loaded with ``Tokenizer.from_store``); the token store and the `tokenize` command
build on them. The names below are imported on first use (the kernels compile with numba: not
for a command's ``--help``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atlasprep.tokenize.binning import bin_values
    from atlasprep.tokenize.rank import RankedCells, RankEncoder
    from atlasprep.tokenize.raw import RawCells, raw_encode
    from atlasprep.tokenize.tokenizer import TokenizedBatch, Tokenizer
    from atlasprep.tokenize.vocab import load_json_dict

_LAZY = {
    "bin_values": "binning",
    "RankedCells": "rank",
    "RankEncoder": "rank",
    "RawCells": "raw",
    "raw_encode": "raw",
    "TokenizedBatch": "tokenizer",
    "Tokenizer": "tokenizer",
    "load_json_dict": "vocab",
}

__all__ = [
    "RankEncoder",
    "RankedCells",
    "RawCells",
    "TokenizedBatch",
    "Tokenizer",
    "bin_values",
    "load_json_dict",
    "raw_encode",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"atlasprep.tokenize.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
