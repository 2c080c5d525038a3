"""Bring any dataset into CELLxGENE terms and Ensembl genes (`harmonize`), and check it (`validate`).

``validate_anndata`` checks a slice against CELLxGENE schema 7.1.0 (and HCA Tier 1 with
``profile="hca"``); ``load_asctb`` / ``check_cell_types`` compare its (tissue, cell type) pairs with
an HRA ASCT+B table.
"""

from atlasprep.harmonize.api import HarmonizeConfig, HarmonizeReport, harmonize
from atlasprep.harmonize.asctb import AsctbTable, check_cell_types, load_asctb
from atlasprep.harmonize.genes import GeneMapping, map_genes
from atlasprep.harmonize.labels import LabelMapping, map_values
from atlasprep.harmonize.validate import (
    HCA_OBS,
    HCA_UNS,
    REQUIRED_OBS,
    Problem,
    Profile,
    ValidationReport,
    validate_anndata,
)

__all__ = [
    "HCA_OBS",
    "HCA_UNS",
    "REQUIRED_OBS",
    "AsctbTable",
    "GeneMapping",
    "HarmonizeConfig",
    "HarmonizeReport",
    "LabelMapping",
    "Problem",
    "Profile",
    "ValidationReport",
    "check_cell_types",
    "harmonize",
    "load_asctb",
    "map_genes",
    "map_values",
    "validate_anndata",
]
