"""Tokenizer throughput: atlasprep's batch kernels vs faithful per-cell numpy loops, same cells.

    python benchmarks/bench_tokenize.py [--cells 100000] [--store DIR] [--dictionaries DIR] [--no-e2e]

Reads the cells once (I/O excluded from the timings), then times, on the same CSR batches:
rank (atlasprep RankEncoder vs Geneformer's algorithm as a per-cell loop with argsort) and bin
(atlasprep bin_values vs scGPT's per-cell binning loop).

End to end (h5ad in, shards out): `atlasprep tokenize --input cells.h5ad` in a subprocess, on
the whole corpus and on a quarter of it, with each run's peak RSS, to show that memory does not
grow with the corpus. Geneformer's own TranscriptomeTokenizer is timed on the same h5ad only
when it is importable (it is not a dependency, and not installable from the package index).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
# run a command; print its peak RSS (KB): a fresh process per run, so runs do not mask each other
_PEAK = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def per_cell_rank(X: sp.csr_matrix, tokens: np.ndarray, medians: np.ndarray, keep: int) -> int:
    """Geneformer's rank value encoding, one cell at a time (its tokenize_anndata inner loop)."""
    n = np.asarray(X.sum(axis=1)).ravel()
    vocab = np.flatnonzero(tokens >= 0)
    Xv = X[:, vocab].tocsr()
    norm, tok = medians[vocab], tokens[vocab]
    total = 0
    for i in range(Xv.shape[0]):
        s, e = Xv.indptr[i], Xv.indptr[i + 1]
        values = Xv.data[s:e] / n[i] * 10_000 / norm[Xv.indices[s:e]]
        total += len(tok[Xv.indices[s:e]][np.argsort(-values)][:keep])
    return total


def geneformer_loop(X: sp.csr_matrix, tokens: np.ndarray, medians: np.ndarray, keep: int) -> int:
    """Geneformer's tokenize_anndata loop as it runs: per 512-cell chunk the normalized matrix
    (scipy ops), then per cell its row (``X_norm[i]``) ranked with argsort."""
    n = np.asarray(X.sum(axis=1)).ravel()
    vocab = np.flatnonzero(tokens >= 0)
    norm, tok = medians[vocab], tokens[vocab]
    total = 0
    for start in range(0, X.shape[0], 512):
        view = X[start : start + 512][:, vocab]
        X_norm = sp.csr_matrix(view / n[start : start + 512, None] * 10_000 / norm)
        for i in range(X_norm.shape[0]):
            row = X_norm[i]
            total += len(tok[row.indices][np.argsort(-row.data)][:keep])
    return total


def per_cell_bin(X: sp.csr_matrix, n_bins: int) -> int:
    """scGPT's binning, one cell at a time."""
    total = 0
    for i in range(X.shape[0]):
        values = X.data[X.indptr[i] : X.indptr[i + 1]].astype(np.float64)
        if len(values) == 0:
            continue
        edges = np.quantile(values, np.linspace(0, 1, n_bins - 1))
        left, right = np.digitize(values, edges), np.digitize(values, edges, right=True)
        total += len(np.ceil(np.random.rand(len(values)) * (right - left) + left))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument(
        "--dictionaries", type=Path, default=HERE.parents[1] / "shared" / "data" / "geneformer"
    )
    parser.add_argument("--no-e2e", action="store_true", help="Skip the end-to-end runs.")
    opts = parser.parse_args()

    from atlasprep.demo import build_census
    from atlasprep.sources import CellFilter, open_census, resolve_filter
    from atlasprep.tokenize import RankEncoder, bin_values, load_json_dict

    store = opts.store or HERE / "_work" / f"census-{max(opts.cells, 200_000)}"
    if not store.exists():
        store.parent.mkdir(parents=True, exist_ok=True)
        build_census(store, n_cells=max(opts.cells, 200_000), seed=0)
    source = open_census(census_uri=str(store))
    positions = source.select(source.compile(resolve_filter(CellFilter(primary_only=False))))[: opts.cells]
    batches = [b.X for b in source.iter_batches(positions, var_positions=None, batch_size=4096)]
    genes = list(source.var().index)
    source.close()
    n_cells = sum(b.shape[0] for b in batches)
    nnz = sum(b.nnz for b in batches)
    print(f"{n_cells:,} cells, {nnz / n_cells:,.0f} expressed genes per cell (store {store})\n")

    token_dict = load_json_dict(opts.dictionaries / "token_dictionary_gc104M.json")
    median_dict = load_json_dict(opts.dictionaries / "gene_median_dictionary_gc104M.json")
    encoder = RankEncoder.from_dictionaries(genes, token_dictionary=token_dict, gene_medians=median_dict)
    tokens = np.array([token_dict.get(g, -1) for g in genes])
    medians = np.array([median_dict.get(g, np.nan) for g in genes])

    def timed(label: str, work) -> float:  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        for X in batches:
            work(X)
        seconds = time.perf_counter() - start
        print(f"{label:<44} {n_cells / seconds:>10,.0f} cells/s")
        return seconds

    encoder.encode(batches[0][:10])
    bin_values(batches[0][:10])
    ours_rank = timed("rank: atlasprep RankEncoder", encoder.encode)
    loop_rank = timed(
        "rank: per-cell loop (Geneformer's algorithm)", lambda X: per_cell_rank(X, tokens, medians, 4094)
    )
    gf_rank = timed(
        "rank: Geneformer's own loop (X_norm[i] rows)", lambda X: geneformer_loop(X, tokens, medians, 4094)
    )
    ours_bin = timed("bin: atlasprep bin_values", bin_values)
    loop_bin = timed("bin: per-cell loop (scGPT's binning)", lambda X: per_cell_bin(X, 51))
    print(f"\nrank speed-up over the loop: {loop_rank / ours_rank:.2f}x (target >= 2x)")
    print(f"rank speed-up over Geneformer's own loop: {gf_rank / ours_rank:.2f}x")
    print(f"bin speed-up over the loop:  {loop_bin / ours_bin:.2f}x (target >= 2x)")
    print(
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB (cells held in memory)"
    )
    if not opts.no_e2e:
        end_to_end(store, n_cells, opts.dictionaries)


def end_to_end(store: Path, n_cells: int, dictionaries: Path) -> None:
    """`atlasprep tokenize --input cells.h5ad` on the corpus and on a quarter of it."""
    from atlasprep.slice.api import SliceConfig, slice_cells
    from atlasprep.sources import CellFilter

    print("\nend to end: h5ad in, Arrow shards out (subprocess; includes start-up and I/O)")
    for cells in (n_cells // 4, n_cells):
        h5ad = HERE / "_work" / f"cells-{cells}.h5ad"
        if not h5ad.exists():
            slice_cells(
                SliceConfig(
                    census_uri=str(store),
                    filter=CellFilter(primary_only=False),
                    max_cells=cells,
                    out=h5ad,
                )
            )
        out = HERE / "_work" / f"tokens-{cells}"
        command = [
            sys.executable, "-m", "atlasprep", "--quiet", "tokenize",
            "--input", str(h5ad), "--scheme", "rank",
            "--token-dictionary", str(dictionaries / "token_dictionary_gc104M.json"),
            "--gene-medians", str(dictionaries / "gene_median_dictionary_gc104M.json"),
            "--out", str(out), "--overwrite", "--all-data",
        ]  # fmt: skip
        start = time.perf_counter()
        peak_kb = int(
            subprocess.run(
                [sys.executable, "-c", _PEAK, *command], check=True, capture_output=True, text=True
            ).stdout.split()[-1]
        )
        seconds = time.perf_counter() - start
        print(
            f"  atlasprep tokenize, {cells:>8,} cells: {cells / seconds:>8,.0f} cells/s, "
            f"peak RSS {peak_kb / 1024:,.0f} MB"
        )
    try:
        import geneformer  # noqa: F401
    except ImportError:
        print(
            "  Geneformer's TranscriptomeTokenizer: not importable here (not on the package index); "
            "its published figure is about 1,600 cells/s end to end on 900-gene cells"
        )


if __name__ == "__main__":
    main()
