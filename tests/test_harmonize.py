"""`harmonize`: labels to terms (graded), symbols to Ensembl IDs, X streamed through, nothing silent."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import shared_file
from typer.testing import CliRunner

from atlasprep.cli import app
from atlasprep.errors import IncompleteMappingError, InputFormatError, UsageError
from atlasprep.harmonize import validate_anndata
from atlasprep.harmonize.api import HarmonizeConfig, harmonize
from atlasprep.harmonize.genes import map_genes
from atlasprep.harmonize.labels import map_values
from atlasprep.sources import SourceSpec

# Wu et al. 2020 T-cell clusters -> CL (a curator's reading of the cluster names)
_WU_CELL_TYPES = {
    "3.1-MT": "CL:0000084",  # T cell
    "4.1-Trm": "CL:0000897",  # CD4-positive, alpha-beta memory T cell
    "4.6a-Treg": "CL:0000815",  # regulatory T cell
    "4.6b-Treg": "CL:0000815",
    "8.1-Teff": "CL:0001050",  # effector CD8-positive, alpha-beta T cell
    "8.2-Tem": "CL:0000913",  # effector memory CD8-positive, alpha-beta T cell
}
_ORGANS = {"L": "UBERON:0002048", "R": "UBERON:0002113", "E": "UBERON:0001295", "C": "UBERON:0001155"}
_CANCERS = {
    "Lung": "MONDO:0008903",
    "Renal": "MONDO:0002367",
    "Endo": "MONDO:0011962",
    "Colon": "MONDO:0005575",
}


def _wu_mapping(path, obs):
    rows = []
    for value in obs["cluster_orig"].cat.categories:
        default = "CL:0000624" if value.startswith("4.") else "CL:0000625"  # CD4 / CD8 alpha-beta T cell
        rows.append(("cluster_orig", value, _WU_CELL_TYPES.get(value, default)))
    for value in obs["sample"].cat.categories:  # LT2: lung tumour 2; RB3: renal patient, blood
        rows.append(("sample", value, "UBERON:0000178" if value[1] == "B" else _ORGANS[value[0]]))
    for value in obs["patient"].cat.categories:
        rows.append(("disease", value, _CANCERS[value.rstrip("0123456789")]))
    pd.DataFrame(rows, columns=["column", "value", "term_id"]).to_csv(path, sep="\t", index=False)


def _wu_args(src, out, mapping, report):
    return [
        "harmonize", str(src), "--out", str(out), "--mapping", str(mapping), "--report", str(report),
        "--map", "cluster_orig=cell_type", "--map", "sample=tissue", "--map", "patient=disease",
        "--map", "patient=donor_id", "--set", "organism=Homo sapiens", "--set", "assay=10x 5' v1",
        "--set", "sex=unknown", "--set", "development_stage=unknown",
        "--set", "self_reported_ethnicity=unknown",
        "--set", "suspension_type=cell", "--set", "tissue_type=tissue", "--set", "is_primary_data=true",
        "--set", "title=Wu 2020 tumour-infiltrating T cells", "--embedding", "pca",
    ]  # fmt: skip


def test_wu2020_harmonized_validated_and_tokenized(tmp_path):
    src = shared_file("scrna/wu2020_200_v0_11.h5ad")
    geneformer = shared_file("geneformer/token_dictionary_gc104M.json").parent
    original = ad.read_h5ad(src)
    _wu_mapping(tmp_path / "labels.tsv", original.obs)
    out, report_path = tmp_path / "wu.h5ad", tmp_path / "report.json"
    runner = CliRunner()
    r = runner.invoke(app, _wu_args(src, out, tmp_path / "labels.tsv", report_path))
    assert r.exit_code == 0, r.stderr
    report = json.loads(report_path.read_text())
    # genes: NCBI symbols against GENCODE v48
    genes = report["genes"]
    assert (genes["n_input"], genes["mapped"], genes["n_output"]) == (30727, 22310, 22310)
    assert (genes["n_unknown"], genes["n_ambiguous"]) == (8110, 307)
    assert genes["unknown_examples"][0] == "LOC100505874"
    assert set(genes["ambiguous"]["PRKY"]) == {"ENSG00000293442", "ENSG00000099725"}
    # labels: every value through the table, constants through --set
    fields = report["fields"]
    assert {k: (v["n_mapped"], v["n_values"]) for k, v in fields.items()} == {
        "cell_type": (16, 16),
        "tissue": (30, 30),
        "disease": (14, 14),
        "assay": (1, 1),
        "development_stage": (1, 1),
        "sex": (1, 1),
        "self_reported_ethnicity": (1, 1),
        "tissue_type": (1, 1),
        "suspension_type": (1, 1),
    }
    assert fields["cell_type"]["by_how"] == {"table": 16}
    assert fields["suspension_type"]["by_how"] == {"set": 1}
    assert fields["assay"]["mapped"][0]["term_id"] == "EFO:0011025"
    assert report["raw_counts"]["integer"]

    harmonized = ad.read_h5ad(out)
    assert harmonized.shape == (200, 22310)
    assert harmonized.var_names.str.startswith("ENSG").all()
    # what a CELLxGENE upload takes: title, organism, an embedding, feature_is_filtered, float32
    # counts, and none of the label columns CELLxGENE derives itself
    assert harmonized.uns["organism_ontology_term_id"] == "NCBITaxon:9606"
    assert harmonized.uns["title"] == "Wu 2020 tumour-infiltrating T cells"
    assert harmonized.uns["default_embedding"] == "X_pca"
    assert harmonized.obsm["X_pca"].shape == (200, 50)
    assert np.isfinite(harmonized.obsm["X_pca"]).all()
    assert list(harmonized.var.columns) == ["feature_is_filtered"]
    assert not harmonized.var["feature_is_filtered"].any()
    assert harmonized.X.dtype == np.float32
    obs = harmonized.obs
    assert not {"cell_type", "tissue", "disease", "assay", "sex"} & set(obs.columns)
    treg = obs["cluster_orig"] == "4.6a-Treg"
    assert (obs.loc[treg, "cell_type_ontology_term_id"] == "CL:0000815").all()
    assert (obs.loc[obs["sample"].str[1] == "B", "tissue_general"] == "blood").all()
    assert (obs["donor_id"] == obs["patient"].astype(str)).all()
    # X: each output gene is its input column, cell for cell
    mapped = map_genes(list(original.var_names), "homo_sapiens").feature_ids
    col = list(original.var_names).index("CD3E")
    out_col = list(harmonized.var_names).index(mapped[col])
    assert np.array_equal(original.X[:, col].toarray(), harmonized.X[:, out_col].toarray())
    columns = [i for i, f in enumerate(mapped) if f is not None]
    assert harmonized.X.sum() == pytest.approx(original.X[:, columns].sum())
    # atlasprep validate passes it (CELLxGENE schema rules), then tokenize --scheme rank takes it
    checked = runner.invoke(app, ["validate", str(out), "--json"])
    assert checked.exit_code == 0, checked.stdout
    assert json.loads(checked.stdout)["problems"] == []
    t = runner.invoke(
        app,
        ["tokenize", "--input", str(out), "--scheme", "rank", "--split-by", "donor_id", "--out",
         str(tmp_path / "tokens"), "--token-dictionary", str(geneformer / "token_dictionary_gc104M.json"),
         "--gene-medians", str(geneformer / "gene_median_dictionary_gc104M.json"), "--json"],
    )  # fmt: skip
    assert t.exit_code == 0, t.stderr
    assert json.loads(t.stdout)["n_cells"] == 200


def test_labels_are_graded_by_how_they_matched():
    got = {
        m.value: (m.term_id, m.how)
        for m in map_values(
            "cell_type",
            {
                "B cell": 5,
                "T cells": 4,
                "PBMC": 3,
                "CD14+ monocyte": 2,
                "unknown": 1,
                "blorp cells": 1,
                "CL:0000236": 1,
            },
            organism="homo_sapiens",
        )
    }
    assert got["B cell"] == ("CL:0000236", "label")
    assert got["T cells"] == ("CL:0000084", "normalized")
    assert got["PBMC"] == ("CL:2000001", "synonym")
    assert got["CD14+ monocyte"] == ("CL:0001054", "normalized")
    assert got["unknown"] == ("unknown", "unknown")
    assert got["blorp cells"] == (None, None)
    assert got["CL:0000236"] == ("CL:0000236", "id")
    disease = {
        m.value: m.term_id
        for m in map_values("disease", {"healthy": 1, "normal": 1}, organism="homo_sapiens")
    }
    assert disease == {"healthy": "PATO:0000461", "normal": "PATO:0000461"}
    sex = {
        m.value: m.term_id
        for m in map_values("sex", {"female": 1, "male": 1, "": 2}, organism="homo_sapiens")
    }
    assert sex == {"female": "PATO:0000383", "male": "PATO:0000384", "": "unknown"}


def test_table_wins_but_must_name_a_term_of_the_fields_ontology():
    mappings = map_values(
        "cell_type",
        {"B cell": 2, "odd": 1, "organ": 1},
        organism="homo_sapiens",
        table={"B cell": "CL:0000785", "odd": "UBERON:0002048"},
    )
    by_value = {m.value: m for m in mappings}
    assert (by_value["B cell"].term_id, by_value["B cell"].how) == ("CL:0000785", "table")
    assert by_value["odd"].term_id is None
    assert "CL" in by_value["odd"].reason
    unmapped = by_value["organ"]
    assert unmapped.term_id is None
    assert unmapped.n_cells == 1
    assert "tissue" not in map_values.__name__  # the field decides the ontology, not the value


def test_unmapped_values_suggest_and_strict_writes_nothing(tmp_path):
    src = tmp_path / "in.h5ad"
    adata = ad.AnnData(
        X=sp.csr_matrix(np.array([[1, 0, 2], [0, 3, 0], [4, 0, 0]], dtype=np.float32)),
        obs=pd.DataFrame({"celltype": ["B cells", "macrophag", "B cells"]}, index=["a", "b", "c"]),
        var=pd.DataFrame(index=["CD19", "CD68", "NOT_A_GENE"]),
    )
    adata.write_h5ad(src)
    runner = CliRunner()
    args = ["harmonize", str(src), "--map", "celltype=cell_type", "--report", str(tmp_path / "r.json")]
    strict = runner.invoke(app, [*args, "--out", str(tmp_path / "strict.h5ad"), "--strict"])
    assert strict.exit_code == 1
    assert strict.stderr.startswith("Error:")
    assert not (tmp_path / "strict.h5ad").exists()
    report = json.loads((tmp_path / "r.json").read_text())
    unmapped = report["fields"]["cell_type"]["unmapped"]
    assert [u["value"] for u in unmapped] == ["macrophag"]
    assert unmapped[0]["n_cells"] == 1
    assert unmapped[0]["suggestions"][0]["term_id"] == "CL:0000235"  # macrophage
    assert report["genes"]["unknown_examples"] == ["NOT_A_GENE"]
    kept = runner.invoke(app, [*args, "--out", str(tmp_path / "loose.h5ad"), "--keep-labels"])
    assert kept.exit_code == 2
    assert "r.json exists; pass --overwrite" in kept.stderr
    assert json.loads((tmp_path / "r.json").read_text()) == report
    loose = runner.invoke(app, [*args, "--out", str(tmp_path / "loose.h5ad"), "--keep-labels", "--overwrite"])
    assert loose.exit_code == 0, loose.stderr
    out = ad.read_h5ad(tmp_path / "loose.h5ad")
    assert list(out.var["feature_name"]) == ["CD19", "CD68"]
    ids = out.obs["cell_type_ontology_term_id"]
    assert ids.isna().tolist() == [False, True, False]  # unmapped: missing, never guessed
    assert ids.iloc[0] == ids.iloc[2] == "CL:0000236"
    # --keep-labels keeps the label columns CELLxGENE derives itself: validate says it rejects them
    assert out.obs["cell_type"].iloc[0] == "B cell"
    rejected = {p.column for p in validate_anndata(tmp_path / "loose.h5ad").problems}
    assert {"cell_type", "var['feature_name']"} <= rejected


def test_reserved_and_deprecated_input_columns_are_kept_aside(tmp_path):
    src = tmp_path / "in.h5ad"
    ad.AnnData(
        X=sp.csr_matrix(np.array([[1, 2], [3, 0]], dtype=np.float32)),
        obs=pd.DataFrame(
            {"cell_type": ["B", "T"], "organism": ["human", "human"], "celltype": ["B cell", "T cell"]},
            index=["a", "b"],
        ),
        var=pd.DataFrame(index=["CD19", "CD3E"]),
    ).write_h5ad(src)
    harmonize(HarmonizeConfig(source=src, out=tmp_path / "o.h5ad", maps=(("celltype", "cell_type"),)))
    out = ad.read_h5ad(tmp_path / "o.h5ad")
    assert {"cell_type_original", "organism_original", "cell_type_ontology_term_id"} <= set(out.obs.columns)
    assert not {"cell_type", "organism"} & set(out.obs.columns)
    assert list(out.obs["cell_type_original"]) == ["B", "T"]
    assert "title" not in out.uns  # neither was asked for
    assert len(out.obsm) == 0


def test_genes_ids_versions_case_spike_ins_and_sums():
    mapping = map_genes(
        ["ENSG00000177455.12", "cd19", "CD19", "ERCC-00002", "ENSMUSG00000000001", "zzz"], "homo_sapiens"
    )
    assert mapping.feature_ids == (
        "ENSG00000177455",
        "ENSG00000177455",
        "ENSG00000177455",
        "ERCC-00002",
        None,
        None,
    )
    assert mapping.how == ("versioned_id", "case", "symbol", "spike_in", None, None)
    assert mapping.unknown == ("ENSMUSG00000000001", "zzz")
    assert mapping.duplicates == {"ENSG00000177455": ("ENSG00000177455.12", "cd19", "CD19")}
    X = sp.csr_matrix(np.array([[1, 2, 3, 4, 5, 6]], dtype=np.float32))
    assert (X @ mapping.collapse).toarray().tolist() == [[6, 4]]  # CD19 summed; spike-in kept
    mouse = map_genes(["Cd19", "cd19"], "mus_musculus")
    assert mouse.how == ("symbol", "case")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--map", "celltype=cel_type"], "did you mean cell_type"),
        (["--map", "nope=cell_type"], "no column 'nope'"),
        (["--set", "tissue"], "FIELD=VALUE"),
        (["--set", "organism=yeast"], "Homo sapiens and Mus musculus"),
        (["--map", "celltype=title"], "give it with sets"),
        (["--embedding", "tsne"], "tsne"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path, args, message):
    src = tmp_path / "in.h5ad"
    ad.AnnData(
        X=sp.csr_matrix(np.ones((2, 1), dtype=np.float32)),
        obs=pd.DataFrame({"celltype": ["B cell", "T cell"]}, index=["a", "b"]),
        var=pd.DataFrame(index=["CD19"]),
    ).write_h5ad(src)
    r = CliRunner().invoke(app, ["harmonize", str(src), "--out", str(tmp_path / "o.h5ad"), *args])
    assert r.exit_code == 2, r.stderr
    assert message in r.stderr


def test_library_call_records_versions_and_counts(tmp_path):
    src = tmp_path / "in.h5ad"
    ad.AnnData(
        X=sp.csr_matrix(np.array([[1.5, 0.0]], dtype=np.float32)),
        obs=pd.DataFrame(index=["a"]),
        var=pd.DataFrame(index=["ENSG00000177455", "ENSG00000129226"]),
    ).write_h5ad(src)
    report = harmonize(HarmonizeConfig(source=src, out=tmp_path / "o.zarr"))
    assert report.raw_counts["integer"] is False
    assert report.raw_counts["non_integer_values"] == 1
    assert report.versions["cellxgene_schema"] == "7.1.0"
    assert "CL" in report.versions["ontologies"]
    stored = ad.read_zarr(tmp_path / "o.zarr").uns["atlasprep"]["harmonize"]
    assert stored["raw_counts"]["integer"] is False or stored["raw_counts"]["integer"] == 0


_UMAP_RUN = """
import numpy as np, scipy.sparse as sp
import umap.umap_ as u
from atlasprep._names import Embedding
from atlasprep.harmonize._embedding import compute_embedding
X = sp.random(60, 400, density=0.2, random_state=1, format="csr", dtype=np.float32)
X.data = np.ceil(X.data * 10)
e = compute_embedding(X, Embedding.umap, seed=0)
kernels = (u.smooth_knn_dist, u.compute_membership_strengths)
print(sum(len(k.stats.cache_hits) for k in kernels), sum(len(k.stats.cache_misses) for k in kernels), e.sum())
"""


def test_umap_kernels_compile_once_then_come_from_numbas_cache():
    """umap-learn's uncached kernels (~7 s a process) are compiled once, then loaded, and the
    embedding is the same."""
    pytest.importorskip("scanpy")
    runs = [
        subprocess.run([sys.executable, "-c", _UMAP_RUN], capture_output=True, text=True, check=False)
        for _ in range(2)
    ]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr[-2000:]
    (_, _, first_sum), (hits, misses, second_sum) = (r.stdout.split() for r in runs)
    assert (int(hits), int(misses)) == (2, 0)  # both kernels loaded from disk, none compiled
    assert second_sum == first_sum


def test_embedding_must_be_pca_or_umap(tmp_path):
    with pytest.raises(UsageError, match="embedding = 'tsne': choose pca or umap"):
        HarmonizeConfig(source=tmp_path / "in.h5ad", out=tmp_path / "o.h5ad", embedding="tsne")  # type: ignore[arg-type]


_MOUSE = {"Cd4": "ENSMUSG00000023274", "Cd8a": "ENSMUSG00000053977", "Ptprc": "ENSMUSG00000026395"}


def _mouse_file(path, *, gene_ids=True, uns=None, obs=None):
    var = pd.DataFrame({"gene_ids": list(_MOUSE.values())} if gene_ids else {}, index=list(_MOUSE))
    adata = ad.AnnData(
        X=sp.csr_matrix(np.ones((2, 3), dtype=np.float32)),
        obs=pd.DataFrame(obs or {}, index=["a", "b"]),
        var=var,
    )
    adata.uns.update(uns or {})
    adata.write_h5ad(path)
    return path


@pytest.mark.parametrize(
    ("how", "kwargs"),
    [
        ("Ensembl IDs in a var column", {}),
        ("uns", {"gene_ids": False, "uns": {"organism_ontology_term_id": "NCBITaxon:10090"}}),
        ("an obs column", {"gene_ids": False, "obs": {"organism": ["Mus musculus"] * 2}}),
        ("mouse-style symbols", {"gene_ids": False}),
    ],
)
def test_a_mouse_file_is_harmonized_as_mouse_without_organism(tmp_path, how, kwargs, caplog):
    src = _mouse_file(tmp_path / "mouse.h5ad", **kwargs)
    with caplog.at_level("WARNING", logger="atlasprep"):
        report = harmonize(HarmonizeConfig(source=src, out=tmp_path / "o.h5ad"))
    assert report.organism == "mus_musculus", how
    out = ad.read_h5ad(tmp_path / "o.h5ad")
    assert list(out.var_names) == list(_MOUSE.values())
    assert out.uns["organism_ontology_term_id"] == "NCBITaxon:10090"
    warned = [r.getMessage() for r in caplog.records]
    assert any("mouse-style (Cd4, Cd8a, Ptprc)" in m for m in warned) == (how == "mouse-style symbols")


def test_a_given_organism_wins_over_the_files_with_a_warning_and_others_are_refused(tmp_path, caplog):
    src = _mouse_file(tmp_path / "m.h5ad", uns={"organism_ontology_term_id": "NCBITaxon:10090"})
    with caplog.at_level("WARNING", logger="atlasprep"):
        report = harmonize(HarmonizeConfig(source=src, out=tmp_path / "o.h5ad", organism="Homo sapiens"))
    assert report.organism == "homo_sapiens"
    assert next(r.getMessage() for r in caplog.records) == (
        "organism Homo sapiens is given, but uns['organism_ontology_term_id'] states NCBITaxon:10090; "
        "harmonizing as Homo sapiens"
    )
    macaque = _mouse_file(tmp_path / "q.h5ad", uns={"organism_ontology_term_id": "NCBITaxon:9544"})
    stated = r"uns\['organism_ontology_term_id'\] states NCBITaxon:9544: atlasprep harmonizes Homo sapiens"
    with pytest.raises(InputFormatError, match=stated):
        harmonize(HarmonizeConfig(source=macaque, out=tmp_path / "q_out.h5ad"))


@pytest.mark.parametrize(
    ("field", "value", "term"),
    [
        ("cell_type", "eukaryotic cell", "CL:0000255"),  # forbidden by the schema
        ("self_reported_ethnicity", "European", "HANCESTRO:0005"),  # not below HANCESTRO:0601/0602
        ("assay", "microarray", "EFO:0002698"),  # not below EFO:0002772/EFO:0010183
        ("tissue", "prime adult stage", "UBERON:0018241"),  # a life-cycle stage
        ("development_stage", "life cycle stage", "HsapDv:0000000"),  # not below HsapDv:0000001
    ],
)
def test_a_term_the_schema_forbids_in_the_field_stays_unmapped(field, value, term):
    (mapping,) = map_values(field, {value: 3}, organism="homo_sapiens")
    assert mapping.term_id is None
    assert mapping.reason.startswith(f"{term} (")
    assert f"is not allowed in {field}" in mapping.reason
    # the same term from a mapping table is refused too
    (tabled,) = map_values(field, {value: 3}, organism="homo_sapiens", table={value: term})
    assert tabled.term_id is None


def test_several_terms_in_the_schemas_form_map_each_and_join_sorted():
    mappings = map_values(
        "disease",
        {"MONDO:0100096 || MONDO:0005061": 2, "asthma || COVID-19": 1, "asthma || kidney": 1},
        organism="homo_sapiens",
    )
    by_value = {m.value: m for m in mappings}
    assert by_value["MONDO:0100096 || MONDO:0005061"].term_id == "MONDO:0005061 || MONDO:0100096"
    assert by_value["asthma || COVID-19"].term_id == "MONDO:0004979 || MONDO:0100096"
    assert by_value["asthma || COVID-19"].label == "asthma || COVID-19"
    assert by_value["asthma || kidney"].term_id is None  # one part unmapped: the whole value is
    assert by_value["asthma || kidney"].reason.startswith("'kidney': ")
    (ethnicity,) = map_values(
        "self_reported_ethnicity", {"HANCESTRO:0019 || HANCESTRO:0022": 1}, organism="homo_sapiens"
    )
    assert ethnicity.term_id == "HANCESTRO:0019 || HANCESTRO:0022"


def test_primary_cell_culture_takes_a_cell_type_as_its_tissue(tmp_path):
    (cl,) = map_values(
        "tissue", {"fibroblast": 4}, organism="homo_sapiens", tissue_type="primary cell culture"
    )
    assert cl.term_id == "CL:0000057"
    (uberon,) = map_values("tissue", {"lung": 4}, organism="homo_sapiens", tissue_type="primary cell culture")
    assert uberon.term_id is None


def test_tissue_and_suspension_types_become_schema_values_or_stay_unmapped(tmp_path):
    src = tmp_path / "in.h5ad"
    obs = {
        "susp": ["nuclei", "Cell", "blah", "nucleus"],
        "tt": ["Organoid", "cell culture", "tissue", "tissue"],
    }
    ad.AnnData(
        X=sp.csr_matrix(np.ones((4, 1), dtype=np.float32)),
        obs=pd.DataFrame(obs, index=list("abcd")),
        var=pd.DataFrame(index=["CD4"]),
    ).write_h5ad(src)
    config = HarmonizeConfig(
        source=src, out=tmp_path / "o.h5ad", maps=(("susp", "suspension_type"), ("tt", "tissue_type"))
    )
    report = harmonize(config)
    fields = {f.field: f for f in report.fields}
    assert {m.value: (m.term_id, m.how) for m in fields["suspension_type"].mappings} == {
        "nuclei": ("nucleus", "alias"),
        "Cell": ("cell", "normalized"),
        "blah": (None, None),
        "nucleus": ("nucleus", "label"),
    }
    culture = next(m for m in fields["tissue_type"].mappings if m.value == "cell culture")
    assert culture.term_id is None
    assert "'primary cell culture' or 'cell line'" in culture.reason
    out = ad.read_h5ad(tmp_path / "o.h5ad")
    assert out.obs["suspension_type"].tolist()[:2] == ["nucleus", "cell"]
    assert pd.isna(out.obs["suspension_type"].iloc[2])  # unmapped: missing, not copied
    with pytest.raises(IncompleteMappingError):
        harmonize(replace(config, out=tmp_path / "s.h5ad", strict=True))


def test_a_par_y_copy_is_the_y_gene_not_summed_into_the_x_one():
    names = [
        "ENSG00000002586.20",
        "ENSG00000002586.20_PAR_Y",
        "ENSG00000185960_PAR_Y",
        "ENSG00000000003_PAR_Y",
    ]
    mapping = map_genes(names, "homo_sapiens")
    assert list(zip(mapping.feature_ids, mapping.how, strict=True)) == [
        ("ENSG00000002586", "versioned_id"),  # CD99 on X
        ("ENSG00000292348", "par_y"),  # CD99 on Y: its own ID since GENCODE v44
        ("ENSG00000292354", "par_y"),  # SHOX on Y
        (None, None),  # no pseudoautosomal Y copy: unknown
    ]
    assert mapping.duplicates == {}
    assert mapping.unknown == ("ENSG00000000003_PAR_Y",)


def test_the_report_file_lists_every_unknown_gene(tmp_path):
    src = tmp_path / "in.h5ad"
    genes = ["CD4", *[f"NOT_A_GENE_{i}" for i in range(30)]]
    ad.AnnData(
        X=sp.csr_matrix(np.ones((2, len(genes)), dtype=np.float32)),
        obs=pd.DataFrame(index=["a", "b"]),
        var=pd.DataFrame(index=genes),
    ).write_h5ad(src)
    harmonize(HarmonizeConfig(source=src, out=tmp_path / "o.h5ad", report=tmp_path / "r.json"))
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["genes"]["unknown_examples"] == genes[1:]  # all 30
    kept = ad.read_h5ad(tmp_path / "o.h5ad").uns["atlasprep"]["harmonize"]["genes"]
    assert len(kept["unknown_examples"]) == 20  # the output's copy: the first few


def test_a_valid_file_keeps_its_title_and_embeddings_through_harmonize(tmp_path):
    src = shared_file("cellxgene/example_valid.h5ad")
    out = tmp_path / "o.h5ad"
    harmonize(HarmonizeConfig(source=src, out=out))
    before, after = ad.read_h5ad(src), ad.read_h5ad(out)
    for key in ("title", "batch_condition", "default_embedding"):
        assert str(after.uns[key]) == str(before.uns[key]), key
    assert np.array_equal(after.obsm["X_umap"], before.obsm["X_umap"])
    assert not validate_anndata(out).problems
    # a subset keeps its own cells' rows; a given title wins
    one = tmp_path / "one.h5ad"
    harmonize(
        HarmonizeConfig(
            source=SourceSpec(inputs=(str(src),), max_cells=1, seed=1), out=one, sets=(("title", "t"),)
        )
    )
    subset = ad.read_h5ad(one)
    row = list(before.obs_names).index(subset.obs_names[0])
    assert np.array_equal(subset.obsm["X_umap"][0], before.obsm["X_umap"][row])
    assert subset.uns["title"] == "t"


def test_a_var_column_of_ensembl_ids_is_preferred_to_symbols(tmp_path):
    src = tmp_path / "tenx.h5ad"
    # 10x writes symbols as the index and the IDs as gene_ids; "NOT_A_SYMBOL" is still a known ID
    var = pd.DataFrame({"gene_ids": ["ENSG00000010610", "ENSG00000177455"]}, index=["CD4", "NOT_A_SYMBOL"])
    ad.AnnData(
        X=sp.csr_matrix(np.ones((2, 2), dtype=np.float32)), obs=pd.DataFrame(index=["a", "b"]), var=var
    ).write_h5ad(src)
    report = harmonize(HarmonizeConfig(source=src, out=tmp_path / "o.h5ad"))
    assert report.genes.how == ("id", "id")
    assert list(ad.read_h5ad(tmp_path / "o.h5ad").var_names) == ["ENSG00000010610", "ENSG00000177455"]
    # a named column wins
    named_ids = harmonize(HarmonizeConfig(source=src, out=tmp_path / "s.h5ad", gene_column="gene_ids"))
    assert named_ids.genes.how == ("id", "id")
    symbols = tmp_path / "sym.h5ad"
    ad.AnnData(
        X=sp.csr_matrix(np.ones((2, 2), dtype=np.float32)),
        obs=pd.DataFrame(index=["a", "b"]),
        var=pd.DataFrame({"name": ["CD4", "CD19"]}, index=["g1", "g2"]),
    ).write_h5ad(symbols)
    named = harmonize(HarmonizeConfig(source=symbols, out=tmp_path / "n.h5ad", gene_column="name"))
    assert named.genes.how == ("symbol", "symbol")


def test_id_columns_kept_as_they_are_are_checked_with_a_warning(tmp_path, caplog):
    src = shared_file("cellxgene/example_invalid_CL.h5ad")
    with caplog.at_level("WARNING", logger="atlasprep"):
        harmonize(HarmonizeConfig(source=src, out=tmp_path / "o.h5ad"))
    kept = [r.getMessage() for r in caplog.records if "kept as it is" in r.getMessage()]
    cell_type = next(m for m in kept if m.startswith("obs column cell_type_ontology_term_id,"))
    assert "(CL:12312: not a term of CL" in cell_type
    assert "--map cell_type_ontology_term_id=cell_type" in cell_type
    caplog.clear()
    valid = shared_file("cellxgene/example_valid.h5ad")
    with caplog.at_level("WARNING", logger="atlasprep"):
        harmonize(HarmonizeConfig(source=valid, out=tmp_path / "v.h5ad"))
    assert not [r for r in caplog.records if "kept as it is" in r.getMessage()]
