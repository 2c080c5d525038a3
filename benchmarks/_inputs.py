"""The benchmarks' inputs: a demo census of at least the cells asked for, and token stores of its
first cells (kept under the work folder for later runs)."""

from __future__ import annotations

import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "data" / "geneformer"

__all__ = ["census_for", "token_store"]


def census_for(cells: int, work: Path) -> Path:
    """An existing demo census with at least ``cells`` cells, else a new one of ``cells``."""
    existing = sorted(
        (int(p.name.split("-")[1]), p) for p in work.glob("census-*") if p.name.split("-")[1].isdigit()
    )
    for size, path in existing:
        if size >= cells:
            return path
    from atlasprep.demo import build_census

    work.mkdir(parents=True, exist_ok=True)
    print(f"building a {cells:,}-cell demo census (about a minute per 200,000 cells) …", flush=True)
    return build_census(work / f"census-{cells}", n_cells=cells, seed=0)


def token_store(census: Path, cells: int, fmt: str, max_len: int, work: Path) -> Path:
    from atlasprep.sources import CellFilter, SourceSpec
    from atlasprep.tokenize.api import TokenizeConfig, tokenize_cells

    dictionary, medians = (
        SHARED / "token_dictionary_gc104M.json",
        SHARED / "gene_median_dictionary_gc104M.json",
    )
    geneformer = dictionary.exists() and medians.exists()
    out = work / f"tokens-{census.name}-{cells}-rank{max_len}-{'gc104M' if geneformer else 'corpus'}-{fmt}"
    if (out / "manifest.json").exists():
        return out
    print(f"tokenizing {cells:,} cells to {out.name} …", flush=True)
    started = time.perf_counter()
    tokenize_cells(
        TokenizeConfig(
            source=SourceSpec(
                census_uri=str(census), filter=CellFilter(primary_only=False, where=f"soma_joinid < {cells}")
            ),
            out=out,
            scheme="rank",
            max_len=max_len,
            token_dictionary=dictionary if geneformer else None,
            gene_medians=medians if geneformer else None,
            format="arrow" if fmt == "arrow" else "zarr",
            overwrite=True,
            seed=0,
        )
    )
    print(f"  {time.perf_counter() - started:.0f} s", flush=True)
    return out
