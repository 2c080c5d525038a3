"""The tokenizer as a value: saved with the store, loaded back, and giving the store's tokens."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from atlasprep.errors import CorruptStoreError
from atlasprep.shard import read_manifest, read_shard
from atlasprep.sources import CellFilter, SourceSpec, open_census, resolve_filter, sample_positions
from atlasprep.tokenize.api import TokenizeConfig, tokenize_cells
from atlasprep.tokenize.context import unknown_token
from atlasprep.tokenize.tokenizer import Tokenizer

BUILDS = {
    # scheme options: rank with context tokens; bin with HVG and a max_len that caps cells (the
    # fixed sample of genes depends on each cell's place); raw with a short max_len
    "rank": {"scheme": "rank", "context": ("tissue_general", "assay"), "max_len": 96},
    "bin": {"scheme": "bin", "n_hvg": 300, "max_len": 24, "n_bins": 11, "seed": 5},
    "raw": {"scheme": "raw", "max_len": 40, "split_by": "donor_id"},
}


@pytest.fixture(scope="module", params=sorted(BUILDS))
def built(request, small_census, tmp_path_factory) -> tuple[Path, TokenizeConfig]:
    config = TokenizeConfig(
        source=SourceSpec(census_uri=str(small_census), max_cells=400, seed=2, batch_size=128),
        out=tmp_path_factory.mktemp("tok") / request.param,
        shard_cells=150,
        **BUILDS[request.param],
    )
    tokenize_cells(config)
    return config.out, config


def _store_cells(store: Path) -> dict[str, tuple[list[int], list | None]]:
    cells = {}
    for shard in read_manifest(store)["shards"]:
        table = read_shard(store, shard["path"])
        values = table["values"].to_pylist() if "values" in table.column_names else None
        for i, (cell, ids) in enumerate(
            zip(table["cell_id"].to_pylist(), table["input_ids"].to_pylist(), strict=True)
        ):
            cells[str(cell)] = (ids, None if values is None else values[i])
    return cells


def test_the_stores_tokenizer_gives_the_stores_tokens(built):
    store, config = built
    tokenizer = Tokenizer.from_store(store)
    assert tokenizer.scheme == config.scheme
    assert tokenizer.max_len == config.max_len
    stored = _store_cells(store)
    source = open_census(census_uri=config.source.census_uri)
    try:
        positions = source.select(source.compile(resolve_filter(CellFilter())))
        positions = sample_positions(positions, max_cells=400, seed=2)
        encode = tokenizer.encoder([str(g) for g in source.var().index])
        columns = [*tokenizer.context, *([tokenizer.n_counts_column] if tokenizer.n_counts_column else [])]
        seen = 0
        # batches that are not the build's: a cell's tokens depend on the cell alone
        for batch in source.iter_batches(positions, var_positions=None, batch_size=97, obs_columns=columns):
            tokens = encode(batch)
            for i, cell in enumerate(batch.cell_ids.astype(str)):
                a, b = tokens.offsets[i], tokens.offsets[i + 1]
                ids, values = stored[cell]
                assert tokens.input_ids[a:b].tolist() == ids, cell
                if values is not None:
                    assert tokens.values is not None
                    np.testing.assert_array_equal(
                        tokens.values[a:b], np.asarray(values, dtype=tokens.values.dtype)
                    )
                seen += 1
    finally:
        source.close()
    assert seen == len(stored) == 400


def test_a_saved_tokenizer_round_trips(built):
    store, _ = built
    tokenizer = Tokenizer.from_store(store)
    again = Tokenizer.from_store(store)
    assert again == tokenizer
    record = json.loads((store / "tokenizer.json").read_text())
    assert record["format"] == "atlasprep-tokenizer"
    assert record["vocab"] == "vocab.json"


def test_fitting_without_a_store_gives_the_stores_tokenizer(built):
    store, config = built
    assert Tokenizer.fit(config) == Tokenizer.from_store(store)


def test_an_edited_tokenizer_file_is_refused(built, tmp_path):
    import shutil

    store, _ = built
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    record = json.loads((copy / "tokenizer.json").read_text())
    record["max_len"] = 5
    (copy / "tokenizer.json").write_text(json.dumps(record))
    with pytest.raises(CorruptStoreError, match="tokenizer"):
        Tokenizer.from_store(copy)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(CorruptStoreError, match="missing"):
        Tokenizer.from_store(copy)


def test_context_values_unknown_to_the_tokenizer_become_its_unk_token(built):
    store, _ = built
    tokenizer = Tokenizer.from_store(store)
    if not tokenizer.context:
        pytest.skip("no context tokens in this build")
    column = tokenizer.context[0]
    known = next(t for t in tokenizer.tokens if t.startswith(f"<{column}:") and t != unknown_token(column))
    known_value = known[len(column) + 2 : -1]
    obs = pa.table({c: ["a value no corpus had", known_value, "another"] for c in tokenizer.context})
    ids, unknown = tokenizer.context_ids(obs)
    assert ids[:, 0].tolist() == [
        tokenizer.tokens[unknown_token(column)],
        tokenizer.tokens[known],
        tokenizer.tokens[unknown_token(column)],
    ]
    assert dict(unknown)[column] == 2
    # the <unk> tokens come last: no other token's id moved for them
    assert min(tokenizer.tokens[unknown_token(c)] for c in tokenizer.context) > max(
        i for t, i in tokenizer.tokens.items() if ":<unk>>" not in t
    )
    # a tokenizer saved without them (before <unk> tokens existed) refuses such values
    older = replace(tokenizer, tokens={t: i for t, i in tokenizer.tokens.items() if ":<unk>>" not in t})
    with pytest.raises(Exception, match="no token for"):
        older.context_ids(obs)


def test_paired_segments_and_targets_come_back_from_the_store(tmp_path):
    from conftest import shared_file

    from atlasprep.align.barcodes import align_barcodes
    from atlasprep.sources.anndata import AnnDataSource

    src = shared_file("multiome/test_rna_atac.h5mu")
    mo = tmp_path / "mo.h5mu"
    align_barcodes(f"{src}:rna", atac=f"{src}:atac", out=mo)
    config = TokenizeConfig(
        source=SourceSpec(inputs=(f"{mo}:rna",), filter=CellFilter(primary_only=False)),
        out=tmp_path / "store",
        scheme="bin",
        max_len=20,
        n_bins=7,
        modalities=("atac",),
        segment_max_len=(("atac", 9),),
        shard_cells=300,
    )
    tokenize_cells(config)
    tokenizer = Tokenizer.from_store(config.out)
    assert [(p.modality, p.role, p.budget) for p in tokenizer.paired] == [("atac", "segment", 9)]
    stored = {}
    for shard in read_manifest(config.out)["shards"]:
        table = read_shard(config.out, shard["path"])
        for row in table.select(["cell_id", "input_ids", "values", "token_type"]).to_pylist():
            stored[row["cell_id"]] = row
    rna, atac = AnnDataSource([f"{mo}:rna"]), AnnDataSource([f"{mo}:atac"])
    try:
        positions = np.arange(rna.n_cells)
        encode = tokenizer.encoder([str(g) for g in rna.var().index])
        first = 0
        for batch, paired in zip(
            rna.iter_batches(positions, var_positions=None, batch_size=128, obs_columns=[]),
            atac.iter_batches(positions, var_positions=None, batch_size=128, obs_columns=[]),
            strict=True,
        ):
            out = tokenizer.encode_paired(encode(batch), {"atac": paired.X})
            for i, cell in enumerate(batch.cell_ids.astype(str)):
                a, b = out.offsets[i], out.offsets[i + 1]
                assert out.input_ids[a:b].tolist() == stored[cell]["input_ids"]
                assert out.token_type[a:b].tolist() == stored[cell]["token_type"]
                np.testing.assert_array_equal(out.values[a:b], np.float32(stored[cell]["values"]))
            first += batch.n_cells
    finally:
        rna.close()
        atac.close()
    assert first == len(stored)
