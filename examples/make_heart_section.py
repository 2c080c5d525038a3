"""A synthetic spatial section to try `atlasprep align ccf` on: a 20 x 20 grid of spots, 10 px
apart, with obsm["spatial"] pixel coordinates and a few counts per spot.

    python examples/make_heart_section.py section.h5ad [--side 20]

Your own section (an AnnData with obsm["spatial"]) takes its place.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def grid_section(side: int = 20) -> ad.AnnData:
    """``side`` x ``side`` spots 10 px apart; X holds each spot's row and column and a 1."""
    ij = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(-1, 2)
    return ad.AnnData(
        X=sp.csr_matrix(np.column_stack([ij + 1, np.ones(len(ij))]).astype(np.float32)),
        obs=pd.DataFrame(index=[f"spot{k}" for k in range(len(ij))]),
        var=pd.DataFrame(index=["row", "col", "one"]),
        obsm={"spatial": ij[:, ::-1] * 10.0},
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="The .h5ad to write.")
    parser.add_argument("--side", type=int, default=20, help="Spots per side.")
    opts = parser.parse_args()
    grid_section(opts.side).write_h5ad(opts.out)
    print(f"{opts.out}: {opts.side * opts.side} spots")


if __name__ == "__main__":
    main()
