"""Tokenizers: Geneformer-compatible rank value encoding (more schemes and the token store to come)."""

from atlasprep.tokenize.rank import RankedCells, RankEncoder
from atlasprep.tokenize.vocab import load_json_dict

__all__ = ["RankEncoder", "RankedCells", "load_json_dict"]
