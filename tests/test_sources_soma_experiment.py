"""One SOMA Experiment on disk (what ``tiledbsoma.io.from_anndata`` writes) as a source: sliced,
filtered and tokenized as a Census copy is, its obs as tiledbsoma's own ``to_anndata`` gives it."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import tiledbsoma
import tiledbsoma.io
from conftest import assert_clean_error
from typer.testing import CliRunner

from atlasprep.cli import app
from atlasprep.shard import read_manifest
from atlasprep.slice import SliceConfig, slice_cells
from atlasprep.sources import CellFilter, SourceSpec


def _experiment(path, *, primary: bool, layer: str = "data") -> ad.AnnData:
    rng = np.random.default_rng(5)
    n = 120
    adata = ad.AnnData(sp.csr_matrix(rng.poisson(0.6, (n, 30)).astype(np.float32)))
    adata.obs_names = [f"cell{i}" for i in range(n)]
    adata.var_names = [f"ENSG{i:011d}" for i in range(30)]
    adata.var["feature_name"] = [f"G{i}" for i in range(30)]
    adata.obs["cell_type_ontology_term_id"] = pd.Categorical(
        rng.choice(["CL:0000084", "CL:0000236", "CL:0000057"], n)
    )
    adata.obs["stage"] = pd.Categorical(
        rng.choice(["infant", "adult"], n), categories=["infant", "child", "adult"], ordered=True
    )
    adata.obs["barcode"] = [f"AC{i}G" for i in range(n)]
    if primary:
        adata.obs["is_primary_data"] = np.arange(n) % 4 != 0
    tiledbsoma.io.from_anndata(str(path), adata, measurement_name="RNA", X_layer_name=layer)
    return adata


def test_an_experiment_slices_as_tiledbsoma_reads_it(tmp_path):
    original = _experiment(tmp_path / "exp", primary=True)
    out = tmp_path / "t.h5ad"
    spec = SourceSpec(
        census_uri=str(tmp_path / "exp"), filter=CellFilter(cell_type=("T cell",)), layer="data"
    )
    result = slice_cells(SliceConfig(source=spec, out=out))
    back = ad.read_h5ad(out)
    keep = (original.obs["cell_type_ontology_term_id"] == "CL:0000084").to_numpy() & original.obs[
        "is_primary_data"
    ].to_numpy()
    assert result.n_cells == back.n_obs == int(keep.sum()) > 0
    np.testing.assert_array_equal(back.X.toarray(), original.X[keep].toarray())
    assert list(back.var_names) == list(original.var_names)  # genes from var_id
    with (
        tiledbsoma.open(str(tmp_path / "exp")) as exp,
        exp.axis_query("RNA", obs_query=tiledbsoma.AxisQuery(coords=(np.flatnonzero(keep),))) as query,
    ):
        reference = query.to_anndata(X_name="data")
    # obs as tiledbsoma gives it (which moves obs_id to its index; a slice keys cells by soma_joinid)
    theirs = reference.obs.reset_index(drop=True)
    mine = back.obs.drop(columns="obs_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, theirs)
    assert list(back.obs["stage"].cat.categories) == ["infant", "child", "adult"]
    assert back.obs["stage"].cat.ordered


def test_an_experiment_without_is_primary_data_counts_every_cell_and_says_its_layers(tmp_path):
    _experiment(tmp_path / "exp", primary=False)
    uri = str(tmp_path / "exp")
    runner = CliRunner()
    result = runner.invoke(app, ["slice", "--census-uri", uri, "--dry-run"])
    assert_clean_error(result, codes=(2,), contains="no X layer 'raw'")
    assert "--layer (it has: data)" in result.output
    result = runner.invoke(app, ["slice", "--census-uri", uri, "--layer", "data", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_cells"] == 120  # every cell: none is marked not primary
    store = tmp_path / "store"
    result = runner.invoke(
        app,
        ["tokenize", "--census-uri", uri, "--layer", "data", "--scheme", "bin", "--split-by", "stage",
         "--split-fallback", "--context", "stage", "--out", str(store)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = read_manifest(store)
    assert sum(s["n_cells"] for s in manifest["shards"]) == 120
    assert "is_primary_data" not in str(manifest["provenance"])


def test_census_uri_naming_an_array_is_a_clean_error(tmp_path):
    _experiment(tmp_path / "exp", primary=True)
    result = CliRunner().invoke(app, ["slice", "--census-uri", str(tmp_path / "exp" / "obs"), "--dry-run"])
    assert_clean_error(result, codes=(2,), contains="a SOMA DataFrame, not a Census-layout collection")


@pytest.mark.parametrize("columns", [("feature_name",)])
def test_an_experiment_whose_var_has_no_gene_ids_is_refused_by_name(tmp_path, columns):
    adata = ad.AnnData(sp.csr_matrix(np.ones((3, 2), dtype=np.float32)))
    adata.var_names = ["ENSG1", "ENSG2"]
    adata.var["feature_name"] = ["A", "B"]
    tiledbsoma.io.from_anndata(str(tmp_path / "exp"), adata, measurement_name="RNA", var_id_name="gene")
    result = CliRunner().invoke(
        app, ["slice", "--census-uri", str(tmp_path / "exp"), "--layer", "data", "--all-data", "--out",
              str(tmp_path / "x.h5ad")],
    )  # fmt: skip
    assert_clean_error(result, codes=(2,), contains="no gene ID column (feature_id or var_id")
    assert not (tmp_path / "x.h5ad").exists()
