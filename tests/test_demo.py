"""The demo atlas: Census layout and types, filters that work (the categorical trap), real terms,
realistic counts, duplicates, determinism, and the cached copy."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import threading
from pathlib import Path

import cellxgene_census
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.sparse as sp
import tiledbsoma as soma

import atlasprep.demo
from atlasprep.demo import DEMO_VERSION, _datasets, _expression, build_census, demo_census_uri
from atlasprep.demo import _build as demo_build
from atlasprep.demo._catalog import catalog
from atlasprep.demo._expression import CountsGenerator, expression_model
from atlasprep.demo._plan import plan_cells
from atlasprep.demo._schema import OBS_FIELDS, VAR_FIELDS, X_TILE_EXTENT, arrow_schema
from atlasprep.errors import OutputExistsError, UsageError
from atlasprep.ontology import get_parser
from atlasprep.testing import small_census as build_small_census

N_CELLS = 1_500  # atlasprep.testing.small_census's default, which conftest's fixture builds

# The Census obs columns, in order, written out here rather than taken from _schema
OBS_COLUMNS = [
    "soma_joinid",
    "dataset_id",
    "assay",
    "assay_ontology_term_id",
    "cell_type",
    "cell_type_ontology_term_id",
    "development_stage",
    "development_stage_ontology_term_id",
    "disease",
    "disease_ontology_term_id",
    "donor_id",
    "is_primary_data",
    "observation_joinid",
    "self_reported_ethnicity",
    "self_reported_ethnicity_ontology_term_id",
    "sex",
    "sex_ontology_term_id",
    "suspension_type",
    "tissue",
    "tissue_ontology_term_id",
    "tissue_type",
    "tissue_general",
    "tissue_general_ontology_term_id",
    "raw_sum",
    "nnz",
    "raw_mean_nnz",
    "raw_variance_nnz",
    "n_measured_vars",
]
NUMERIC = {
    "soma_joinid": pa.int64(),
    "is_primary_data": pa.bool_(),
    "observation_joinid": pa.large_string(),
    "raw_sum": pa.float64(),
    "nnz": pa.int64(),
    "raw_mean_nnz": pa.float64(),
    "raw_variance_nnz": pa.float64(),
    "n_measured_vars": pa.int64(),
}
TERM_PREFIXES = {
    "assay_ontology_term_id": ("EFO",),
    "cell_type_ontology_term_id": ("CL",),
    "development_stage_ontology_term_id": ("HsapDv",),
    "disease_ontology_term_id": ("PATO", "MONDO"),
    "self_reported_ethnicity_ontology_term_id": ("HANCESTRO",),
    "sex_ontology_term_id": ("PATO",),
    "tissue_ontology_term_id": ("UBERON",),
    "tissue_general_ontology_term_id": ("UBERON",),
}


def _obs(store: Path) -> pd.DataFrame:
    with soma.open(str(store / "census_data" / "homo_sapiens" / "obs")) as obs:
        return obs.read().concat().to_pandas().set_index("soma_joinid", drop=False).sort_index()


def _X(store: Path) -> sp.csr_matrix:
    with soma.open(str(store / "census_data" / "homo_sapiens" / "ms" / "RNA" / "X" / "raw")) as X:
        return X.read().coos().concat().to_scipy().tocsr()


def _var(store: Path) -> pd.DataFrame:
    with soma.open(str(store / "census_data" / "homo_sapiens" / "ms" / "RNA" / "var")) as var:
        return var.read().concat().to_pandas().sort_values("soma_joinid").reset_index(drop=True)


def _info(store: Path, name: str) -> pd.DataFrame:
    with soma.open(str(store / "census_info" / name)) as frame:
        return frame.read().concat().to_pandas()


@pytest.fixture(scope="session")
def obs(small_census) -> pd.DataFrame:
    return _obs(small_census)


@pytest.fixture(scope="session")
def X(small_census) -> sp.csr_matrix:
    return _X(small_census)


@pytest.fixture(scope="session")
def var(small_census) -> pd.DataFrame:
    return _var(small_census)


@pytest.fixture(scope="session")
def multi_batch(tmp_path_factory) -> Path:
    """3,000 cells written 1,024 at a time (rounded up to X tile rows of 2,048): two batches whose
    categories differ, so the second write must extend the enumerations."""
    return build_census(tmp_path_factory.mktemp("multi") / "census", n_cells=3_000, batch_size=1_024)


def _get_anndata(store: Path, value_filter: str):
    with cellxgene_census.open_soma(uri=str(store)) as census:
        return cellxgene_census.get_anndata(census, "Homo sapiens", obs_value_filter=value_filter)


# -- layout and types --------------------------------------------------------------------------
def test_obs_and_var_have_the_census_schema(small_census, obs):
    cat = catalog()
    with soma.open(str(small_census / "census_data" / "homo_sapiens" / "obs")) as frame:
        schema = frame.schema
    assert schema.names == OBS_COLUMNS == [f.name for f in OBS_FIELDS]
    declared = arrow_schema(OBS_FIELDS, {n: len(c.vocabulary) for n, c in cat.columns.items()})
    assert [(f.name, f.type) for f in schema] == [(f.name, f.type) for f in declared]
    for field in schema:
        if field.name in NUMERIC:
            assert field.type == NUMERIC[field.name], field.name
        else:  # Census categoricals: large_string dictionaries, int8 indices for these few values
            assert field.type == pa.dictionary(pa.int8(), pa.large_string()), field.name
    with soma.open(str(small_census / "census_data" / "homo_sapiens" / "ms" / "RNA" / "var")) as frame:
        assert [(f.name, f.type) for f in frame.schema] == [
            (f.name, f.type) for f in arrow_schema(VAR_FIELDS)
        ]
    assert frame.schema.names == [
        "soma_joinid",
        "feature_id",
        "feature_name",
        "feature_type",
        "feature_length",
        "nnz",
        "n_measured_obs",
    ]
    assert len(obs) == N_CELLS
    assert obs.index.tolist() == list(range(N_CELLS))


def test_census_tree(small_census, var):
    with soma.open(str(small_census)) as census:
        assert set(census) == {"census_info", "census_data"}
        assert set(census["census_info"]) == {"summary", "datasets", "summary_cell_counts", "organisms"}
        experiment = census["census_data"]["homo_sapiens"]
        assert isinstance(experiment, soma.Experiment)
        rna = experiment.ms["RNA"]
        assert isinstance(rna, soma.Measurement)
        raw = rna.X["raw"]
        assert isinstance(raw, soma.SparseNDArray)
        assert raw.schema.field("soma_data").type == pa.float32()
        assert raw.shape == (N_CELLS, len(var))
        presence = rna["feature_dataset_presence_matrix"]
        assert presence.schema.field("soma_data").type == pa.bool_()
        assert presence.shape == (len(_info(small_census, "datasets")), len(var))
    assert list(_info(small_census, "datasets").columns) == [
        "soma_joinid",
        "citation",
        "collection_id",
        "collection_name",
        "collection_doi",
        "collection_doi_label",
        "dataset_id",
        "dataset_version_id",
        "dataset_title",
        "dataset_h5ad_path",
        "dataset_total_cell_count",
    ]
    assert list(_info(small_census, "summary_cell_counts").columns) == [
        "soma_joinid",
        "organism",
        "category",
        "label",
        "ontology_term_id",
        "total_cell_count",
        "unique_cell_count",
    ]


def test_var_genes(var):
    assert var["feature_id"].is_unique
    assert var["feature_id"].str.fullmatch(r"ENSG\d{11}").all()
    assert (var["feature_type"] == "gene").all()
    assert (var["feature_length"] > 0).all()
    assert 20_000 <= len(var) <= 22_000
    markers = [
        "PTPRC",
        "CD3E",
        "CD4",
        "CD8A",
        "MS4A1",
        "CD14",
        "FCGR3A",
        "NKG7",
        "GNLY",
        "LYZ",
        "SFTPC",
        "SFTPB",
        "AGER",
        "SCGB1A1",
        "FOXJ1",
        "MARCO",
        "ALB",
        "APOA1",
        "CYP3A4",
        "CD5L",
        "DCN",
        "LRAT",
        "PECAM1",
        "VWF",
        "NPHS1",
        "NPHS2",
        "LRP2",
        "SLC34A1",
        "UMOD",
        "SLC17A7",
        "GAD1",
        "GAD2",
        "GFAP",
        "AQP4",
        "MBP",
        "PLP1",
        "CX3CR1",
        "P2RY12",
        "MT-CO1",
        "MALAT1",
        "ACTB",
        "GAPDH",
        "XIST",
    ]
    assert set(markers) <= set(var["feature_name"])


def test_x_holds_positive_integer_counts_that_obs_and_var_summarise(obs, X, var):
    assert X.dtype == np.float32
    assert X.shape == (N_CELLS, len(var))
    assert (X.data > 0).all()
    assert np.array_equal(X.data, np.round(X.data))
    nnz = np.diff(X.indptr)
    assert (nnz >= 1).all()  # every cell has a count, as the schema requires
    assert np.array_equal(obs["nnz"].to_numpy(), nnz)
    assert np.allclose(obs["raw_sum"].to_numpy(), np.asarray(X.sum(axis=1)).ravel())
    assert np.allclose(obs["raw_mean_nnz"], obs["raw_sum"] / obs["nnz"])
    row = int(np.argmax(nnz))
    assert obs["raw_variance_nnz"].iloc[row] == pytest.approx(np.var(X[row].data, ddof=1))
    assert np.array_equal(var["nnz"].to_numpy(), np.bincount(X.indices, minlength=X.shape[1]))
    sparsity = 1 - X.nnz / (X.shape[0] * X.shape[1])
    assert 0.85 <= sparsity <= 0.99


# -- the reference reader and the categorical trap ---------------------------------------------
def test_get_anndata_returns_the_cells_a_pandas_filter_selects(small_census, obs, X):
    adata = _get_anndata(small_census, "tissue_general == 'lung' and is_primary_data == True")
    expected = obs.index[(obs["tissue_general"] == "lung") & obs["is_primary_data"]]
    ids = adata.obs["soma_joinid"].to_numpy()
    assert len(expected) > 100
    assert len(ids) == len(set(ids)) == len(expected)
    assert set(ids) == set(expected)
    assert (X[ids] != adata.X).nnz == 0
    assert adata.var["feature_id"].tolist() == _var(small_census)["feature_id"].tolist()


@pytest.mark.parametrize("fixture", ["small_census", "multi_batch"])
def test_filters_on_categorical_columns_match(request, fixture):
    store = request.getfixturevalue(fixture)
    obs = _obs(store)
    immune = sorted(get_parser().get_term_descendants("CL:0000738", include_self=True))
    cases = {
        "tissue_general == 'lung'": obs["tissue_general"] == "lung",
        f"cell_type_ontology_term_id in {immune!r}": obs["cell_type_ontology_term_id"].isin(immune),
        'assay == "10x 3\' v3"': obs["assay"] == "10x 3' v3",
        "disease == \"Crohn's colitis\" and sex == 'female'": (obs["disease"] == "Crohn's colitis")
        & (obs["sex"] == "female"),
        "suspension_type == 'nucleus'": obs["suspension_type"] == "nucleus",
    }
    with soma.open(str(store / "census_data" / "homo_sapiens" / "obs")) as frame:
        for value_filter, mask in cases.items():
            got = frame.read(column_names=["soma_joinid"], value_filter=value_filter).concat()
            assert 0 < len(got) < len(obs), value_filter
            assert set(got["soma_joinid"].to_pylist()) == set(obs.index[mask]), value_filter
        # every value of every categorical column, not only the few above
        for column in catalog().columns:
            values = frame.get_enumeration_values([column])[column].to_pylist()
            assert set(values) == set(obs[column].astype(str)), column
            for value in values:
                got = frame.read(column_names=["soma_joinid"], value_filter=f"{column} == {value!r}").concat()
                assert len(got) == int((obs[column] == value).sum()), (column, value)
    adata = _get_anndata(store, f"cell_type_ontology_term_id in {immune!r} and tissue_general == 'lung'")
    expected = obs.index[obs["cell_type_ontology_term_id"].isin(immune) & (obs["tissue_general"] == "lung")]
    assert set(adata.obs["soma_joinid"]) == set(expected)
    assert adata.obs["cell_type"].nunique() > 1


def test_multi_batch_build_extends_categories_and_equals_a_one_batch_build(multi_batch, tmp_path):
    # Each enumeration extension is a schema version; two with one timestamp make readers pick
    # either, the stale one half the time (tiledbsoma 2.3 writes all batches of one handle at
    # its open timestamp). The reads below would then fail only sometimes: check the cause too.
    schemas = [
        p.name for p in (multi_batch / "census_data" / "homo_sapiens" / "obs" / "__schema").glob("__*_*")
    ]
    timestamps = [name.split("_")[2] for name in schemas]
    assert len(schemas) == 3  # created, batch 1, batch 2
    assert len(set(timestamps)) == len(timestamps)
    obs = _obs(multi_batch)
    first, second = obs.iloc[:X_TILE_EXTENT], obs.iloc[X_TILE_EXTENT:]  # the two batches
    assert not set(second["dataset_id"]) <= set(first["dataset_id"])  # new categories in batch two
    assert not set(second["tissue"]) <= set(first["tissue"])
    one_batch = build_census(tmp_path / "one", n_cells=3_000, batch_size=10_000)
    # same values; the categories' order (first appearance, batch by batch) may differ
    pd.testing.assert_frame_equal(_obs(one_batch), obs, check_categorical=False)
    assert (_X(one_batch) != _X(multi_batch)).nnz == 0


# -- determinism -----------------------------------------------------------------------------------
def test_same_seed_same_atlas_other_seed_other_cells(small_census, obs, X, tmp_path):
    again = build_small_census(tmp_path / "again")  # the testing helper, as conftest uses it
    pd.testing.assert_frame_equal(_obs(again), obs)
    assert (_X(again) != X).nnz == 0
    other = build_census(tmp_path / "other", n_cells=N_CELLS, seed=1)
    other_obs = _obs(other)
    assert not other_obs["cell_type"].equals(obs["cell_type"])
    assert not other_obs["observation_joinid"].equals(obs["observation_joinid"])
    assert (_X(other) != X).nnz > 0
    assert other_obs["dataset_id"].equals(obs["dataset_id"])  # same layout, other cells


def test_the_generator_gives_the_pinned_counts(X):
    """The counts are the versioned atlas's (the cache keys the demo atlas by its version): a
    change to the generator that moves a count must come with a new version. (numpy's Generator
    distributions are part of it: a numpy that changed them fails here too.)"""
    coo = X.tocoo()
    order = np.lexsort((coo.col, coo.row))
    digest = hashlib.sha256()
    for part in (coo.row[order].astype(np.int64), coo.col[order].astype(np.int64), coo.data[order]):
        digest.update(np.ascontiguousarray(part).tobytes())
    assert (X.nnz, digest.hexdigest()[:16]) == PINNED_COUNTS


PINNED_COUNTS = (2_544_990, "a737f6e235711f96")


# -- content ---------------------------------------------------------------------------------------
def test_every_term_is_valid_current_and_from_the_right_ontology(obs):
    parser = get_parser()
    spec_terms = catalog().term_ids()
    stored = {t for column in TERM_PREFIXES for v in obs[column].unique() for t in v.split(" || ")} - {
        "unknown"
    }
    assert stored <= spec_terms
    for column, prefixes in TERM_PREFIXES.items():
        for value in catalog().columns[column].vocabulary:
            for term in value.split(" || "):
                if term == "unknown":
                    continue
                assert term.split(":")[0] in prefixes, (column, term)
                assert parser.is_valid_term_id(term), term
                assert not parser.is_term_deprecated(term), term
    for column in TERM_PREFIXES:
        label_column = column.removesuffix("_ontology_term_id")
        pairs = obs[[column, label_column]].astype(str).drop_duplicates()
        for term, label in pairs.itertuples(index=False):
            if term != "unknown":
                expected = " || ".join(parser.get_term_label(t) for t in term.split(" || "))
                assert label == expected, term
    assert obs.loc[obs["disease_ontology_term_id"] == "MONDO:0005532", "disease"].iloc[0] == "Crohn's colitis"
    assert (obs["tissue_type"] == "tissue").all()


def test_tissues_assays_and_cell_types_span_the_atlas(obs):
    parser = get_parser()
    primary = obs[obs["is_primary_data"]]
    assert {"lung", "liver", "kidney", "blood", "brain"} <= set(primary["tissue_general"])
    assert primary["tissue_general"].value_counts().min() >= 40
    lung_terms = set(parser.get_term_descendants("UBERON:0002048", include_self=True))
    lung = set(primary.loc[primary["tissue_general"] == "lung", "tissue_ontology_term_id"])
    assert "UBERON:0002048" in lung
    assert len(lung & lung_terms) > 1  # sub-terms make descendant expansion matter
    assert {"EFO:0009922", "EFO:0009899", "EFO:0009900", "EFO:0008931"} <= set(obs["assay_ontology_term_id"])
    assert set(obs["suspension_type"]) == {"cell", "nucleus"}
    immune = set(parser.get_term_descendants("CL:0000738", include_self=True))
    tissues_with_immune = set(
        primary.loc[primary["cell_type_ontology_term_id"].isin(immune), "tissue_general"]
    )
    assert len(tissues_with_immune) >= 5
    assert {"PATO:0000461", "MONDO:0100096", "MONDO:0004975"} <= set(obs["disease_ontology_term_id"])
    assert set(obs["sex_ontology_term_id"]) == {"PATO:0000383", "PATO:0000384"}
    assert obs.groupby("donor_id", observed=True)["sex"].nunique().max() == 1


def test_depth_and_sparsity_look_like_the_census(obs):
    depth = (
        obs[obs["is_primary_data"]].groupby(["assay", "suspension_type"], observed=True)["raw_sum"].median()
    )
    assert 4_000 <= depth[("10x 3' v3", "cell")] <= 6_000
    assert 2_000 <= depth[("10x 3' v2", "cell")] <= 3_000
    assert depth[("10x 3' v3", "nucleus")] < depth[("10x 3' v3", "cell")]
    assert depth[("Smart-seq2", "cell")] > 5 * depth[("10x 3' v3", "cell")]
    genes = obs.groupby("assay", observed=True)["nnz"].median()
    assert genes["Smart-seq2"] > 2 * genes["10x 3' v3"]
    assert 1_000 <= genes["10x 3' v3"] <= 3_000


def test_markers_mark_their_cells(obs, X, var):
    name_to_col = {n: i for i, n in reversed(list(enumerate(var["feature_name"])))}

    def mean(gene: str, mask: pd.Series) -> float:
        return float(X[np.flatnonzero(mask.to_numpy()), name_to_col[gene]].mean())

    ct = obs["cell_type"]
    assert mean("SFTPC", ct == "pulmonary alveolar type 2 cell") > 20 * mean(
        "SFTPC", ct != "pulmonary alveolar type 2 cell"
    )
    assert mean("ALB", ct == "hepatocyte") > 20 * mean("ALB", ct != "hepatocyte")
    immune = obs["cell_type_ontology_term_id"].isin(
        get_parser().get_term_descendants("CL:0000738", include_self=True)
    )
    assert mean("PTPRC", immune) > 5 * mean("PTPRC", ~immune)
    assert mean("XIST", obs["sex"] == "male") == 0 < mean("XIST", obs["sex"] == "female")
    nuclei = obs["suspension_type"] == "nucleus"
    assert mean("MT-CO1", nuclei) < 0.2 * mean("MT-CO1", ~nuclei)


def test_non_primary_cells_duplicate_primary_ones(small_census, obs, X):
    datasets = _info(small_census, "datasets").set_index("dataset_id")
    duplicates = obs[~obs["is_primary_data"]]
    assert 0 < len(duplicates) < 0.1 * len(obs)
    assert duplicates["dataset_id"].nunique() == 1
    assert datasets.loc[duplicates["dataset_id"].iloc[0], "dataset_title"].startswith("Integrated")
    primary = obs[obs["is_primary_data"]].reset_index(drop=True).set_index("observation_joinid")
    assert primary.index.is_unique
    assert obs["observation_joinid"].str.len().eq(10).all()
    originals = primary.loc[duplicates["observation_joinid"]]
    for column in ("cell_type", "tissue", "donor_id", "assay", "raw_sum", "nnz", "n_measured_vars"):
        assert np.array_equal(originals[column].astype(str), duplicates[column].astype(str)), column
    assert (X[duplicates.index.to_numpy()] != X[originals["soma_joinid"].to_numpy()]).nnz == 0
    for dataset_id, n in originals["dataset_id"].value_counts().items():  # ~12% of each source dataset
        if n:
            assert 0.05 < n / (obs["dataset_id"] == dataset_id).sum() < 0.2


def test_census_info_agrees_with_obs(small_census, obs):
    summary = dict(_info(small_census, "summary")[["label", "value"]].itertuples(index=False))
    assert summary["census_schema_version"] == "2.4.0"
    assert summary["dataset_schema_version"] == "7.0.0"
    assert summary["census_build_date"] == DEMO_VERSION
    assert int(summary["total_cell_count"]) == len(obs)
    assert int(summary["unique_cell_count"]) == obs["is_primary_data"].sum() < len(obs)
    assert int(summary["number_donors_homo_sapiens"]) == obs["donor_id"].nunique()
    datasets = _info(small_census, "datasets").set_index("dataset_id")
    counts = obs["dataset_id"].astype(str).value_counts()
    assert datasets["dataset_total_cell_count"].to_dict() == counts.to_dict()
    assert len(datasets) >= 7
    cells = _info(small_census, "summary_cell_counts")
    assert set(cells["organism"]) == {"homo_sapiens"}
    for category, group in cells.groupby("category", observed=True):
        if category == "all":
            assert group[["total_cell_count", "unique_cell_count"]].values.tolist() == [
                [len(obs), obs["is_primary_data"].sum()]
            ]
            continue
        key = category if category == "suspension_type" else f"{category}_ontology_term_id"
        expected = obs.groupby(obs[key].astype(str))["is_primary_data"].agg(["size", "sum"])
        got = group.set_index("ontology_term_id" if key != category else "label")
        assert got["total_cell_count"].to_dict() == expected["size"].to_dict(), category
        assert got["unique_cell_count"].to_dict() == expected["sum"].to_dict(), category
    organisms = _info(small_census, "organisms")
    assert organisms[["organism_ontology_term_id", "organism_label", "organism"]].values.tolist() == [
        ["NCBITaxon:9606", "Homo sapiens", "homo_sapiens"]
    ]


def test_year_stage_terms():
    parser = get_parser()
    for years, term in _datasets._Y.items():
        assert parser.get_term_label(term) == f"{years}-year-old stage"


def test_a_cell_that_draws_no_counts_gets_one(monkeypatch):
    plan = plan_cells(catalog(), 600, 0)
    model = expression_model()
    monkeypatch.setattr(_expression, "_MIN_DEPTH", 0.0)
    starved = dataclasses.replace(model, median=np.full_like(model.median, 1e-9))
    counts = CountsGenerator(plan, starved).tile_row(0)
    assert np.array_equal(np.bincount(counts.rows), np.ones(600))
    rows = plan.rows(0, 600)
    expected = model.fallback[model.combo[rows.donor, rows.cell_type]]
    assert np.array_equal(counts.cols[np.argsort(counts.rows)], expected)
    assert (counts.data == 1).all()
    order = np.lexsort((counts.cols, counts.rows, counts.cols // X_TILE_EXTENT))
    assert np.array_equal(order, np.arange(600))  # still TileDB's global order


# -- building ----------------------------------------------------------------------------------
def test_build_refuses_an_existing_path_and_leaves_nothing_when_it_fails(small_census, tmp_path):
    with pytest.raises(OutputExistsError):
        build_census(small_census, n_cells=N_CELLS)
    with pytest.raises(FileExistsError):  # the builtin a caller may already catch
        build_census(small_census)
    with pytest.raises(UsageError, match="at least"):
        build_census(tmp_path / "tiny", n_cells=10)

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_census(tmp_path / "broken", n_cells=600, progress=interrupt)
    assert list(tmp_path.iterdir()) == []


def test_progress_reaches_the_total(tmp_path):
    seen: list[tuple[int, int]] = []
    build_census(tmp_path / "c", n_cells=5_000, batch_size=2_048, progress=lambda d, t: seen.append((d, t)))
    assert [d for d, _ in seen] == [2_048, 4_096, 5_000]
    assert {t for _, t in seen} == {5_000}


def test_demo_census_uri_builds_once_in_the_cache(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ATLASPREP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(demo_build, "DEMO_N_CELLS", 600)  # the shipped size takes ~10 s
    builds: list[Path] = []
    real_build = demo_build.build_census

    def counting_build(uri, **kwargs):
        builds.append(Path(uri))
        return real_build(uri, **kwargs)

    monkeypatch.setattr(demo_build, "build_census", counting_build)
    (tmp_path / "cache").mkdir()
    stale = tmp_path / "cache" / f"demo-census-{DEMO_VERSION}.tmp-424242"
    (stale / "junk").mkdir(parents=True)

    results: list[Path] = []
    with caplog.at_level(logging.INFO, logger="atlasprep.demo"):
        threads = [threading.Thread(target=lambda: results.append(demo_census_uri())) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    expected = tmp_path / "cache" / f"demo-census-{DEMO_VERSION}"
    assert results == [expected, expected]
    assert builds == [expected]  # the second caller waited on the lock and found it built
    assert not stale.exists()
    assert "building the demo atlas" in caplog.text
    assert demo_census_uri() == expected
    assert len(builds) == 1
    with cellxgene_census.open_soma(uri=str(expected)) as census:
        assert census["census_data"]["homo_sapiens"].obs.count == 600


def test_public_api():
    assert set(atlasprep.demo.__all__) >= {"DEMO_N_CELLS", "DEMO_VERSION", "build_census", "demo_census_uri"}
    assert atlasprep.demo.DEMO_N_CELLS >= 20_000
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}\.\d+", DEMO_VERSION)
