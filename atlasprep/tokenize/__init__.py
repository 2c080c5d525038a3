"""Tokenizers: Geneformer-compatible rank value encoding (more schemes and the token store to come)."""

from atlasprep.tokenize.binning import bin_values
from atlasprep.tokenize.rank import RankedCells, RankEncoder
from atlasprep.tokenize.vocab import load_json_dict

__all__ = ["RankEncoder", "RankedCells", "bin_values", "load_json_dict"]
