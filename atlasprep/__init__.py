"""atlasprep: training corpora for biology foundation models from cell atlases.

The main entry points, imported on first use (``import atlasprep`` stays light for the CLI)::

    import atlasprep

    adata = atlasprep.get_anndata(census="demo", tissue="lung", cell_type="immune cell")
    spec = atlasprep.SourceSpec(census="demo", filter=atlasprep.CellFilter(tissue="lung"))
    atlasprep.slice_cells(atlasprep.SliceConfig(source=spec, out=Path("lung.h5ad")))
    atlasprep.tokenize_cells(atlasprep.TokenizeConfig(source=spec, out=Path("store/")))
    tokenizer = atlasprep.Tokenizer.from_store("store/")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> the module that defines it
_LAZY = {
    "CellFilter": "atlasprep.sources",
    "SourceSpec": "atlasprep.sources",
    "get_anndata": "atlasprep.slice.memory",
    "SliceConfig": "atlasprep.slice",
    "slice_cells": "atlasprep.slice",
    "HarmonizeConfig": "atlasprep.harmonize",
    "harmonize": "atlasprep.harmonize",
    "validate_anndata": "atlasprep.harmonize.validate",
    "TokenizeConfig": "atlasprep.tokenize.api",
    "tokenize_cells": "atlasprep.tokenize.api",
    "Tokenizer": "atlasprep.tokenize.tokenizer",
    "align_barcodes": "atlasprep.align.barcodes",
    "register_file": "atlasprep.align.ccf",
    "load_recipe": "atlasprep.run",
    "plan_recipe": "atlasprep.run",
    "run_recipe": "atlasprep.run",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'atlasprep' has no attribute {name!r}")
