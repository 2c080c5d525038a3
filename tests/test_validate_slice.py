"""`validate_anndata` and the ASCT+B check, on the CELLxGENE fixtures and edited copies of them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import shared_file

from atlasprep.errors import InputFormatError, SourceError, UsageError
from atlasprep.harmonize import (
    HCA_OBS,
    HCA_UNS,
    Problem,
    ValidationReport,
    check_cell_types,
    load_asctb,
    validate_anndata,
)
from atlasprep.harmonize import validate as validate_module
from atlasprep.ontology import SCHEMA_VERSION, ontology_versions

INVALID = "cellxgene/example_invalid_CL.h5ad"
VALID = "cellxgene/example_valid.h5ad"
HEART = "hra/ASCT-B_VH_Heart.csv"
PLANTED = {0, 1, 2, 3, 4, 5, 10}  # data/README.md: the 7 deliberately invalid rows
LV, RV = "UBERON:0002084", "UBERON:0002080"


def _find(found: tuple[Problem, ...], column: str, phrase: str) -> Problem:
    hits = [p for p in found if p.column == column and phrase in p.what]
    assert len(hits) == 1, f"{column} / {phrase!r}: {hits or found}"
    return hits[0]


@pytest.fixture(scope="module")
def invalid_report() -> ValidationReport:
    return validate_anndata(shared_file(INVALID))


@pytest.fixture(scope="module")
def invalid_obs() -> pd.DataFrame:
    return ad.read_h5ad(shared_file(INVALID)).obs


# (column, phrase in `what`, n_cells, examples) of every problem the invalid fixture must give
INVALID_PROBLEMS = [
    # row-level defects (rows 0, 1, 2, 5, 10)
    ("assay_ontology_term_id", "not an ontology term ID", 1, {"EFO:0009922 (sci-plex)"}),
    ("cell_type_ontology_term_id", "wrong ontology", 1, {"PATO:0000461"}),
    ("cell_type_ontology_term_id", "not a term of CL", 1, {"CL:12312"}),
    (
        "development_stage_ontology_term_id",
        "HsapDv terms below HsapDv:0000001",
        2,
        {"MmusDv:0000003", "UBERON:0018241"},
    ),
    ("ethnicity_ontology_term_id", "HANCESTRO:0601", 2, {"na"}),
    ("ethnicity_ontology_term_id", "deprecated in HANCESTRO", 1, {"HANCESTRO:0575"}),
    ("tissue_type", "not one of tissue, organoid, primary cell culture, cell line", 2, {"cell culture"}),
    (
        "tissue_ontology_term_id",
        "tissue_type 'cell culture' is no schema value",
        2,
        {"CL:0000057", "CL:0000066"},
    ),
    ("organism_ontology_term_id", "one organism per dataset", 2, {"NCBITaxon:10090", "NCBITaxon:9483"}),
    # dataset-level defects under schema 7
    ("uns['organism_ontology_term_id']", "required key is missing", 320, set()),
    ("self_reported_ethnicity_ontology_term_id", "the deprecated ethnicity_ontology_term_id", 320, set()),
    ("donor_id", "required column is missing", 320, set()),
    ("suspension_type", "required column is missing", 320, set()),
    # what CELLxGENE rejects outright: deprecated and reserved fields
    ("organism_ontology_term_id", "deprecated obs column", 320, set()),
    ("ethnicity_ontology_term_id", "deprecated obs column", 320, set()),
    ("uns['X_normalization']", "deprecated key", 320, set()),
    ("var['feature_biotype']", "reserved column", 320, set()),
    ("raw.var['feature_biotype']", "reserved column", 320, set()),
]


def test_invalid_fixture_finds_every_planted_defect(invalid_report, invalid_obs):
    report = invalid_report
    assert not report.ok
    assert (report.n_cells, report.n_genes) == (320, 136)
    for column, phrase, n_cells, examples in INVALID_PROBLEMS:
        problem = _find(report.problems, column, phrase)
        assert problem.n_cells == n_cells, problem
        assert set(problem.examples) == examples, problem
        if examples and column in invalid_obs:  # the cells carrying those values are planted rows only
            rows = np.flatnonzero(invalid_obs[column].astype(str).isin(examples))
            assert len(rows) == n_cells, (problem, rows)
            assert set(rows) <= PLANTED, (problem, rows)
    # the gene that is not in GENCODE v48, counted over the cells that express it
    gene = _find(report.problems, "var_names", "not in GENCODE v48")
    raw = ad.read_h5ad(shared_file(INVALID)).raw
    expressing = int((raw[:, "ENSG00000285106"].X.toarray() != 0).sum())
    assert (gene.examples, gene.n_cells) == (("ENSG00000285106",), expressing)
    assert len(report.problems) == len(INVALID_PROBLEMS) + 1  # nothing else


def test_invalid_fixture_leaves_valid_outliers_and_clean_rows_alone(invalid_report):
    # rows 3 and 4 (brain organoid, kidney) hold valid terms; ERCC-00002 is an allowed spike-in
    flagged = {e for p in invalid_report.problems for e in p.examples}
    assert flagged.isdisjoint({"UBERON:0000955", "UBERON:0002113", "organoid", "ERCC-00002"})


def test_invalid_fixture_warnings(invalid_report):
    found = invalid_report.warnings
    zeros = _find(found, "raw.X", "explicit zeros")
    assert (zeros.examples, zeros.n_cells) == (("ERCC-00002",), 320)
    assert len(found) == 1  # deprecated and reserved fields are problems: CELLxGENE rejects them


def test_valid_fixture_passes():
    report = validate_anndata(shared_file(VALID))
    assert report.ok
    assert report.problems == ()
    assert (report.n_cells, report.n_genes, report.profile) == (2, 7, "cellxgene")
    assert report.schema_version == SCHEMA_VERSION == "7.1.0"
    assert report.ontology_versions == ontology_versions()
    assert "CL" in report.ontology_versions
    assert report.references == {"genes": "GENCODE v48"}
    record = json.loads(json.dumps(report.to_json()))
    assert record["ok"] is True
    assert record["problems"] == []
    assert record["path"].endswith("example_valid.h5ad")


# --- edited copies of example_valid ---


def _valid_copy(tmp_path: Path, edit: Callable[[ad.AnnData], None], name: str = "edited.h5ad") -> Path:
    adata = ad.read_h5ad(shared_file(VALID))
    edit(adata)
    out = tmp_path / name
    adata.write_h5ad(out)
    return out


def _set_obs(**columns: list[object]) -> Callable[[ad.AnnData], None]:
    def edit(adata: ad.AnnData) -> None:
        for column, values in columns.items():
            adata.obs[column] = pd.Categorical(values) if isinstance(values[0], str) else values

    return edit


OBS_CASES = {
    "label differs from its ID": (
        {"cell_type": ["epithelial cell", "T cell"]},
        [
            ("cell_type", "differs from the label of cell_type_ontology_term_id", 1),
            ("cell_type", "reserved obs column", 2),
        ],
    ),
    "several diseases unsorted": (
        {"disease_ontology_term_id": ["MONDO:0005015 || MONDO:0100096", "MONDO:0100096 || MONDO:0005015"]},
        [("disease_ontology_term_id", "sorted", 1)],
    ),
    "several diseases, not all MONDO": (
        {"disease_ontology_term_id": ["MONDO:0100096 || PATO:0000461", "MONDO:0100096"]},
        [("disease_ontology_term_id", "only MONDO terms may be joined", 1)],
    ),
    "suspension type the assay rules out": (
        {"suspension_type": ["na", "nucleus"]},
        [("suspension_type", "not allowed for assay EFO:0009899", 1)],
    ),
    "forbidden cell type": (
        {"cell_type_ontology_term_id": ["CL:0000255", "CL:0000066"]},
        [("cell_type_ontology_term_id", "forbids", 1)],
    ),
    "sex 'na' outside cell lines": (
        {"sex_ontology_term_id": ["na", "PATO:0000383"]},
        [("sex_ontology_term_id", "not an ontology term ID", 1)],
    ),
    "blank values": (
        {"donor_id": ["donor_1", " "]},
        [("donor_id", "has no value", 1)],
    ),
    "missing values": (
        {"sex_ontology_term_id": ["PATO:0000383", None]},
        [("sex_ontology_term_id", "has no value", 1)],
    ),
    "is_primary_data not boolean": (
        {"is_primary_data": ["yes", "no"]},
        [("is_primary_data", "must be boolean", 2)],
    ),
    "is_primary_data a categorical of booleans": (
        {"is_primary_data": pd.Categorical([True, True])},
        [("is_primary_data", "must be boolean, not category", 2)],
    ),
    "donor_id with integer categories": (
        {"donor_id": pd.Categorical([1, 1])},
        [("donor_id", "its categories must be strings, not int64", 2)],
    ),
    "a cell line is valid with its own rules": (
        {
            "tissue_type": ["cell line", "tissue"],
            "tissue_ontology_term_id": ["CVCL_0030", "UBERON:0002048"],
            "cell_type_ontology_term_id": ["na", "CL:0000066"],
            "sex_ontology_term_id": ["na", "PATO:0000383"],
            "development_stage_ontology_term_id": ["na", "HsapDv:0000003"],
            "self_reported_ethnicity_ontology_term_id": ["na", "HANCESTRO:0019"],
            "donor_id": ["na", "donor_1"],
        },
        [],
    ),
}


@pytest.mark.parametrize(("columns", "expected"), OBS_CASES.values(), ids=OBS_CASES.keys())
def test_obs_rules(tmp_path, columns, expected):
    report = validate_anndata(_valid_copy(tmp_path, _set_obs(**columns)))
    assert len(report.problems) == len(expected), report.problems
    for column, phrase, n_cells in expected:
        assert _find(report.problems, column, phrase).n_cells == n_cells


def test_organism_drives_stage_ethnicity_and_genes(tmp_path):
    def mouse(adata: ad.AnnData) -> None:
        adata.uns["organism_ontology_term_id"] = "NCBITaxon:10090"

    report = validate_anndata(_valid_copy(tmp_path, mouse))
    assert _find(report.problems, "development_stage_ontology_term_id", "MmusDv").n_cells == 2
    assert _find(report.problems, "self_reported_ethnicity_ontology_term_id", "'na'").n_cells == 2
    genes = _find(report.problems, "var_names", "are not Mus musculus's (ENSMUSG")
    assert genes.what.startswith("7 Ensembl IDs")
    assert genes.n_cells == 2
    assert report.references == {"genes": "GENCODE vM37"}
    assert len(report.problems) == 3


def test_h5ad_from_an_old_anndata(tmp_path):
    path = _valid_copy(tmp_path, lambda adata: None)
    with h5py.File(path, "r+") as f:  # cellxgene-schema refuses files without the 0.8 encoding
        del f.attrs["encoding-version"]
    problem = _find(validate_anndata(path).problems, "h5ad", "encoding-version")
    assert problem.n_cells == 2


def test_repeated_obs_names(tmp_path):
    path = _valid_copy(tmp_path, lambda adata: None)
    with h5py.File(path, "r+") as f:  # anndata refuses to write them, files from elsewhere have them
        f["obs"][f["obs"].attrs["_index"]][...] = np.array([b"same", b"same"])
    problem = _find(validate_anndata(path).problems, "obs_names", "repeat")
    assert (problem.n_cells, problem.examples) == (2, ("same",))


# --- counts, streamed ---


def _counts_slice(tmp_path: Path, layout: str) -> Path:
    """Five cells like example_valid's first; X holds the counts: cell0 0.5, cell1 -2, cell2 empty."""
    src = ad.read_h5ad(shared_file(VALID))
    counts = np.tile(np.arange(1, 8, dtype=np.float32), (5, 1))
    counts[0, 3], counts[1, 5], counts[2], counts[4] = 0.5, -2, 0, counts[4] * 2  # no two cells alike
    obs = src.obs.iloc[np.zeros(5, dtype=int)].copy()
    obs.index = [f"cell{i}" for i in range(5)]
    matrix = {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "dense": np.asarray}[layout.split("-")[0]](counts)
    adata = ad.AnnData(
        X=matrix, obs=obs, var=src.var.copy(), uns=dict(src.uns), obsm={"X_umap": np.ones((5, 2))}
    )
    if layout.endswith("zarr"):
        with ad.settings.override(zarr_write_format=3, auto_shard_zarr_v3=False):
            adata.write_zarr(tmp_path / "counts.zarr")
        return tmp_path / "counts.zarr"
    adata.write_h5ad(tmp_path / "counts.h5ad")
    return tmp_path / "counts.h5ad"


@pytest.mark.parametrize("layout", ["csr", "csc", "dense", "csr-zarr", "dense-zarr"])
def test_counts_checked_slice_by_slice(tmp_path, monkeypatch, layout):
    monkeypatch.setattr(validate_module, "_CHUNK_VALUES", 3)  # many reads, slices cut through rows
    report = validate_anndata(_counts_slice(tmp_path, layout))
    non_integer = _find(report.problems, "X", "non-integer")
    assert (non_integer.n_cells, non_integer.examples) == (1, ("cell0",))
    assert "no raw.X" in non_integer.what
    assert _find(report.problems, "X", "negative").examples == ("cell1",)
    assert _find(report.problems, "X", "without a single nonzero count").examples == ("cell2",)
    assert len(report.problems) == 3 + (layout == "csc")
    assert any("stored CSC" in p.what for p in report.problems) == (layout == "csc")


# --- HCA Tier 1 ---


def _tier1(adata: ad.AnnData, **override: str) -> None:
    values = {
        "sample_id": "s1",
        "library_id": "l1",
        "institute": "Sanger",
        "library_preparation_batch": "b1",
        "library_sequencing_run": "r1",
        "alignment_software": "cellranger 7.1.0",
        "manner_of_death": "not applicable",
        "sample_source": "surgical donor",
        "sample_collection_method": "biopsy",
        "sampled_site_condition": "healthy",
        "sample_preservation_method": "fresh",
        "sequenced_fragment": "3 prime tag",
        "reference_genome": "GRCh38",
        "cell_enrichment": "CL:0000236+,CL:0000084-",
        "gene_annotation_version": "v110",
        "organism_ontology_term_id": "NCBITaxon:9606",
    } | override
    for column, value in values.items():
        adata.obs[column] = pd.Categorical([value] * adata.n_obs)
    adata.uns |= {"study_pi": ["Doe,Jane"], "description": "a test", "contact_email": "jane@example.org"}


def test_hca_profile_requires_tier1_fields(tmp_path):
    report = validate_anndata(shared_file(VALID), profile="hca")
    missing = {p.column for p in report.problems}
    assert missing == {*HCA_OBS, "organism_ontology_term_id", *(f"uns['{k}']" for k in HCA_UNS)}
    assert all(p.n_cells == 2 for p in report.problems)
    assert validate_anndata(shared_file(VALID)).ok  # the CELLxGENE profile does not ask for them


def test_hca_profile_passes_with_tier1_fields(tmp_path):
    report = validate_anndata(_valid_copy(tmp_path, _tier1), profile="hca")
    assert report.ok, report.problems
    assert not any("deprecated" in w.what for w in report.warnings)  # HCA wants the organism in obs


@pytest.mark.parametrize(
    ("override", "column", "phrase"),
    [
        ({"cell_enrichment": "CD4+"}, "cell_enrichment", "CL terms each followed by"),
        ({"cell_enrichment": "CL:9999999+"}, "cell_enrichment", "not a live term"),
        ({"organism_ontology_term_id": "NCBITaxon:10090"}, "organism_ontology_term_id", "one organism"),
        ({"sample_id": ""}, "sample_id", "without a value"),
    ],
)
def test_hca_profile_value_rules(tmp_path, override, column, phrase):
    report = validate_anndata(_valid_copy(tmp_path, lambda a: _tier1(a, **override)), profile="hca")
    assert _find(report.problems, column, phrase).n_cells == 2


def test_hca_profile_warns_on_values_outside_the_validator_enums(tmp_path):
    path = _valid_copy(
        tmp_path, lambda a: _tier1(a, sample_source="organ donor", gene_annotation_version="48")
    )
    report = validate_anndata(path, profile="hca")
    assert report.ok
    assert _find(report.warnings, "sample_source", "hca-validation-tools").examples == ("organ donor",)
    assert _find(report.warnings, "gene_annotation_version", "Ensembl release").n_cells == 2


# --- ASCT+B ---


def test_load_asctb_heart():
    table = load_asctb(shared_file(HEART))
    assert table.version == "v1.0"
    assert "Heart v1.0" in table.name
    assert {"CL:0000057", "CL:0000746", "CL:2000066"} <= table.cell_types[LV]
    # a row's cell types belong to every structure on its path, FMA leaves included
    assert "CL:0002542" in table.cell_types["FMAID:3823"]
    assert table.cell_types["UBERON:0000948"] >= table.cell_types[LV] | table.cell_types[RV]
    assert table.labels[LV] == "heart left ventricle"


def test_check_cell_types_on_synthetic_obs():
    pairs = [
        ("UBERON:0000948", "CL:0000746", 3),  # heart: covers every structure of the table
        (LV, "CL:0002131", 2),  # a CL descendant of a listed type (cardiac muscle cell)
        ("UBERON:0006566", "CL:0000182", 4),  # hepatocyte in the left ventricle myocardium
        (LV, "CL:0000115", 5),  # endothelial cell: coarser than the listed endothelial types
        ("UBERON:0002048", "CL:0000057", 6),  # lung: not in a heart table
        ("CL:0000057", "CL:0000057", 1),  # a cell culture's tissue: not compared
        (LV, "unknown", 1),
    ]
    tissues = [t for t, _, n in pairs for _ in range(n)]
    cell_types = [c for _, c, n in pairs for _ in range(n)]
    found = check_cell_types(load_asctb(shared_file(HEART)), tissues, cell_types)
    assert len(found) == 3
    assert (
        _find(tuple(found), "cell_type_ontology_term_id", "CL:0000182 (hepatocyte) is not listed").n_cells
        == 4
    )
    coarser = _find(tuple(found), "cell_type_ontology_term_id", "coarser")
    assert coarser.n_cells == 5
    assert "CL:0000071 (blood vessel endothelial cell)" in coarser.what
    assert _find(tuple(found), "tissue_ontology_term_id", "UBERON:0002048 (lung)").n_cells == 6


def test_validate_with_asctb_reports_heart_outliers(invalid_report, invalid_obs):
    report = validate_anndata(shared_file(INVALID), asctb=shared_file(HEART))
    assert report.problems == invalid_report.problems
    assert "Heart v1.0" in report.references["asctb"]
    added = [w for w in report.warnings if w not in invalid_report.warnings]
    endothelial = invalid_obs["cell_type_ontology_term_id"] == "CL:0000115"
    for tissue in (LV, RV):
        expected = int((endothelial & (invalid_obs["tissue_ontology_term_id"] == tissue)).sum())
        assert _find(tuple(added), "cell_type_ontology_term_id", f"listed for {tissue}").n_cells == expected
    # rows 3 and 4: brain organoid and kidney in a heart dataset
    assert _find(tuple(added), "tissue_ontology_term_id", "UBERON:0000955 (brain)").n_cells == 1
    assert _find(tuple(added), "tissue_ontology_term_id", "UBERON:0002113 (kidney)").n_cells == 1
    assert len(added) == 4


# --- bad input ---


def test_bad_input_raises_atlasprep_errors(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        validate_anndata(tmp_path / "absent.h5ad")
    (tmp_path / "notes.h5ad").write_text("not an AnnData file")
    with pytest.raises(SourceError, match="cannot open"):
        validate_anndata(tmp_path / "notes.h5ad")
    with h5py.File(tmp_path / "empty.h5ad", "w"):
        pass
    with pytest.raises(InputFormatError, match="not an AnnData store"):
        validate_anndata(tmp_path / "empty.h5ad")
    with pytest.raises(UsageError, match="profile"):
        validate_anndata(shared_file(VALID), profile="cxg")  # type: ignore[arg-type]
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputFormatError, match="AS/1"):
        load_asctb(tmp_path / "table.csv")
    with pytest.raises(SourceError):
        load_asctb(tmp_path / "absent.csv")


def test_zipped_legacy_zarr_with_symbols():
    """A zipped zarr v2 store in the legacy encoding, dense X, gene symbols, no CELLxGENE fields."""
    report = validate_anndata(shared_file("scrna/10x-10k-subset.zarr.zip"))
    assert (report.n_cells, report.n_genes) == (10_000, 1_000)
    empty = _find(report.problems, "X", "without a single nonzero count")
    assert (empty.n_cells, empty.examples) == (1, ("AGGCCGTGTCTGCAAT-1",))
    assert _find(report.problems, "var_names", "repeat").examples == ("Rp1",)
    assert _find(report.problems, "var_names", "neither Ensembl gene IDs").what.startswith("1000 ")
    assert _find(report.problems, "uns['organism_ontology_term_id']", "no organism").n_cells == 10_000
    # cellxgene-schema 7.1.2 accepts a file without cell types: a warning
    assert (
        _find(report.warnings, "cell_type_ontology_term_id", "required column is missing").n_cells == 10_000
    )


def test_cli_validate_dispatches_slices_and_stores():
    from typer.testing import CliRunner

    from atlasprep.cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["validate", str(shared_file("cellxgene/example_invalid_CL.h5ad"))])
    assert bad.exit_code == 1
    assert "cell_type_ontology_term_id" in bad.stdout
    assert "19 problem(s)" in bad.stderr
    assert "CELLxGENE schema 7.1.0" in bad.stderr
    good = runner.invoke(app, ["validate", str(shared_file("cellxgene/example_valid.h5ad")), "--json"])
    assert good.exit_code == 0, good.stdout
    assert '"problems": []' in good.stdout
    hca = runner.invoke(
        app, ["validate", str(shared_file("cellxgene/example_valid.h5ad")), "--profile", "hca"]
    )
    assert hca.exit_code == 1  # no HCA Tier 1 fields
    assert "sample_id" in hca.stdout
    odd = runner.invoke(app, ["validate", str(shared_file("cellxgene/example_valid.h5ad")), "--profile", "x"])
    assert odd.exit_code == 2
    training = runner.invoke(
        app, ["validate", str(shared_file("cellxgene/example_valid.h5ad")), "--profile", "atlasprep"]
    )
    assert training.exit_code == 0, training.stdout
    assert "atlasprep: uns['title'] and obsm embeddings not required" in " ".join(training.stderr.split())
