"""atlasprep's value bins against scGPT's own Preprocessor, when its source is at hand.

scGPT's ``scgpt/preprocess.py`` is loaded from the directory ``ATLASPREP_SCGPT_SRC`` names (a
source checkout's ``scgpt/``: its package ``__init__`` would import the whole model stack); it
needs torch and scanpy. Elsewhere this is skipped. scGPT draws a digit at random where a value
equals several coinciding edges (``ceil(rand * (right - left) + left)``), so it runs twice, its
uniform draws all 0 and then all just below 1: the highest and the lowest digit it can give.
Where they agree, atlasprep must give that digit; elsewhere, one between them.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp
from conftest import demo_cells, source_module

from atlasprep.shard.store import read_manifest, read_shard
from atlasprep.sources import CellFilter, SourceSpec
from atlasprep.tokenize import bin_values
from atlasprep.tokenize.api import TokenizeConfig, tokenize_cells


def _preprocess_module():  # type: ignore[no-untyped-def]
    src = os.environ.get("ATLASPREP_SCGPT_SRC")
    if not src:
        pytest.skip("ATLASPREP_SCGPT_SRC does not name scGPT's scgpt/ source directory")
    pytest.importorskip("torch")
    pytest.importorskip("scanpy")
    return source_module("scgpt", src, "preprocess", logger=logging.getLogger("scgpt"))


def _scgpt_bins(preprocess, counts: sp.csr_matrix, n_bins: int, monkeypatch) -> np.ndarray:  # type: ignore[no-untyped-def]
    """scGPT's binned layer of ``counts`` (its tutorial's steps: normalize to 1e4, log1p, bin)
    with its draws all 0, then all just below 1: (2, cells, genes), the highest and the lowest
    digit scGPT can give each value."""
    import anndata as ad

    bounds = []
    for draw in (0.0, np.nextafter(1.0, 0.0)):
        adata = ad.AnnData(X=counts.copy())
        monkeypatch.setattr(np.random, "rand", lambda n, draw=draw: np.full(n, draw))
        preprocess.Preprocessor(
            use_key="X",
            filter_gene_by_counts=False,
            filter_cell_by_counts=False,
            normalize_total=1e4,
            result_normed_key="X_normed",
            log1p=True,
            result_log1p_key="X_log1p",
            subset_hvg=False,
            binning=n_bins,
            result_binned_key="X_binned",
        )(adata)
        bounds.append(np.asarray(adata.layers["X_binned"]))
    monkeypatch.undo()
    return np.stack(bounds)


def _agrees(ours: np.ndarray, bounds: np.ndarray) -> None:
    high, low = bounds
    assert (low <= high).all()
    fixed = low == high
    assert fixed.mean() > 0.5  # (most digits are not drawn: the comparison means something)
    assert (~fixed).any()  # (and some are: the middle of the range is tested too)
    np.testing.assert_array_equal(ours[fixed], high[fixed])
    assert ((ours >= low) & (ours <= high)).all()


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("n_bins", [11, 51])
def test_bins_of_demo_cells_as_scgpts_preprocessor_bins_them(small_census, monkeypatch, n_bins):
    preprocess = _preprocess_module()
    X, _ = demo_cells(small_census, 300)
    _agrees(bin_values(X, n_bins).toarray(), _scgpt_bins(preprocess, X, n_bins, monkeypatch))


@pytest.mark.filterwarnings("ignore")
def test_a_bin_store_holds_scgpts_bins_of_its_vocabulary_genes(small_census, tmp_path, monkeypatch):
    """A ``--scheme bin`` store from an h5ad: each cell's (gene, value) pairs are scGPT's bins of
    the vocabulary's genes (scGPT's tutorial keeps those genes before it preprocesses)."""
    import anndata as ad

    preprocess = _preprocess_module()
    X, genes = demo_cells(small_census, 200)
    adata = ad.AnnData(X=X)
    adata.obs_names = [f"cell{i}" for i in range(X.shape[0])]
    adata.var_names = genes
    adata.write_h5ad(tmp_path / "cells.h5ad")
    spec = SourceSpec(inputs=(str(tmp_path / "cells.h5ad"),), filter=CellFilter(primary_only=False))
    tokenize_cells(TokenizeConfig(source=spec, out=tmp_path / "store", scheme="bin", shuffle=False))
    store = tmp_path / "store"
    table = pa.concat_tables(read_shard(store, s["path"]) for s in read_manifest(store)["shards"])
    vocab = {int(t): g for g, t in json.loads((store / "vocab.json").read_text()).items()}
    in_vocab = [i for i, g in enumerate(genes) if g in set(vocab.values())]
    bounds = _scgpt_bins(preprocess, X[:, in_vocab].tocsr(), 51, monkeypatch)
    column = {genes[c]: k for k, c in enumerate(in_vocab)}
    ours = np.zeros(bounds.shape[1:], dtype=np.int64)
    rows = {name: r for r, name in enumerate(adata.obs_names)}
    for name, ids, values in zip(
        table["cell_id"].to_pylist(), table["input_ids"].to_pylist(), table["values"].to_pylist(), strict=True
    ):
        for token, value in zip(ids, values, strict=True):
            if token in vocab and vocab[token] in column:  # (special tokens have no gene)
                ours[rows[name], column[vocab[token]]] = int(value)
    _agrees(ours, bounds)
