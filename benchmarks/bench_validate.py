"""`atlasprep validate` wall time on the CELLxGENE fixture and on a generated many-cell file,
each in a fresh process (so ontology loading counts), optionally beside cellxgene-schema.

    python benchmarks/bench_validate.py [--cells 200000] [--genes 2000] [--dir /tmp/bench_validate]
        [--cellxgene-schema /work/venv-cxg/bin/cellxgene-schema]

The generated file is ``example_valid.h5ad``'s metadata and genes widened to ``--genes`` human
Ensembl IDs of GENCODE v48 and repeated over ``--cells`` cells: raw.X Poisson counts (CSR float32,
~5% nonzero, every cell distinct and nonzero), X their log1p, a 2-D X_umap. It is written once
and reused. Prints seconds per file and whether it validated; the target is under 3 s for the
small file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURE = HERE.parent.parent / "shared" / "data" / "cellxgene" / "example_valid.h5ad"

_RUN = """
import json, sys, time
t = time.perf_counter()
from atlasprep.harmonize import validate_anndata
report = validate_anndata(sys.argv[1])
print(json.dumps({"ok": report.ok, "seconds": time.perf_counter() - t,
                  "problems": [str(p) for p in report.problems][:3]}))
"""


def make_file(path: Path, n_cells: int, n_genes: int, seed: int = 0) -> Path:
    """A schema-valid file of n_cells × n_genes (written once)."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    from atlasprep.reference import gene_table

    if path.exists():
        return path
    base = ad.read_h5ad(FIXTURE)
    rng = np.random.default_rng(seed)
    genes = gene_table("homo_sapiens").genes.index
    var_names = pd.Index(sorted(rng.choice(genes[genes.str.startswith("ENSG")], n_genes, replace=False)))
    density = 0.05
    nnz_per_row = max(2, int(n_genes * density))
    stride = n_genes // nnz_per_row  # a random offset per cell, then every stride-th gene: sorted, distinct
    cols = rng.integers(0, stride, n_cells)[:, None] + np.arange(nnz_per_row) * stride
    data = rng.poisson(2.0, size=cols.shape).astype(np.float32) + 1
    data[:, 0] = np.arange(n_cells) % 251 + 1  # with the column draw, no two cells alike
    indptr = np.arange(0, n_cells * nnz_per_row + 1, nnz_per_row)
    raw = sp.csr_matrix((data.ravel(), cols.ravel(), indptr), shape=(n_cells, n_genes))
    obs = base.obs.iloc[np.zeros(n_cells, dtype=int)].copy()
    obs.index = [f"cell{i}" for i in range(n_cells)]
    var = pd.DataFrame({"feature_is_filtered": np.zeros(n_genes, bool)}, index=var_names)
    adata = ad.AnnData(X=raw.log1p(), obs=obs, var=var, uns=dict(base.uns))
    adata.raw = ad.AnnData(X=raw, var=pd.DataFrame(index=var_names))
    adata.obsm["X_umap"] = rng.normal(size=(n_cells, 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(path)
    return path


def time_atlasprep(path: Path) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", _RUN, str(path)], check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def time_cellxgene_schema(cli: str, path: Path) -> dict[str, object]:
    start = time.perf_counter()
    done = subprocess.run([cli, "validate", str(path)], capture_output=True, text=True)
    return {"ok": done.returncode == 0, "seconds": time.perf_counter() - start}


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--cells", type=int, default=200_000)
    parser.add_argument("--genes", type=int, default=2_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/bench_validate"))
    parser.add_argument("--cellxgene-schema", default=None, help="its CLI, to time it on the same files")
    args = parser.parse_args()
    big = make_file(args.dir / f"valid_{args.cells}x{args.genes}.h5ad", args.cells, args.genes)
    files = (("fixture (2 cells)", FIXTURE), (f"{args.cells:,} cells x {args.genes:,} genes", big))
    for label, path in files:
        size = path.stat().st_size / 2**20
        result = time_atlasprep(path)
        _line("atlasprep validate", label, size, result)
        if not result["ok"]:
            print("   ", result["problems"])
        if args.cellxgene_schema:
            _line("cellxgene-schema", label, size, time_cellxgene_schema(args.cellxgene_schema, path))


def _line(tool: str, label: str, size: float, result: dict[str, object]) -> None:
    print(f"{tool:<20} {label:<28} {size:8.1f} MB {result['seconds']:7.2f} s  ok={result['ok']}")


if __name__ == "__main__":
    main()
