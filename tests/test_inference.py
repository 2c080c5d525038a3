"""The same tokens at inference: a saved tokenizer on new data gives what the corpus build gave.

A store's own cells, read back as an AnnData (in memory or a file) through
``Tokenizer.from_store(store)(…)`` or tokenized again with ``tokenize --tokenizer``, get the
store's tokens, for every scheme; context values the corpus never had become ``<unk>`` and are
counted; an exported tokenizer loads to the same value.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from typer.testing import CliRunner

from atlasprep.cli import app
from atlasprep.errors import UsageError
from atlasprep.shard import read_manifest, read_shard
from atlasprep.slice import SliceConfig, slice_cells
from atlasprep.sources import CellFilter, SourceSpec
from atlasprep.tokenize.api import TokenizeConfig, tokenize_cells
from atlasprep.tokenize.context import unknown_token
from atlasprep.tokenize.inference import tokenize_new
from atlasprep.tokenize.tokenizer import Tokenizer

BUILDS = {
    "rank": {"scheme": "rank", "context": ("tissue_general", "assay"), "max_len": 64},
    "bin": {"scheme": "bin", "n_hvg": 400, "max_len": 20, "n_bins": 9, "seed": 3},  # caps most cells
    "bin-all": {"scheme": "bin", "max_len": 40, "n_bins": 9, "seed": 3},  # every vocabulary gene
    "raw": {"scheme": "raw", "max_len": 30},
}


@pytest.fixture(scope="module")
def sliced(small_census, tmp_path_factory) -> tuple[SourceSpec, Path]:
    spec = SourceSpec(census_uri=str(small_census), max_cells=400, seed=2, batch_size=100)
    out = tmp_path_factory.mktemp("slice") / "cells.h5ad"
    slice_cells(SliceConfig(source=spec, out=out))
    return spec, out


@pytest.fixture(scope="module", params=sorted(BUILDS))
def built(request, sliced, tmp_path_factory) -> tuple[str, Path]:
    spec, _ = sliced
    store = tmp_path_factory.mktemp("tok") / request.param
    tokenize_cells(TokenizeConfig(source=spec, out=store, shard_cells=120, **BUILDS[request.param]))
    return BUILDS[request.param]["scheme"], store


def _store_cells(store: Path) -> dict[str, tuple[list[int], list[float] | None]]:
    cells = {}
    for shard in read_manifest(store)["shards"]:
        table = read_shard(store, shard["path"])
        values = table["values"].to_pylist() if "values" in table.column_names else None
        cell_ids, lists = table["cell_id"].to_pylist(), table["input_ids"].to_pylist()
        for i, (cell, ids) in enumerate(zip(cell_ids, lists, strict=True)):
            cells[str(cell)] = (ids, None if values is None else values[i])
    return cells


def _assert_batch_is_the_store(batch: dict, stored: dict) -> None:
    input_ids = np.asarray(batch["input_ids"])
    mask = np.asarray(batch["attention_mask"])
    assert sorted(batch["cell_id"]) == sorted(stored)
    for row, cell in enumerate(batch["cell_id"]):
        ids, values = stored[cell]
        assert input_ids[row][mask[row]].tolist() == ids, cell
        if values is not None:
            np.testing.assert_array_equal(np.asarray(batch["values"])[row][mask[row]], np.float32(values))


def test_the_stores_own_cells_get_the_stores_tokens(built, sliced):
    scheme, store = built
    _, path = sliced
    tokenizer = Tokenizer.from_store(store)
    stored = _store_cells(store)
    from_file = tokenizer(path)
    _assert_batch_is_the_store(from_file, stored)
    # in memory, in another order: a cell's tokens are its own, wherever it stands
    adata = ad.read_h5ad(path)
    order = np.random.default_rng(0).permutation(adata.n_obs)
    _assert_batch_is_the_store(tokenizer(adata[order].copy()), stored)
    if scheme != "rank":  # (rank's default order is Geneformer's: ties in the input's column order)
        # its genes in another order: the same tokens (genes by token id; equal values by token id)
        genes = np.random.default_rng(1).permutation(adata.n_vars)
        _assert_batch_is_the_store(tokenizer(adata[:, genes].copy()), stored)
        assert "values" in from_file
    import torch

    assert isinstance(from_file["input_ids"], torch.Tensor)
    assert from_file["input_ids"].dtype == torch.int64


def test_unseen_context_values_become_unk_and_are_counted(built, sliced):
    scheme, store = built
    if scheme != "rank":
        pytest.skip("context tokens are built with rank here")
    tokenizer = Tokenizer.from_store(store)
    adata = ad.read_h5ad(sliced[1])
    tissue = adata.obs["tissue_general"].astype(str).to_numpy()
    tissue[:7] = "the moon"
    adata.obs["tissue_general"] = tissue
    batch, report = tokenize_new(tokenizer, adata)
    assert dict(report.coverage.unknown_context) == {"tissue_general": 7}
    unk = tokenizer.tokens[unknown_token("tissue_general")]
    rows = [list(adata.obs_names).index(c) for c in batch["cell_id"]]
    ids = np.asarray(batch["input_ids"])
    assert [int(unk in ids[r]) for r in rows[:20]] == [int(r < 7) for r in rows[:20]]
    assert (ids[np.array(rows) < 7, 1] == unk).all()  # right after <cls>, as the corpus's value was


def test_tokenize_with_a_saved_tokenizer_gives_the_stores_shards(built, sliced, tmp_path):
    _, store = built
    _, path = sliced
    exported = tmp_path / "tokenizer"
    result = CliRunner().invoke(app, ["tokenizer", "export", str(store), "--out", str(exported)])
    assert result.exit_code == 0, result.output
    assert Tokenizer.load(exported) == Tokenizer.from_store(store)
    assert Tokenizer.load(exported / "tokenizer.json") == Tokenizer.from_store(store)
    again = tmp_path / "again"
    args = [
        "tokenize",
        "--input",
        str(path),
        "--all-data",
        "--tokenizer",
        str(exported),
        "--shard-cells",
        "120",
    ]
    result = CliRunner().invoke(app, [*args, "--out", str(again)])
    assert result.exit_code == 0, result.output
    assert _store_cells(again) == _store_cells(store)
    manifest = read_manifest(again)
    assert manifest["tokenizer"]["vocab_source"] == f"tokenizer {exported}"
    assert Tokenizer.from_store(again).tokens == Tokenizer.from_store(store).tokens


def test_export_overwrites_only_a_folder_an_export_wrote(built, tmp_path):
    """--overwrite replaces an exported tokenizer folder, never a folder holding anything else
    (a tokenizer.json of any content made a folder count as atlasprep's, and the rest was lost)."""
    _, store = built
    exported = tmp_path / "tokenizer"
    export = ["tokenizer", "export", str(store), "--out", str(exported), "--overwrite"]
    assert CliRunner().invoke(app, export).exit_code == 0
    assert CliRunner().invoke(app, export).exit_code == 0  # its own export: replaced
    (exported / "notes.txt").write_text("mine")
    result = CliRunner().invoke(app, export)
    assert result.exit_code == 2
    assert "it holds notes.txt, which an export does not write" in result.output
    assert (exported / "notes.txt").read_text() == "mine"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "tokenizer.json").write_text("{}")
    result = CliRunner().invoke(app, [*export[:4], str(mine), "--overwrite"])
    assert result.exit_code == 2
    assert "no atlasprep tokenizer.json" in result.output
    assert (mine / "tokenizer.json").read_text() == "{}"


def test_a_saved_tokenizer_fixes_the_encoding_fields(built, sliced, tmp_path):
    _, store = built
    spec = SourceSpec(inputs=(str(sliced[1]),), filter=CellFilter(primary_only=False))
    with pytest.raises(UsageError, match=r"max_len = 12: the tokenizer \(.*\) fixes it"):
        TokenizeConfig(source=spec, out=tmp_path / "x", tokenizer=store, max_len=12)
    with pytest.raises(UsageError, match=r"tokenizer = .*: no such store"):
        TokenizeConfig(source=spec, out=tmp_path / "x", tokenizer=tmp_path / "nothing")
    result = CliRunner().invoke(
        app, ["tokenize", "--input", str(sliced[1]), "--tokenizer", str(store), "--n-bins", "5", "--out", "o"]
    )
    assert result.exit_code == 2
    assert "--n-bins 5: the tokenizer" in result.output
    with pytest.raises(UsageError, match="not a token store, a tokenizer folder"):
        Tokenizer.load(tmp_path)
