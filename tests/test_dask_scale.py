"""On Dask the corpus passes are map-reduced on the workers and the shards are written by them:
a 2-worker LocalCluster builds the bytes a local run builds."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from atlasprep.sources import SourceSpec
from atlasprep.tokenize.api import TokenizeConfig, tokenize_cells
from atlasprep.tokenize.hvg import GeneMoments, block_moments
from atlasprep.tokenize.medians import MedianSketch
from atlasprep.tokenize.passes import cell_ranges, merge_values


@pytest.fixture(scope="module")
def runner():  # type: ignore[no-untyped-def]
    pytest.importorskip("distributed")
    from atlasprep.run import DaskRunner

    with DaskRunner(workers=2) as started:
        yield started


def _digests(store: Path) -> dict[str, str]:
    return {
        str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(store.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def _same_store(local: Path, dask: Path) -> None:
    assert _digests(local) == _digests(dask)
    a, b = (json.loads((s / "manifest.json").read_text()) for s in (local, dask))
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert a["shards"] == b["shards"]


class _Counting:
    """A runner that records which jobs it was given (what ran on the workers)."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.calls: list[tuple[str, int]] = []

    @property
    def n_partitions(self) -> int:
        return int(self.inner.n_partitions)

    def map(self, fn, jobs):  # type: ignore[no-untyped-def]
        self.calls.append((fn.__name__, len(jobs)))
        return self.inner.map(fn, jobs)


def _build_both(tmp_path: Path, runner, **fields) -> tuple[Path, Path, list[tuple[str, int]]]:  # type: ignore[no-untyped-def]
    counting = _Counting(runner)
    outs = []
    for name, used in (("local", None), ("dask", counting)):
        config = TokenizeConfig(out=tmp_path / name, **fields)
        tokenize_cells(config, runner=used)
        outs.append(config.out)
    return outs[0], outs[1], counting.calls


def _n_shards(store: Path) -> int:
    return len(json.loads((store / "manifest.json").read_text())["shards"])


def test_rank_with_corpus_medians_gives_the_local_bytes(tmp_path, small_census, runner):
    source = SourceSpec(census_uri=str(small_census), batch_size=128)
    local, dask, calls = _build_both(
        tmp_path,
        runner,
        source=source,
        scheme="rank",
        max_len=64,
        shard_cells=300,
        split_by="donor_id",
        context=("tissue_general",),
    )
    _same_store(local, dask)
    assert json.loads((local / "manifest.json").read_text())["n_cells"] > 1000
    # medians and context values map-reduced over 4 ranges (2 workers x 2), each shard a job
    assert calls == [
        ("run_pass_job", 4),
        ("run_pass_job", 4),
        ("run_encode_job", 4),
        ("write_shard_job", _n_shards(local)),
    ]
    assert not (dask / ".work").exists()


def test_bin_with_hvg_gives_the_local_bytes_in_zarr(tmp_path, small_census, runner):
    source = SourceSpec(census_uri=str(small_census), batch_size=100)
    local, dask, calls = _build_both(
        tmp_path,
        runner,
        source=source,
        scheme="bin",
        n_hvg=60,
        max_len=48,
        shard_cells=250,
        format="zarr",
    )
    _same_store(local, dask)
    assert [name for name, _ in calls] == ["run_pass_job"] * 2 + ["run_encode_job", "write_shard_job"]


def test_paired_atac_idf_gives_the_local_bytes(tmp_path_factory, tmp_path, runner):
    from conftest import shared_file

    from atlasprep.align.barcodes import align_barcodes

    src = shared_file("multiome/test_rna_atac.h5mu")
    aligned = tmp_path_factory.mktemp("mo") / "mo.h5mu"
    align_barcodes(f"{src}:rna", atac=f"{src}:atac", out=aligned)
    source = SourceSpec(inputs=(f"{aligned}:rna",), batch_size=128)
    local, dask, calls = _build_both(
        tmp_path,
        runner,
        source=source,
        scheme="rank",
        max_len=24,
        modalities=("atac",),
        segment_max_len=(("atac", 12),),
        shard_cells=300,
    )
    _same_store(local, dask)
    assert calls[:2] == [("run_pass_job", 4)] * 2  # medians, then the ATAC IDF (1,000 cells)


def test_hvg_moments_on_workers_are_the_local_bits(small_census, runner):
    from atlasprep.sources import open_source
    from atlasprep.tokenize.passes import map_pass, moment_blocks

    config = TokenizeConfig(source=SourceSpec(census_uri=str(small_census), batch_size=100), out=Path("x"))
    clip = np.linspace(0.5, 7.3, 400)  # not integers: the order of the sums shows in the bits
    source = open_source(config.source)
    try:
        positions = np.arange(source.n_cells)[::2]  # a selection, not a prefix
        columns = np.arange(400) * 7 % len(source.var())
        local = {
            kind: moment_blocks(config, source, positions, columns, c)
            for kind, c in (("moments", None), ("clipped", clip))
        }
    finally:
        source.close()
    for kind, blocks in local.items():
        given = clip if kind == "clipped" else None
        parts = map_pass(runner, config, positions, kind=kind, columns=columns, clip=given)
        merged = [block for part in parts for block in part]
        assert len(parts) == 4
        assert [n for _, _, n in merged] == [n for _, _, n in blocks] == [100] * 7 + [len(positions) - 700]
        for (s1, q1, _), (s2, q2, _) in zip(merged, blocks, strict=True):
            assert np.array_equal(s1, s2)
            assert np.array_equal(q1, q2)


def _random_counts(seed: int, n_cells: int = 700, n_genes: int = 50) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = rng.negative_binomial(1, 0.3, size=(n_cells, n_genes)) * (rng.random((n_cells, n_genes)) < 0.3)
    dense[:, 3] = 0  # a gene never expressed
    return sp.csr_matrix(dense.astype(np.float32))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_median_sketches_merge_to_the_one_pass_sketch(seed):
    X = _random_counts(seed)
    whole = MedianSketch(n_genes=X.shape[1])
    whole.add(X)
    merged = MedianSketch(n_genes=X.shape[1])
    for cells in cell_ranges(X.shape[0], 64, 3):
        part = MedianSketch(n_genes=X.shape[1])
        for first in range(cells.start, cells.stop, 64):
            part.add(X[first : min(cells.stop, first + 64)])
        merged.merge(sp.csr_matrix(part.counts))
    assert np.array_equal(whole.counts, merged.counts)
    assert np.array_equal(whole.medians()[1], merged.medians()[1])


def _cut(X: sp.csr_matrix, cuts: list[int]):  # type: ignore[no-untyped-def]
    """X as read batches cut at ``cuts`` (the source's own batching: by values as well as cells)."""
    bounds = [0, *cuts, X.shape[0]]
    return [X[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_moment_blocks_merge_to_the_one_pass_sums(seed):
    X = _random_counts(seed)
    n_genes = X.shape[1]
    clip = np.random.default_rng(seed).uniform(0.5, 4.0, n_genes)
    for c in (None, clip):
        local = GeneMoments(n_genes=n_genes)  # the whole selection, read in uneven batches
        for sums, squares, n in block_moments(_cut(X, [50, 64, 300, 301, 650]), c, n_genes, 64):
            local.merge(sums, squares, n)
        merged = GeneMoments(n_genes=n_genes)
        for cells in cell_ranges(X.shape[0], 64, 4):  # per range, its blocks' sums, in order
            batches = _cut(X[cells], [10, 100])
            for sums, squares, n in block_moments(batches, c, n_genes, 64):
                merged.merge(sums, squares, n)
        assert np.array_equal(local.sums, merged.sums)
        assert np.array_equal(local.squares, merged.squares)
        assert merged.n_cells == X.shape[0]
        dense = X.toarray().astype(np.float64)
        if c is not None:
            dense = np.minimum(dense, c)
        assert np.allclose(merged.sums, dense.sum(axis=0))
        assert np.allclose(merged.squares, (dense**2).sum(axis=0))


def test_cell_ranges_are_whole_batches_covering_the_cells():
    ranges = cell_ranges(1_000, 64, 3)
    assert [(r.start, r.stop) for r in ranges] == [(0, 384), (384, 768), (768, 1000)]
    assert cell_ranges(10, 64, 8) == [slice(0, 10)]


def test_context_values_merge_sorted():
    parts = [{"t": ["b", "a"]}, {"t": ["c", "<NA>", "a"]}]
    assert merge_values(parts, ["t"]) == {"t": ["<NA>", "a", "b", "c"]}


def test_a_local_cluster_is_planned_for_all_its_workers():
    """Partitions follow the workers the runner started, not the ones the scheduler lists at
    that moment (a worker its nanny is restarting comes back for its share)."""
    from atlasprep.run import DaskRunner

    assert DaskRunner(workers=3).n_partitions == 6
    assert DaskRunner(workers=3, partitions_per_worker=1).n_workers == 3
    assert DaskRunner(scheduler="tcp://127.0.0.1:1").n_workers == 1  # not connected: one
