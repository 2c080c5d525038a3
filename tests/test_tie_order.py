"""The rank scheme's ``stable`` tie order: genes by value (float64 ``count / total * 10_000 /
median``), highest first, equal values by ascending token id — checked against ``np.lexsort``
cell by cell, and the same bytes whatever the batch size, the thread count, the input's column
order or layout; the default (``numpy``) is untouched and recorded as such."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp
from conftest import assert_clean_error, shared_file
from typer.testing import CliRunner

from atlasprep.cli import app
from atlasprep.errors import CorruptStoreError, UsageError
from atlasprep.shard import read_manifest, read_shard
from atlasprep.sources import SourceSpec, open_census
from atlasprep.tokenize import RankEncoder, load_json_dict
from atlasprep.tokenize import rank as rank_module
from atlasprep.tokenize.config import TieOrder, TokenizeConfig
from atlasprep.tokenize.tokenizer import Tokenizer
from atlasprep.tokenize.tokenizer_files import load_tokenizer_from

N_GENES = 300
GENES = [f"ENSG{i:011d}" for i in range(N_GENES)]


def _vocabulary(rng: np.random.Generator) -> tuple[dict[str, int], dict[str, float]]:
    """Shuffled token ids (so token order is not column order), a tenth of the genes outside
    the vocabulary, and medians that tie (few distinct values) or spread over 12 decades."""
    ids = rng.permutation(N_GENES) + 4
    tokens = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3}
    tokens.update(
        {g: int(t) for g, t, out in zip(GENES, ids, rng.random(N_GENES) < 0.1, strict=True) if not out}
    )
    spread = 10.0 ** rng.uniform(-6, 6, N_GENES)
    few = rng.choice([0.5, 1.0, 2.0], N_GENES)
    medians = {g: float(few[i] if i % 3 else spread[i]) for i, g in enumerate(GENES)}
    return tokens, medians


def _counts(rng: np.random.Generator, n_cells: int = 120) -> sp.csr_matrix:
    """Small integer counts (many ties), some cells dense (radix path), some short (insertion
    path), empty cells, and explicit zeros stored."""
    density = rng.choice([0.0, 0.02, 0.1, 0.9], n_cells)
    X = (rng.random((n_cells, N_GENES)) < density[:, None]) * rng.integers(1, 4, (n_cells, N_GENES))
    X[0] = 1  # every gene once: runs of far more than 32 tied values
    X = sp.csr_matrix(X.astype(np.float32))
    X.data[::17] = 0  # stored zeros are not expressed genes
    return X


def _lexsort_reference(X, tokens, medians, n_counts, max_len, special):  # type: ignore[no-untyped-def]
    """The documented order, cell by cell: value descending, then token id ascending."""
    token_ids = np.array([tokens.get(g, -1) for g in GENES])
    norms = np.array([medians[g] for g in GENES])
    cells = []
    for i in range(X.shape[0]):
        row = X[i]
        keep = (row.data != 0) & (token_ids[row.indices] >= 0)
        cols, x = row.indices[keep], row.data[keep].astype(np.float64)
        with np.errstate(divide="ignore"):
            values = x / np.float64(n_counts[i]) * 10_000 / norms[cols]
        ranked = token_ids[cols][np.lexsort((token_ids[cols], -values))]
        if special:
            ranked = np.concatenate([[2], ranked[: max_len - 2], [3]])
        cells.append(ranked[:max_len].tolist())
    return cells


def _cells(ranked) -> list[list[int]]:  # type: ignore[no-untyped-def]
    return [ranked.cell(i).tolist() for i in range(len(ranked.offsets) - 1)]


@pytest.mark.parametrize(("max_len", "special"), [(4096, True), (40, True), (4096, False), (25, False)])
def test_stable_order_is_value_then_ascending_token_id(max_len, special):
    rng = np.random.default_rng(max_len)
    tokens, medians = _vocabulary(rng)
    X = _counts(rng)
    n_counts = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    n_counts[5] = 0  # a total of 0: every value is inf, all tied, so ordered by token alone
    encoder = RankEncoder.from_dictionaries(
        GENES, token_dictionary=tokens, gene_medians=medians, max_len=max_len, special_tokens=special,
        tie_order="stable",
    )  # fmt: skip
    got = encoder.encode(X, n_counts)
    assert _cells(got) == _lexsort_reference(X, tokens, medians, n_counts, max_len, special)
    # the data has ties that numpy's order breaks otherwise: this test can fail
    numpy_order = RankEncoder.from_dictionaries(
        GENES, token_dictionary=tokens, gene_medians=medians, max_len=max_len, special_tokens=special
    ).encode(X, n_counts)
    assert not np.array_equal(numpy_order.input_ids, got.input_ids)


def test_stable_order_ignores_column_order_layout_threads_and_batches(monkeypatch):
    rng = np.random.default_rng(7)
    tokens, medians = _vocabulary(rng)
    X = _counts(rng, 200)

    def encode(X, genes, **kw):  # type: ignore[no-untyped-def]
        encoder = RankEncoder.from_dictionaries(
            genes, token_dictionary=tokens, gene_medians=medians, max_len=64, tie_order=TieOrder.stable
        )
        return encoder.encode(X, **kw).input_ids

    want = encode(X, GENES)
    perm = rng.permutation(N_GENES)
    assert np.array_equal(encode(sp.csr_matrix(X[:, perm]), [GENES[c] for c in perm]), want)
    as_int = sp.csr_matrix(X, dtype=np.int64)
    assert np.array_equal(encode(as_int, GENES, x_dtype=np.dtype(np.int64), dense=True), want)
    halves = [encode(X[a:b], GENES) for a, b in ((0, 77), (77, 200))]
    assert np.array_equal(np.concatenate(halves), want)
    for threads in (1, 3, 5):
        monkeypatch.setattr(rank_module, "_THREADS", threads)
        assert np.array_equal(encode(X, GENES), want)


def test_config_refuses_stable_outside_rank_and_unknown_orders():
    spec = SourceSpec(census="demo")
    assert TokenizeConfig(source=spec, out=Path("x"), tie_order="stable").tie_order is TieOrder.stable
    with pytest.raises(UsageError, match=r"tie_order.*scheme = 'rank'"):
        TokenizeConfig(source=spec, out=Path("x"), scheme="bin", tie_order="stable")
    with pytest.raises(UsageError, match=r"tie_order.*'numpy', 'stable'"):
        TokenizeConfig(source=spec, out=Path("x"), tie_order="sorted")


def test_cli_refuses_tie_order_for_bin(small_census, tmp_path):
    base = ["tokenize", "--census-uri", str(small_census), "--out", str(tmp_path / "s")]
    bad = CliRunner().invoke(app, [*base, "--scheme", "bin", "--tie-order", "stable"])
    assert "tie" in assert_clean_error(bad, codes=(2,))
    # an unknown value is the parser's refusal: tests/test_trust.py checks it from the shell


def _build(small_census: Path, dictionaries: tuple[Path, Path], out: Path, threads: int, batch: int) -> dict:
    """`atlasprep tokenize --tie-order stable` in a fresh process with ``threads`` numba threads."""
    command = [
        sys.executable, "-m", "atlasprep", "--quiet", "tokenize", "--census-uri", str(small_census),
        "--token-dictionary", str(dictionaries[0]), "--gene-medians", str(dictionaries[1]),
        "--tie-order", "stable", "--batch-size", str(batch), "--shard-cells", "400", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "NUMBA_NUM_THREADS": str(threads)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return read_manifest(out)


@pytest.fixture(scope="module")
def dictionaries() -> tuple[Path, Path]:
    return (
        shared_file("geneformer/token_dictionary_gc104M.json"),
        shared_file("geneformer/gene_median_dictionary_gc104M.json"),
    )


def test_stable_stores_are_the_same_bytes_whatever_batch_and_threads(small_census, tmp_path, dictionaries):
    one = _build(small_census, dictionaries, tmp_path / "one", threads=1, batch=97)
    two = _build(small_census, dictionaries, tmp_path / "two", threads=2, batch=8192)
    assert [s["sha256"] for s in one["shards"]] == [s["sha256"] for s in two["shards"]]
    assert one["tokenizer"]["tie_order"] == "stable"
    assert one["recipe"]["tie_order"] == "stable"
    assert json.loads((tmp_path / "one" / "tokenizer.json").read_text())["tie_order"] == "stable"
    tokenizer = Tokenizer.from_store(tmp_path / "one")
    assert tokenizer.tie_order is TieOrder.stable
    # the stored cells are the documented order (each against its own lexsort reference)
    table = pa.concat_tables(read_shard(tmp_path / "one", s["path"]) for s in one["shards"])
    ids = np.array([int(c) for c in table["cell_id"].to_pylist()[:60]])
    order = np.argsort(ids)
    source = open_census(census_uri=str(small_census))
    try:
        (batch,) = source.iter_batches(ids[order], var_positions=None, batch_size=1000)
        genes = list(source.var().index)
    finally:
        source.close()
    tokens, medians = load_json_dict(dictionaries[0]), load_json_dict(dictionaries[1])
    want = _store_reference(batch.X, genes, tokens, medians)
    stored = table["input_ids"].to_pylist()[:60]
    assert [stored[i] for i in order] == want
    # the loaded tokenizer (as StreamDataset and inference use it) gives the store's tokens
    encoded = tokenizer.encoder(genes)(batch)
    bounds = itertools.pairwise(encoded.offsets)
    assert [encoded.input_ids[a:b].tolist() for a, b in bounds] == want


def _store_reference(X, genes, tokens, medians):  # type: ignore[no-untyped-def]
    token_ids = np.array([tokens[g] if g in tokens and g in medians else -1 for g in genes])
    norms = np.array([medians.get(g, np.nan) for g in genes])
    n_counts = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    cells = []
    for i in range(X.shape[0]):
        row = X[i]
        keep = (row.data != 0) & (token_ids[row.indices] >= 0)
        cols = row.indices[keep]
        values = row.data[keep].astype(np.float64) / n_counts[i] * 10_000 / norms[cols]
        ranked = token_ids[cols][np.lexsort((token_ids[cols], -values))]
        cells.append([tokens["<cls>"], *ranked[:4094].tolist(), tokens["<eos>"]])
    return cells


def test_default_store_records_numpy_and_old_tokenizers_load_as_numpy(small_census, tmp_path):
    from atlasprep.tokenize.api import tokenize_cells

    spec = SourceSpec(census_uri=str(small_census), max_cells=200, batch_size=100)
    result = tokenize_cells(TokenizeConfig(source=spec, out=tmp_path / "s", max_len=64))
    assert result.manifest["tokenizer"]["tie_order"] == "numpy"
    folder = Tokenizer.from_store(tmp_path / "s").export(tmp_path / "tok")
    record = json.loads((folder / "tokenizer.json").read_text())
    # the default is left out of tokenizer.json, whose bytes stay as before the choice existed
    assert "tie_order" not in record
    assert load_tokenizer_from(folder).tie_order is TieOrder.numpy
    (folder / "tokenizer.json").write_text(json.dumps({**record, "tie_order": "random"}))
    with pytest.raises(CorruptStoreError, match="tie_order 'random'"):
        load_tokenizer_from(folder)
    # a saved tokenizer fixes the tie order: a build with it may not ask for another
    with pytest.raises(UsageError, match="tie_order"):
        TokenizeConfig(source=spec, out=tmp_path / "t", tokenizer=tmp_path / "s", tie_order="stable")


def test_recipe_takes_tie_order(tmp_path):
    from atlasprep.run.plan import plan_recipe
    from atlasprep.run.recipe import load_recipe

    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "t"\n[source]\ncensus = "demo"\n[tokenize]\ntie_order = "stable"\n')
    stages = plan_recipe(load_recipe(recipe, out=tmp_path / "o")).stages
    (config,) = [s.config for s in stages if isinstance(s.config, TokenizeConfig)]
    assert config.tie_order is TieOrder.stable
