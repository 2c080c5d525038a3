"""Bring any dataset into CELLxGENE terms and Ensembl genes (`harmonize`), and check it (`validate`)."""

from atlasprep.harmonize.api import HarmonizeConfig, HarmonizeReport, harmonize
from atlasprep.harmonize.genes import GeneMapping, map_genes
from atlasprep.harmonize.labels import LabelMapping, map_values

__all__ = [
    "GeneMapping",
    "HarmonizeConfig",
    "HarmonizeReport",
    "LabelMapping",
    "harmonize",
    "map_genes",
    "map_values",
]
