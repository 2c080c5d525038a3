"""Tokenizers: Geneformer rank value encoding, scGPT value binning, raw log1p values.

Batch kernels over CSR cells; :class:`Tokenizer` holds a fitted tokenizer as a value (saved with
every store, loaded with ``Tokenizer.from_store``); the token store and the `tokenize` command
build on them.
"""

from atlasprep.tokenize.binning import bin_values
from atlasprep.tokenize.rank import RankedCells, RankEncoder
from atlasprep.tokenize.raw import RawCells, raw_encode
from atlasprep.tokenize.tokenizer import TokenizedBatch, Tokenizer
from atlasprep.tokenize.vocab import load_json_dict

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
