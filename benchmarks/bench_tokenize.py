"""Tokenizer throughput: atlasprep's batch kernels vs faithful per-cell numpy loops, same cells.

    python benchmarks/bench_tokenize.py [--cells 100000] [--store DIR] [--dictionaries DIR]
                                        [--no-e2e] [--repeat 3] [--kernel-repeat 3]

Reads the cells once (I/O excluded from the timings), then times, on the same CSR batches:
rank (atlasprep RankEncoder, with the default tie order and with ``tie_order="stable"``, vs
Geneformer's algorithm as a per-cell loop with argsort) and bin (atlasprep bin_values vs scGPT's
per-cell binning loop).

End to end (h5ad in, shards out): `atlasprep tokenize --input cells.h5ad` in a fresh process,
on the whole corpus and on a quarter of it, with each run's peak RSS, to show that memory does not
grow with the corpus; on the whole corpus also `--tie-order stable`, and the lean per-cell loop
end to end (read the h5ad, rank each cell with ``np.argsort``, write an Arrow file: the anchor of
the issue's ratios, >= 2.5x for the default and >= 4x for stable). Geneformer's own
TranscriptomeTokenizer runs on the same h5ad, also in a fresh process, when it is importable or
ATLASPREP_GENEFORMER_SRC names its source directory (it is not a dependency, and not installable
from the package index); the two outputs are then compared cell by cell.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _launch import compile_atlasprep  # noqa: E402

BATCH = 8_192  # cells per CSR batch, as `atlasprep tokenize` streams them by default
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
    parser.add_argument("--repeat", type=int, default=3, help="End-to-end atlasprep runs per size (median).")
    parser.add_argument("--kernel-repeat", type=int, default=3, help="Rounds of the kernel timings (median).")
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
    batches = [b.X for b in source.iter_batches(positions, var_positions=None, batch_size=BATCH)]
    genes = list(source.var().index)
    source.close()
    n_cells = sum(b.shape[0] for b in batches)
    nnz = sum(b.nnz for b in batches)
    print(f"{n_cells:,} cells, {nnz / n_cells:,.0f} expressed genes per cell (store {store})\n")

    token_dict = load_json_dict(opts.dictionaries / "token_dictionary_gc104M.json")
    median_dict = load_json_dict(opts.dictionaries / "gene_median_dictionary_gc104M.json")
    encoder = RankEncoder.from_dictionaries(genes, token_dictionary=token_dict, gene_medians=median_dict)
    stable = RankEncoder.from_dictionaries(
        genes, token_dictionary=token_dict, gene_medians=median_dict, tie_order="stable"
    )
    tokens = np.array([token_dict.get(g, -1) for g in genes])
    medians = np.array([median_dict.get(g, np.nan) for g in genes])

    def once(work) -> float:  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        for X in batches:
            work(X)
        return time.perf_counter() - start

    workloads = {
        "rank: atlasprep RankEncoder": encoder.encode,
        "rank: atlasprep RankEncoder, stable ties": stable.encode,
        "rank: per-cell loop (Geneformer's algorithm)": lambda X: per_cell_rank(X, tokens, medians, 4094),
        "rank: Geneformer's own loop (X_norm[i] rows)": lambda X: geneformer_loop(X, tokens, medians, 4094),
        "bin: atlasprep bin_values": bin_values,
        "bin: per-cell loop (scGPT's binning)": lambda X: per_cell_bin(X, 51),
    }
    encoder.encode(batches[0][:10])
    stable.encode(batches[0][:10])
    bin_values(batches[0][:10])
    # Rounds interleave the workloads, so a slow spell of the machine touches all of them alike;
    # each figure is the median over the rounds.
    runs: dict[str, list[float]] = {label: [] for label in workloads}
    for _ in range(opts.kernel_repeat):
        for label, work in workloads.items():
            runs[label].append(once(work))
    seconds = {label: statistics.median(times) for label, times in runs.items()}
    for label, times in runs.items():
        spread = ", ".join(f"{n_cells / t:,.0f}" for t in times)
        print(f"{label:<44} {n_cells / seconds[label]:>10,.0f} cells/s (rounds: {spread})")
    ours_rank, stable_rank, loop_rank, gf_rank, ours_bin, loop_bin = seconds.values()
    ours_runs, stable_runs, loop_runs = list(runs.values())[:3]
    print(f"\nrank speed-up over the loop: {loop_rank / ours_rank:.2f}x (target >= 2x)")
    print(f"rank, stable ties, speed-up over the loop: {loop_rank / stable_rank:.2f}x")
    print(f"rank speed-up over Geneformer's own loop: {gf_rank / ours_rank:.2f}x")
    print(f"bin speed-up over the loop:  {loop_bin / ours_bin:.2f}x (target >= 2x)")
    ratios = [loop / ours for loop, ours in zip(loop_runs, ours_runs, strict=True)]
    print(f"rank speed-up over the loop, round by round: {', '.join(f'{r:.2f}x' for r in ratios)}")
    ratios = [loop / ours for loop, ours in zip(loop_runs, stable_runs, strict=True)]
    print(f"rank, stable ties, round by round: {', '.join(f'{r:.2f}x' for r in ratios)}")
    print(
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB (cells held in memory)"
    )
    if not opts.no_e2e:
        end_to_end(store, n_cells, opts.dictionaries, opts.repeat)


# Geneformer's TranscriptomeTokenizer on one h5ad, in a fresh process: ``geneformer`` when it
# is importable, else tokenizer.py from the directory ATLASPREP_GENEFORMER_SRC names (a source
# checkout's geneformer/; its package __init__ would import the whole model stack). Prints its
# peak RSS in KB.
_GENEFORMER = """
import importlib, importlib.util, json, os, pickle, resource, sys, types
from pathlib import Path
h5ad_dir, out, dictionaries = sys.argv[1:4]
src = os.environ.get("ATLASPREP_GENEFORMER_SRC")
if src:
    package = types.ModuleType("geneformer")
    package.__path__ = [src]
    for name in ("ENSEMBL_MAPPING_FILE", "GENE_MEDIAN_FILE", "TOKEN_DICTIONARY_FILE"):
        setattr(package, name, None)
    sys.modules["geneformer"] = package
    spec = importlib.util.spec_from_file_location("geneformer.tokenizer", Path(src) / "tokenizer.py")
    gf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gf)
else:
    gf = importlib.import_module("geneformer.tokenizer")
files = {}
for kind in ("token_dictionary", "gene_median_dictionary"):
    files[kind] = Path(out) / f"{kind}.pkl"
    with open(Path(dictionaries) / f"{kind}_gc104M.json") as handle:
        pickle.dump(json.load(handle), files[kind].open("wb"))
tokenizer = gf.TranscriptomeTokenizer(
    {"cell_id": "cell_id"}, model_input_size=4096, special_token=True,
    gene_median_file=files["gene_median_dictionary"], token_dictionary_file=files["token_dictionary"],
)
tokenizer.tokenize_data(h5ad_dir, out, "gf", file_format="h5ad")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def geneformer_available() -> bool:
    if os.environ.get("ATLASPREP_GENEFORMER_SRC"):
        return True
    try:
        import geneformer  # noqa: F401
    except ImportError:
        return False
    return True


def prepare_h5ad(store: Path, cells: int, genes: int | None = None) -> Path:
    """``cells`` demo cells as one h5ad, with what Geneformer's tokenizer requires: obs
    ``n_counts`` (float32 totals, which atlasprep reads too) and ``cell_id``, var ``ensembl_id``.
    ``genes``: thin the counts (binomial downsampling, as of a shallower run) to about that many
    expressed genes per cell."""
    import anndata as ad

    from atlasprep.slice.api import SliceConfig, slice_cells
    from atlasprep.sources import CellFilter, SourceSpec

    folder = HERE / "_work" / (f"e2e-{cells}" if genes is None else f"e2e-{cells}-{genes}genes")
    h5ad = folder / "cells.h5ad"
    if h5ad.exists():
        return h5ad
    folder.mkdir(parents=True, exist_ok=True)
    sliced = HERE / "_work" / f"cells-{cells}.h5ad"
    if not sliced.exists():
        slice_cells(
            SliceConfig(
                source=SourceSpec(
                    census_uri=str(store), filter=CellFilter(primary_only=False), max_cells=cells
                ),
                out=sliced,
            )
        )
    adata = ad.read_h5ad(sliced)
    if genes is not None:
        adata.X = thin(sp.csr_matrix(adata.X), genes)
    adata.obs["n_counts"] = np.asarray(adata.X.sum(axis=1)).ravel().astype(np.float32)
    adata.obs["cell_id"] = adata.obs_names.astype(str)
    adata.var["ensembl_id"] = adata.var_names.astype(str)
    adata.write_h5ad(h5ad)
    return h5ad


def thin(X: sp.csr_matrix, genes: int, seed: int = 0) -> sp.csr_matrix:
    """Each count kept with probability p, p chosen (by bisection on 2,000 cells) so that cells
    keep about ``genes`` expressed genes on average."""

    def thinned(M: sp.csr_matrix, p: float) -> sp.csr_matrix:
        out = M.copy()
        out.data = np.random.default_rng(seed).binomial(out.data.astype(np.int64), p).astype(M.dtype)
        out.eliminate_zeros()
        return out

    sample = X[: min(2_000, X.shape[0])]
    low, high = 0.0, 1.0
    for _ in range(20):
        p = (low + high) / 2
        low, high = (p, high) if thinned(sample, p).nnz / sample.shape[0] < genes else (low, p)
    return thinned(X, (low + high) / 2)


def run_measured(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and stdout of ``command`` run in a fresh process (atlasprep's
    bytecode written first, as an install does: see ``_launch.compile_atlasprep``)."""
    compile_atlasprep()
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, *command], check=True, capture_output=True, text=True, env=env
    )
    seconds = time.perf_counter() - start
    return seconds, int(done.stdout.split()[-1]) / 1024, done.stdout


def end_to_end(store: Path, n_cells: int, dictionaries: Path, repeat: int) -> None:
    """`atlasprep tokenize --input cells.h5ad` on the corpus and on a quarter of it, and
    Geneformer's TranscriptomeTokenizer on the whole corpus when it is at hand: on the demo
    cells as they are and thinned to about 900 expressed genes (the cells of the issue's
    Geneformer figure)."""
    print("\nend to end: h5ad in, Arrow shards out (fresh processes: start-up and I/O included)")
    gf = geneformer_available()
    if not gf:
        print(
            "  Geneformer's TranscriptomeTokenizer: not importable here (not on the package index; "
            "set ATLASPREP_GENEFORMER_SRC to a source checkout's geneformer/ directory)"
        )
    for genes in (None, 900):
        walls = {}
        for cells in (n_cells // 4, n_cells):
            h5ad = prepare_h5ad(store, cells, genes)
            if cells == n_cells // 4:
                expressed = _mean_stored(h5ad)
                print(
                    f"  {'demo cells' if genes is None else 'thinned cells'}: "
                    f"{expressed:,.0f} expressed genes per cell"
                )
            command = atlasprep_command(h5ad, HERE / "_work" / f"tokens-{h5ad.parent.name}", dictionaries)
            runs = [run_measured(command)[:2] for _ in range(repeat)]
            seconds = statistics.median(r[0] for r in runs)
            walls[cells] = seconds
            print(
                f"    atlasprep tokenize, {cells:>8,} cells: {cells / seconds:>8,.0f} cells/s "
                f"(median of {repeat}: {', '.join(f'{r[0]:.2f}' for r in runs)} s), "
                f"peak RSS {max(r[1] for r in runs):,.0f} MB"
            )
        against_lean_loop(prepare_h5ad(store, n_cells, genes), dictionaries, repeat)
        if not gf:
            continue
        h5ad = prepare_h5ad(store, n_cells, genes)
        out = HERE / "_work" / f"geneformer-{h5ad.parent.name}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        seconds, peak, _ = run_measured(
            [sys.executable, "-c", _GENEFORMER, str(h5ad.parent), str(out), str(dictionaries)]
        )
        print(
            f"    Geneformer TranscriptomeTokenizer, {n_cells:>8,} cells: {n_cells / seconds:>8,.0f} cells/s "
            f"({seconds:.1f} s), peak RSS {peak:,.0f} MB"
        )
        print(
            f"    atlasprep: {seconds / walls[n_cells]:.1f}x Geneformer's tokenizer end to end "
            "(target >= 10x)"
        )
        same, total = same_tokens(out / "gf.dataset", HERE / "_work" / f"tokens-{h5ad.parent.name}")
        print(f"    identical input_ids: {same:,} of {total:,} cells")


# The anchor: a lean per-cell loop, end to end in a fresh process — read the h5ad, rank
# each cell (Geneformer's values, np.argsort), write the token lists as one Arrow stream.
_LEAN = """
import json, sys
import anndata as ad, numpy as np, pyarrow as pa
h5ad, out, dictionaries = sys.argv[1:4]
tokens = json.load(open(f"{dictionaries}/token_dictionary_gc104M.json"))
medians = json.load(open(f"{dictionaries}/gene_median_dictionary_gc104M.json"))
adata = ad.read_h5ad(h5ad)
genes = adata.var["ensembl_id"].astype(str).to_numpy()
keep = np.flatnonzero([g in tokens and g in medians for g in genes])
X = adata.X.tocsr()[:, keep].tocsr()
tok = np.array([tokens[g] for g in genes[keep]], dtype=np.int32)
norm = np.array([medians[g] for g in genes[keep]])
n = adata.obs["n_counts"].to_numpy()
cls, eos = np.int32(tokens["<cls>"]), np.int32(tokens["<eos>"])
cells = []
for i in range(X.shape[0]):
    s, e = X.indptr[i], X.indptr[i + 1]
    values = X.data[s:e] / n[i] * 10_000 / norm[X.indices[s:e]]
    cells.append(np.concatenate([[cls], tok[X.indices[s:e]][np.argsort(-values)][:4094], [eos]]))
offsets = np.zeros(len(cells) + 1, dtype=np.int32)
np.cumsum([len(c) for c in cells], out=offsets[1:])
ids = pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(cells).astype(np.int32)))
table = pa.table({"cell_id": adata.obs_names.astype(str).to_numpy(), "input_ids": ids})
with pa.OSFile(f"{out}/cells.arrow", "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
    writer.write_table(table)
"""


def atlasprep_command(h5ad: Path, out: Path, dictionaries: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "atlasprep", "--quiet", "tokenize",
        "--input", str(h5ad), "--scheme", "rank",
        "--token-dictionary", str(dictionaries / "token_dictionary_gc104M.json"),
        "--gene-medians", str(dictionaries / "gene_median_dictionary_gc104M.json"),
        "--out", str(out), "--overwrite", "--all-data", *extra,
    ]  # fmt: skip


def against_lean_loop(h5ad: Path, dictionaries: Path, repeat: int) -> None:
    """The lean per-cell loop, `atlasprep tokenize` and `atlasprep tokenize --tie-order stable`
    on the same h5ad, in interleaved rounds (each a fresh process); medians and ratios."""
    cells = h5ad.parent.name
    lean_out = HERE / "_work" / f"lean-{cells}"
    lean_out.mkdir(parents=True, exist_ok=True)
    lean = [sys.executable, "-c", _LEAN, str(h5ad), str(lean_out), str(dictionaries)]
    commands = {
        "lean per-cell loop (argsort)": lean,
        "atlasprep tokenize": atlasprep_command(h5ad, HERE / "_work" / f"tokens-{cells}", dictionaries),
        "atlasprep tokenize --tie-order stable": atlasprep_command(
            h5ad, HERE / "_work" / f"stable-{cells}", dictionaries, "--tie-order", "stable"
        ),
    }
    walls: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(repeat):
        for label, command in commands.items():
            walls[label].append(run_measured(command)[0])
    anchor = statistics.median(walls["lean per-cell loop (argsort)"])
    for label, times in walls.items():
        seconds = statistics.median(times)
        spread = ", ".join(f"{t:.2f}" for t in times)
        print(f"    {label:<40} {seconds:6.2f} s (rounds: {spread} s), {anchor / seconds:.2f}x the lean loop")
    print("    targets: atlasprep tokenize >= 2.5x the lean loop; --tie-order stable >= 4x")


def _mean_stored(h5ad: Path) -> float:
    import h5py

    with h5py.File(h5ad, "r") as handle:
        indptr = handle["X"]["indptr"]
        return float(indptr[-1]) / (len(indptr) - 1)


def same_tokens(dataset: Path, store: Path) -> tuple[int, int]:
    """How many of Geneformer's cells have exactly atlasprep's input_ids (matched by cell id)."""
    import pyarrow as pa
    from datasets import load_from_disk

    from atlasprep.shard.store import read_manifest, read_shard

    theirs = load_from_disk(str(dataset)).data.table.select(["cell_id", "input_ids"])
    ours = pa.concat_tables(read_shard(store, s["path"]) for s in read_manifest(store)["shards"])
    ours = ours.select(["cell_id", "input_ids"])

    def by_cell(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        order = np.argsort(table["cell_id"].to_numpy(zero_copy_only=False).astype(str), kind="stable")
        lists = table["input_ids"].take(pa.array(order)).combine_chunks()
        ids = np.asarray(table["cell_id"].to_numpy(zero_copy_only=False)).astype(str)[order]
        return ids, lists.offsets.to_numpy(), lists.values.to_numpy().astype(np.int64)

    a_ids, a_off, a_val = by_cell(theirs)
    b_ids, b_off, b_val = by_cell(ours)
    common = np.intersect1d(a_ids, b_ids)
    ia, ib = np.searchsorted(a_ids, common), np.searchsorted(b_ids, common)
    same = 0
    for i, j in zip(ia.tolist(), ib.tolist(), strict=True):  # one comparison per cell, outside any timing
        if np.array_equal(a_val[a_off[i] : a_off[i + 1]], b_val[b_off[j] : b_off[j + 1]]):
            same += 1
    return same, len(a_ids)


if __name__ == "__main__":
    main()
