"""Outputs that fit the ecosystem: stores of one vocabulary from two sources concatenate in
HuggingFace datasets, a store loads with its splits from its dataset card, the in-memory API
gives what slice writes, and a str where terms are expected is one term."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import cellxgene_census
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import atlasprep
from atlasprep.shard import read_manifest, read_shard
from atlasprep.sources import CellFilter, SourceSpec
from atlasprep.tokenize.api import TokenizeConfig, tokenize_cells


@pytest.fixture(scope="module")
def two_sources(small_census, tmp_path_factory) -> tuple[Path, Path]:
    """Store A from the SOMA census; store B from an h5ad slice of other cells, tokenized with
    A's tokenizer (one vocabulary)."""
    base = tmp_path_factory.mktemp("eco")
    census = SourceSpec(census_uri=str(small_census), filter=CellFilter(where="soma_joinid < 600"))
    first = TokenizeConfig(source=census, out=base / "a", split_by="donor_id", max_len=64)
    tokenize_cells(first)
    sliced = base / "other.h5ad"
    atlasprep.slice_cells(
        atlasprep.SliceConfig(
            source=SourceSpec(census_uri=str(small_census), filter=CellFilter(where="soma_joinid >= 600")),
            out=sliced,
        )
    )
    files = SourceSpec(inputs=(str(sliced),), filter=CellFilter(primary_only=False))
    tokenize_cells(TokenizeConfig(source=files, out=base / "b", tokenizer=first.out))
    return first.out, base / "b"


def test_stores_from_two_sources_have_one_schema_and_concatenate(two_sources, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    a, b = two_sources
    schemas = [read_shard(store, read_manifest(store)["shards"][0]["path"]).schema for store in (a, b)]
    assert schemas[0].field("donor_id").type == schemas[1].field("donor_id").type == pa.string()
    assert schemas[0].remove_metadata() == schemas[1].remove_metadata()
    first = datasets.load_dataset(str(a), cache_dir=str(tmp_path / "hf"))
    second = datasets.load_dataset(str(b), cache_dir=str(tmp_path / "hf"))
    assert {name: len(split) for name, split in first.items()} == {
        k: v for k, v in read_manifest(a)["splits"]["n_cells"].items() if v
    }
    both = datasets.concatenate_datasets([first["train"], second["train"]])
    assert len(both) == len(first["train"]) + len(second["train"])
    assert (a / "README.md").read_text().startswith("---\nconfigs:")


def test_get_anndata_gives_what_slice_writes(small_census, tmp_path):
    keywords = {"census_uri": str(small_census), "tissue": "lung", "max_cells": 40, "seed": 3}
    adata = atlasprep.get_anndata(**keywords)
    spec = SourceSpec(census_uri=str(small_census), filter=CellFilter(tissue=("lung",)), max_cells=40, seed=3)
    atlasprep.slice_cells(atlasprep.SliceConfig(source=spec, out=tmp_path / "s.h5ad"))
    written = ad.read_h5ad(tmp_path / "s.h5ad")
    assert list(adata.obs_names) == list(written.obs_names)
    pd.testing.assert_frame_equal(adata.obs, written.obs)  # dtypes and categories too
    assert list(adata.var_names) == list(written.var_names)
    np.testing.assert_array_equal(adata.X.toarray(), written.X.toarray())
    assert (adata.obs["tissue_general"] == "lung").all()
    assert atlasprep.get_anndata(spec).n_obs == 40
    with pytest.raises(TypeError, match="unknown keyword"):
        atlasprep.get_anndata(census="demo", tisue="lung")


def test_a_string_is_one_term():
    assert CellFilter(tissue="lung").tissue == ("lung",)
    assert CellFilter(cell_type=["T cell", "B cell"]).cell_type == ("T cell", "B cell")


@pytest.mark.parametrize(("name", "compression"), [("c.h5ad", "gzip"), ("c.h5ad", "lzf"), ("c.zarr", "gzip")])
def test_slices_compress_x_and_read_back_the_same(small_census, tmp_path, name, compression):
    spec = SourceSpec(census_uri=str(small_census), max_cells=300, seed=1)
    plain, packed = tmp_path / f"plain{Path(name).suffix}", tmp_path / name
    atlasprep.slice_cells(atlasprep.SliceConfig(source=spec, out=plain))
    atlasprep.slice_cells(atlasprep.SliceConfig(source=spec, out=packed, compression=compression))
    a, b = (
        ad.read_h5ad(plain) if name.endswith("h5ad") else ad.read_zarr(plain),
        (ad.read_h5ad(packed) if name.endswith("h5ad") else ad.read_zarr(packed)),
    )
    np.testing.assert_array_equal(a.X.toarray(), b.X.toarray())
    if name.endswith("h5ad"):
        import h5py

        with h5py.File(packed) as f:
            assert f["X/data"].compression == compression
        assert packed.stat().st_size < plain.stat().st_size
    with pytest.raises(
        atlasprep.errors.UsageError, match="compression = 'lzf': zarr stores take gzip or zstd"
    ):
        atlasprep.SliceConfig(source=spec, out=tmp_path / "x.zarr", compression="lzf")


def test_slice_flags_for_census_options(small_census, tmp_path):
    from typer.testing import CliRunner

    from atlasprep.cli import app

    out = tmp_path / "o.h5ad"
    runner = CliRunner()
    args = ["slice", "--census-uri", str(small_census), "--self-reported-ethnicity", "European"]
    done = runner.invoke(
        app, [*args, "--obs-columns", "cell_type,self_reported_ethnicity", "--out", str(out)]
    )
    assert done.exit_code == 0, done.output
    obs = ad.read_h5ad(out).obs
    with cellxgene_census.open_soma(uri=str(small_census)) as census:  # as its column_names
        reference = cellxgene_census.get_anndata(
            census,
            "Homo sapiens",
            obs_coords=obs.index.astype(int).to_numpy(),
            obs_column_names=["cell_type", "self_reported_ethnicity"],
        ).obs
    pd.testing.assert_frame_equal(obs.reset_index(drop=True), reference.reset_index(drop=True))
    assert obs["self_reported_ethnicity"].astype(str).str.contains("European").all()
    layered = runner.invoke(app, ["slice", str(out), "--layer", "X", "--all-data", "--dry-run"])
    assert layered.exit_code == 0, layered.output
    assert f"{len(obs)} cells match" in layered.stdout


def test_joining_files_with_different_genes_is_explicit_and_recorded(small_census, tmp_path):
    from atlasprep.errors import UsageError

    whole = atlasprep.get_anndata(census_uri=str(small_census), max_cells=60, seed=2)
    a, b = tmp_path / "a.h5ad", tmp_path / "b.h5ad"
    whole[:30, :100].copy().write_h5ad(a)
    whole[30:, 50:150].copy().write_h5ad(b)
    files = (str(a), str(b))
    with pytest.raises(
        UsageError,
        match=r"join = None: the inputs measure different genes \(a.h5ad 100, b.h5ad 100; 50 in all",
    ):
        atlasprep.slice_cells(atlasprep.SliceConfig(source=SourceSpec(inputs=files), out=tmp_path / "x.h5ad"))
    inner = tmp_path / "inner.h5ad"
    atlasprep.slice_cells(atlasprep.SliceConfig(source=SourceSpec(inputs=files, join="inner"), out=inner))
    assert list(ad.read_h5ad(inner).var_names) == list(whole.var_names[50:100])
    outer = tmp_path / "outer.h5ad"
    atlasprep.slice_cells(atlasprep.SliceConfig(source=SourceSpec(inputs=files, join="outer"), out=outer))
    joined = ad.read_h5ad(outer)
    assert joined.n_vars == 150
    presence = joined.uns["feature_presence"]
    assert [Path(f).name for f in presence["files"]] == ["a.h5ad", "b.h5ad"]
    matrix = presence["matrix"].toarray().astype(bool)
    names = np.asarray(joined.var_names)
    assert set(names[matrix[0]]) == set(whole.var_names[:100])
    assert set(names[matrix[1]]) == set(whole.var_names[50:150])


def test_hvg_counts_only_the_cells_that_measured_a_gene(tmp_path):
    """An outer join reads a file's unmeasured genes as 0; the HVG pass must not take those zeros
    for expression: a gene one file measured at a constant level is not variable."""
    import scipy.sparse as sp

    from atlasprep.tokenize.tokenizer import Tokenizer

    rng = np.random.default_rng(0)
    genes = [f"ENSG{i:011d}" for i in range(300)]
    means = rng.gamma(1.0, 2.0, size=300)
    X = rng.poisson(means, size=(600, 300)).astype(np.float32)
    X[300:, 250] = 30.0  # measured only by the second file, the same in each of its cells
    a, b = tmp_path / "a.h5ad", tmp_path / "b.h5ad"
    ad.AnnData(X=sp.csr_matrix(X[:300, :200]), var=pd.DataFrame(index=genes[:200])).write_h5ad(a)
    second = ad.AnnData(X=sp.csr_matrix(X[300:, 100:]), var=pd.DataFrame(index=genes[100:]))
    second.obs_names = [f"b{i}" for i in range(300)]
    second.write_h5ad(b)
    spec = SourceSpec(inputs=(str(a), str(b)), join="outer", filter=CellFilter(primary_only=False))
    from atlasprep.sources import open_source
    from atlasprep.tokenize.fit import _measured
    from atlasprep.tokenize.hvg import GeneMoments

    source = open_source(spec)
    try:
        positions = np.arange(600)
        measured = _measured(source, positions, np.arange(300))
        assert measured is not None
        assert np.array_equal(measured, np.repeat([300, 600, 300], 100))
        moments = GeneMoments(n_genes=300, measured=measured)
        for batch in source.iter_batches(positions, var_positions=None, batch_size=128, obs_columns=[]):
            moments.add(batch.X)
    finally:
        source.close()
    mean, var = moments.mean_var()
    # a gene one file measured has that file's moments, not the join's zeros
    np.testing.assert_allclose(mean[250], 30.0)
    assert var[250] == 0
    np.testing.assert_allclose(var[260], np.var(X[300:, 260], ddof=1), rtol=1e-6)
    np.testing.assert_allclose(var[150], np.var(X[:, 150], ddof=1), rtol=1e-6)
    chosen = Tokenizer.fit(spec, scheme="bin", n_hvg=40, max_len=64).hvg_genes
    assert chosen is not None
    assert genes[250] not in chosen  # constant where measured


def test_a_census_slice_carries_its_datasets_gene_presence(small_census, tmp_path):
    import tiledbsoma as soma

    out = tmp_path / "p.h5ad"
    atlasprep.slice_cells(atlasprep.SliceConfig(source=SourceSpec(census_uri=str(small_census)), out=out))
    written = ad.read_h5ad(out)
    presence = written.uns["feature_presence"]
    datasets = [str(d) for d in presence["files"]]
    assert datasets == sorted(written.obs["dataset_id"].astype(str).unique())
    matrix = presence["matrix"].toarray().astype(bool)
    assert not matrix.all()  # the demo has a dataset that measured fewer genes
    with soma.Collection.open(str(small_census)) as census:
        table = census["census_info"]["datasets"].read().concat().to_pandas().set_index("dataset_id")
        stored = census["census_data"]["homo_sapiens"].ms["RNA"]["feature_dataset_presence_matrix"]
        for k, dataset in enumerate(datasets):
            row = int(table.loc[dataset, "soma_joinid"])
            coo = stored.read(coords=([row],)).tables().concat()
            expected = np.zeros(written.n_vars, dtype=bool)
            expected[coo["soma_dim_1"].to_numpy()] = coo["soma_data"].to_numpy()
            assert np.array_equal(matrix[k], expected)


def test_a_token_store_keeps_the_gene_presence_of_its_datasets(small_census, tmp_path):
    from atlasprep.sources import open_source

    out = tmp_path / "store"
    every = SourceSpec(census_uri=str(small_census), filter=CellFilter(primary_only=False))
    tokenize_cells(TokenizeConfig(source=every, out=out, max_len=32))
    presence = read_manifest(out)["presence"]
    source = open_source(SourceSpec(census_uri=str(small_census)))
    try:
        datasets, matrix = source.presence()
        genes = np.asarray(source.var().index.astype(str))
    finally:
        source.close()
    assert presence["datasets"] == list(datasets)
    assert presence["n_measured"] == matrix.sum(axis=1).tolist()
    partial = {d: genes[~row].tolist() for d, row in zip(datasets, matrix, strict=True) if not row.all()}
    assert presence["unmeasured"] == partial
    assert partial


def test_var_filter_keeps_the_genes_it_names(small_census, tmp_path):
    from typer.testing import CliRunner

    from atlasprep.cli import app
    from atlasprep.errors import UsageError

    spec = SourceSpec(
        census_uri=str(small_census), max_cells=5, var_filter="feature_length > 5000 and nnz > 10"
    )
    adata = atlasprep.get_anndata(spec)
    whole = atlasprep.get_anndata(census_uri=str(small_census), max_cells=5)
    keep = (whole.var["feature_length"] > 5000) & (whole.var["nnz"] > 10)
    assert list(adata.var_names) == list(whole.var_names[keep.to_numpy()])
    assert 0 < adata.n_vars < whole.n_vars
    with pytest.raises(UsageError, match="var_filter"):
        SourceSpec(census_uri=str(small_census), var_filter="feature_length >")
    bad = CliRunner().invoke(
        app, ["slice", "--census-uri", str(small_census), "--var-filter", "nope == 1", "--dry-run"]
    )
    assert bad.exit_code == 2
    assert "--var-filter 'nope == 1': var has no column 'nope'" in bad.output
