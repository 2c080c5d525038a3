"""`StreamDataset`: straight from a SourceSpec into PyTorch, with a store's guarantees.

Every selected cell exactly once per epoch over ranks × DataLoader workers (a SOMA source and
an AnnData source); resuming mid-epoch gives the uninterrupted rest; a cell's streamed tokens are
its row in the store ``tokenize`` builds from the same spec and tokenizer (rank and bin); a split
takes the store's groups; ``even`` evens the ranks.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from atlasprep.errors import UsageError
from atlasprep.loader import ShardLoader, StreamDataset
from atlasprep.shard import read_manifest, read_shard
from atlasprep.slice import SliceConfig, slice_cells
from atlasprep.sources import CellFilter, SourceSpec
from atlasprep.tokenize.api import TokenizeConfig, tokenize_cells
from atlasprep.tokenize.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def spec(small_census) -> SourceSpec:
    return SourceSpec(census_uri=str(small_census), max_cells=500, seed=1)


@pytest.fixture(scope="module")
def stores(spec, tmp_path_factory) -> dict[str, Path]:
    built = {}
    for scheme, options in {
        "rank": {"context": ("tissue_general",), "max_len": 48},
        "bin": {"n_hvg": 300, "max_len": 24, "n_bins": 9},
    }.items():
        out = tmp_path_factory.mktemp("stream") / scheme
        tokenize_cells(
            TokenizeConfig(source=spec, out=out, scheme=scheme, split_by="donor_id", seed=3, **options)
        )
        built[scheme] = out
    return built


@pytest.fixture(scope="module")
def anndata_spec(spec, tmp_path_factory) -> SourceSpec:
    out = tmp_path_factory.mktemp("stream-slice") / "cells.h5ad"
    slice_cells(SliceConfig(source=spec, out=out))
    return SourceSpec(inputs=(str(out),), filter=CellFilter(primary_only=False))


def _store_rows(store: Path, split: str | None = None) -> dict[str, tuple[list[int], list | None]]:
    rows = {}
    for shard in read_manifest(store)["shards"]:
        if split is not None and shard["split"] != split:
            continue
        table = read_shard(store, shard["path"])
        values = table["values"].to_pylist() if "values" in table.column_names else [None] * table.num_rows
        for cell, ids, vals in zip(
            table["cell_id"].to_pylist(), table["input_ids"].to_pylist(), values, strict=True
        ):
            rows[str(cell)] = (ids, vals)
    return rows


def _epoch(dataset: StreamDataset, num_workers: int, batch_size: int = 32) -> list[str]:
    loader = ShardLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    return [cell for batch in loader for cell in batch["cell_id"]]


@pytest.mark.parametrize("source", ["soma", "anndata"])
@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("world_size", [1, 2])
def test_every_cell_once_per_epoch(stores, spec, anndata_spec, source, num_workers, world_size):
    chosen = spec if source == "soma" else anndata_spec
    tokenizer = Tokenizer.from_store(stores["rank"])
    seen: list[str] = []
    for rank in range(world_size):
        dataset = StreamDataset(
            chosen, tokenizer, seed=5, chunk_size=16, io_batch_size=96, rank=rank, world_size=world_size
        )
        seen += _epoch(dataset, num_workers)
    assert len(seen) == 500
    assert len(set(seen)) == 500
    assert set(seen) == set(_store_rows(stores["rank"]))


@pytest.mark.parametrize("scheme", ["rank", "bin"])
def test_streamed_tokens_are_the_stores_rows(stores, spec, scheme):
    store = stores[scheme]
    rows = _store_rows(store, "val")
    dataset = StreamDataset(spec, store, "val", split_by="donor_id", seed=3, io_batch_size=40, chunk_size=8)
    assert dataset.num_cells == len(rows) == read_manifest(store)["splits"]["n_cells"]["val"]
    cells = list(dataset)  # one dict per cell
    assert sorted(c["cell_id"] for c in cells) == sorted(rows)
    for cell in cells:
        ids, values = rows[cell["cell_id"]]
        assert cell["input_ids"].tolist() == ids
        if scheme == "bin":
            np.testing.assert_array_equal(cell["values"], np.asarray(values, dtype=cell["values"].dtype))


def test_a_tokenizer_fitted_on_the_spec_streams_the_stores_tokens(stores, spec):
    fitted = Tokenizer.fit(spec, scheme="rank", context=("tissue_general",), max_len=48, seed=3)
    assert fitted == Tokenizer.from_store(stores["rank"])
    batch = next(iter(StreamDataset(spec, fitted, batch_size=64, io_batch_size=50)))
    assert batch["input_ids"].dtype == torch.int64
    assert batch["input_ids"].shape[0] == 64  # a batch straddles reads of 50
    rows = _store_rows(stores["rank"])
    mask = batch["attention_mask"]
    for i, cell in enumerate(batch["cell_id"]):
        assert batch["input_ids"][i][mask[i]].tolist() == rows[cell][0]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_mid_epoch_gives_the_uninterrupted_rest(stores, spec, num_workers):
    def loader() -> ShardLoader:
        dataset = StreamDataset(
            spec, stores["bin"], seed=9, chunk_size=8, io_batch_size=64, columns=["donor_id"]
        )
        return ShardLoader(dataset, batch_size=24, num_workers=num_workers)

    whole = loader()
    whole.set_epoch(2)
    everything = [b["cell_id"] for b in whole]
    first = loader()
    first.set_epoch(2)
    taken = []
    for batch in first:
        taken.append(batch["cell_id"])
        if len(taken) == 7:
            state = first.state_dict()
            break
    resumed = loader()
    resumed.load_state_dict(state)
    assert taken + [b["cell_id"] for b in resumed] == everything


def test_in_process_state_and_epochs(stores, spec):
    dataset = StreamDataset(spec, stores["rank"], seed=4, chunk_size=8, io_batch_size=64, batch_size=16)
    dataset.set_epoch(1)
    it = iter(dataset)
    head = [next(it)["cell_id"] for _ in range(5)]
    state = dataset.state_dict()
    rest = [b["cell_id"] for b in it]
    again = StreamDataset(spec, stores["rank"], seed=4, chunk_size=8, io_batch_size=64, batch_size=16)
    again.load_state_dict(state)
    assert [b["cell_id"] for b in again] == rest
    again.set_epoch(1)
    assert [b["cell_id"] for b in again][:5] == head  # (seed, epoch) fixes the order
    again.set_epoch(2)
    assert [b["cell_id"] for b in again][:5] != head
    with pytest.raises(UsageError, match="differently configured"):
        StreamDataset(spec, stores["rank"], seed=5, batch_size=16).load_state_dict(state)


@pytest.mark.parametrize("even", ["drop", "pad"])
def test_even_gives_every_rank_the_same_cells_count(stores, spec, even):
    counts = []
    seen: Counter[str] = Counter()
    for rank in range(3):
        dataset = StreamDataset(spec, stores["rank"], rank=rank, world_size=3, even=even, io_batch_size=64)
        cells = [c["cell_id"] for c in dataset]
        counts.append(len(cells))
        seen.update(cells)
    assert len(set(counts)) == 1
    assert counts[0] == (500 // 3 if even == "drop" else -(-500 // 3))
    assert max(seen.values()) <= (1 if even == "drop" else 2)


def test_bad_options_are_refused_by_name(stores, spec):
    with pytest.raises(UsageError, match="io_batch_size = 0"):
        StreamDataset(spec, stores["rank"], io_batch_size=0)
    with pytest.raises(UsageError, match="split = 'val': without split_by"):
        StreamDataset(spec, stores["rank"], "val")
    with pytest.raises(UsageError, match="split = 'nope'"):
        StreamDataset(spec, stores["rank"], "nope", split_by="donor_id")


def test_a_tokenizer_from_another_corpus_reports_the_genes_it_lacks(spec, caplog):
    from dataclasses import replace

    from atlasprep.sources import open_source

    source = open_source(spec)
    try:
        genes = tuple(str(g) for g in source.var().index[:150])
    finally:
        source.close()
    narrow = Tokenizer.fit(replace(spec, genes=genes), scheme="rank", max_len=32)
    with caplog.at_level("WARNING", logger="atlasprep.loader"):
        dataset = StreamDataset(spec, narrow, batch_size=100, io_batch_size=200)
    assert dataset.coverage.n_genes_in_vocab == 150
    assert dataset.coverage.n_genes > 150
    assert "are not in the tokenizer's vocabulary" in caplog.text
    allowed = {narrow.tokens[g] for g in genes} | {narrow.tokens[t] for t in ("<cls>", "<eos>", "<pad>")}
    batch = next(iter(dataset))
    assert set(batch["input_ids"].unique().tolist()) <= allowed


def test_balanced_sampling_streams_labels_about_equally_and_resumes(stores, spec):
    column = "cell_type_ontology_term_id"

    def dataset(**kwargs):
        options = {
            "seed": 2,
            "chunk_size": 16,
            "io_batch_size": 128,
            "columns": [column],
            "num_samples": 2000,
            "sampling": "balanced:cell_type",
        }
        return StreamDataset(spec, stores["rank"], **{**options, **kwargs})

    whole = dataset()
    drawn = [c[column] for c in whole]
    assert len(drawn) == 2000
    counts = Counter(drawn)
    share = np.array(list(counts.values())) / len(drawn)
    uniform = [c[column] for c in dataset(sampling="uniform", num_samples=None)]
    assert np.abs(share - 1 / len(counts)).mean() < 0.4 / len(counts)  # near equal over labels
    spread = Counter(uniform)
    assert max(spread.values()) / min(spread.values()) > share.max() / share.min()  # uniform is not
    # the same draws however the epoch is split over ranks, and again for the same (seed, epoch)
    ranks = [c["cell_id"] for r in range(2) for c in dataset(rank=r, world_size=2)]
    assert sorted(ranks) == sorted(c["cell_id"] for c in dataset())
    # resume mid-epoch under sampling: the uninterrupted rest
    batched = dataset(batch_size=50)
    everything = [b["cell_id"] for b in batched]
    first = dataset(batch_size=50)
    it = iter(first)
    head = [next(it)["cell_id"] for _ in range(7)]
    again = dataset(batch_size=50)
    again.load_state_dict(first.state_dict())
    assert head + [b["cell_id"] for b in again] == everything
    with pytest.raises(UsageError, match="differently configured"):
        dataset(batch_size=50, sampling="balanced:tissue").load_state_dict(first.state_dict())


def test_a_shuffle_buffer_is_read_in_bounded_source_reads(stores, spec, monkeypatch):
    """A buffer of ``io_batch_size`` cells is read ``READ_CELLS`` cells at a time (counts in
    memory stay one read; each read's tokens stay apart), with the same batches and single cells
    as one read of the whole buffer."""
    import atlasprep.loader.stream as stream_module
    from atlasprep.sources.soma import SomaSource

    def batches() -> list[tuple[list[str], list[list[int]]]]:
        dataset = StreamDataset(spec, stores["rank"], seed=2, chunk_size=16, io_batch_size=200, batch_size=50)
        batched = [(list(b["cell_id"]), b["input_ids"].tolist()) for b in dataset]
        dataset.batch_size = None
        cells = [([c["cell_id"]], [c["input_ids"].tolist()]) for c in dataset]
        return batched + cells

    whole = batches()
    sizes: list[int] = []
    iter_batches = SomaSource.iter_batches

    def spy(self, positions, **kwargs):  # type: ignore[no-untyped-def]
        for batch in iter_batches(self, positions, **kwargs):
            sizes.append(batch.n_cells)
            yield batch

    monkeypatch.setattr(SomaSource, "iter_batches", spy)
    monkeypatch.setattr(stream_module, "READ_CELLS", 64)
    assert batches() == whole
    assert max(sizes) == 64
    assert sum(sizes) == 2 * 500


def test_a_stream_keeps_tiledbs_freed_memory(stores, spec, monkeypatch):
    """A StreamDataset's own source turns off TileDB's malloc_trim after each query (the next
    read reuses the memory, not fresh pages); TileDB takes the setting and reads the same cells."""
    from atlasprep.loader import stream
    from atlasprep.sources import spec as spec_module
    from atlasprep.sources.soma import tiledb_config_for_batches

    assert tiledb_config_for_batches(4_096, trim=False)["sm.mem.malloc_trim"] == "false"
    assert "sm.mem.malloc_trim" not in tiledb_config_for_batches(4_096)  # slice: bounded peak
    opened = []

    def recording(chosen, **kwargs):
        opened.append(kwargs)
        return spec_module.open_source(chosen, **kwargs)

    monkeypatch.setattr(stream, "open_source", recording)
    dataset = StreamDataset(spec, Tokenizer.from_store(stores["rank"]), batch_size=64)
    streamed = sorted(_epoch(dataset, num_workers=0))
    assert {"trim": False} in opened
    assert streamed == sorted(str(c) for c in _store_rows(stores["rank"]))


def test_every_source_a_stream_opens_is_released(stores, spec, monkeypatch):
    """The sources a StreamDataset opens (one to plan, one an epoch) are freed once closed,
    with their TileDB contexts and threads: a cache on a source's methods once kept every one
    alive, so a process gained a context's 4 threads and its heaps each epoch (21 to 33 threads
    and 1.4 to 2.3 GB resident over four 50,000-cell epochs)."""
    import gc
    import weakref

    from atlasprep.loader import stream
    from atlasprep.sources import spec as spec_module

    opened: list[weakref.ref] = []

    def recording(chosen, **kwargs):  # type: ignore[no-untyped-def]
        source = spec_module.open_source(chosen, **kwargs)
        opened.append(weakref.ref(source))
        return source

    monkeypatch.setattr(stream, "open_source", recording)
    dataset = StreamDataset(spec, stores["rank"], seed=1, chunk_size=16, io_batch_size=96)
    for epoch in range(2):
        dataset.set_epoch(epoch)
        assert len(_epoch(dataset, num_workers=0)) == 500
    gc.collect()
    assert len(opened) == 3
    assert [ref() for ref in opened] == [None, None, None]
