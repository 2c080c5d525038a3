"""Tokenizers: Geneformer rank value encoding, scGPT value binning, raw log1p values.

Batch kernels over CSR cells; the token store and the `tokenize` command build on them.
"""

from atlasprep.tokenize.binning import bin_values
from atlasprep.tokenize.rank import RankedCells, RankEncoder
from atlasprep.tokenize.raw import RawCells, raw_encode
from atlasprep.tokenize.vocab import load_json_dict

__all__ = ["RankEncoder", "RankedCells", "RawCells", "bin_values", "load_json_dict", "raw_encode"]
