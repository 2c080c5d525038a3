"""Single-fault mutants of the CELLxGENE fixture ``example_valid.h5ad``, for the differential test
of ``atlasprep validate`` against cellxgene-schema 7.1.2.

Each entry of :data:`MUTANTS` changes one thing in an in-memory copy of a fixture (the valid one:
two cells, seven genes; a Visium slide built from it, in spatial_mutants.py); ``build`` writes it.
``verdicts.json`` holds what cellxgene-schema 7.1.2 says about each (recorded once, offline), and
``tests/test_validate_differential.py`` rebuilds every mutant and checks that ``validate`` agrees.

Rebuild the mutants and record the verdicts again (VENV: ``pip install cellxgene-schema==7.1.2``)::

    python tests/data/validate/make_mutants.py /tmp/mutants           # atlasprep's venv
    VENV/bin/python tests/data/validate/record_verdicts.py /tmp/mutants tests/data/validate/verdicts.json

A mutant's ``rule`` names the field of the rule it breaks, which ``validate`` must name."""

from __future__ import annotations

import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).parent))  # the sibling modules, run as a script or loaded by path
import mutations as m
from mutations import Mutant, build
from obs_mutants import ASSAY, PERTURBATION
from spatial_mutants import SPATIAL, visium

MUTANTS: tuple[Mutant, ...] = (
    # --- the fixtures as they are ---
    Mutant("fixture_valid", "", m.fixture),
    Mutant("fixture_invalid_CL", "obs", m.fixture, base="invalid"),
    # --- obs: required columns ---
    *(
        Mutant(f"obs_missing_{c}", c, m.drop("obs", c))
        for c in (  # in the order of the schema text
            "cell_type_ontology_term_id",
            "assay_ontology_term_id",
            "disease_ontology_term_id",
            "sex_ontology_term_id",
            "tissue_ontology_term_id",
            "self_reported_ethnicity_ontology_term_id",
            "development_stage_ontology_term_id",
            "is_primary_data",
            "donor_id",
            "suspension_type",
            "tissue_type",
        )
    ),
    # --- obs: ontology terms ---
    Mutant("cell_type_unknown_ok", "", m.obs("cell_type_ontology_term_id", "unknown")),
    Mutant(
        "cell_type_not_a_term",
        "cell_type_ontology_term_id",
        m.obs("cell_type_ontology_term_id", "CL:9999999"),
    ),
    Mutant(
        "cell_type_deprecated",
        "cell_type_ontology_term_id",
        m.obs("cell_type_ontology_term_id", "CL:0000003"),
    ),
    Mutant(
        "cell_type_forbidden", "cell_type_ontology_term_id", m.obs("cell_type_ontology_term_id", "CL:0000255")
    ),
    Mutant(
        "cell_type_uberon",
        "cell_type_ontology_term_id",
        m.obs("cell_type_ontology_term_id", "UBERON:0002048"),
    ),
    Mutant(
        "cell_type_na_not_cell_line", "cell_type_ontology_term_id", m.obs("cell_type_ontology_term_id", "na")
    ),
    Mutant(
        "cell_type_nan",
        "cell_type_ontology_term_id",
        m.obs("cell_type_ontology_term_id", ["CL:0000066", None]),
    ),
    Mutant("cell_type_other_ok", "", m.obs("cell_type_ontology_term_id", "CL:0000236")),
    Mutant("assay_not_an_assay", "assay_ontology_term_id", m.obs("assay_ontology_term_id", "EFO:0000001")),
    Mutant("assay_wrong_ontology", "assay_ontology_term_id", m.obs("assay_ontology_term_id", "CL:0000066")),
    Mutant(
        "assay_suffix", "assay_ontology_term_id", m.obs("assay_ontology_term_id", "EFO:0009922 (sci-plex)")
    ),
    Mutant("assay_smartseq2_ok", "", m.obs("assay_ontology_term_id", "EFO:0008931")),
    Mutant("disease_normal_ok", "", m.obs("disease_ontology_term_id", "PATO:0000461")),
    Mutant("disease_multi_ok", "", m.obs("disease_ontology_term_id", "MONDO:0005015 || MONDO:0100096")),
    Mutant(
        "disease_multi_unsorted",
        "disease_ontology_term_id",
        m.obs("disease_ontology_term_id", "MONDO:0100096 || MONDO:0005015"),
    ),
    Mutant(
        "disease_multi_duplicate",
        "disease_ontology_term_id",
        m.obs("disease_ontology_term_id", "MONDO:0005015 || MONDO:0005015"),
    ),
    Mutant(
        "disease_multi_with_pato",
        "disease_ontology_term_id",
        m.obs("disease_ontology_term_id", "MONDO:0100096 || PATO:0000461"),
    ),
    Mutant(
        "disease_pato_other", "disease_ontology_term_id", m.obs("disease_ontology_term_id", "PATO:0000383")
    ),
    Mutant("disease_root_ok", "", m.obs("disease_ontology_term_id", "MONDO:0021178")),
    Mutant("sex_unknown_ok", "", m.obs("sex_ontology_term_id", "unknown")),
    Mutant("sex_na_not_cell_line", "sex_ontology_term_id", m.obs("sex_ontology_term_id", "na")),
    Mutant("sex_other_pato", "sex_ontology_term_id", m.obs("sex_ontology_term_id", "PATO:0000461")),
    Mutant("tissue_cl_for_tissue", "tissue_ontology_term_id", m.obs("tissue_ontology_term_id", "CL:0000066")),
    Mutant(
        "tissue_not_a_term", "tissue_ontology_term_id", m.obs("tissue_ontology_term_id", "UBERON:9999999")
    ),
    Mutant(
        "tissue_deprecated", "tissue_ontology_term_id", m.obs("tissue_ontology_term_id", "UBERON:0000027")
    ),
    Mutant(
        "tissue_primary_culture_ok",
        "",
        m.several(
            m.obs("tissue_type", "primary cell culture"), m.obs("tissue_ontology_term_id", "CL:0000066")
        ),
    ),
    Mutant(
        "tissue_primary_culture_uberon",
        "tissue_ontology_term_id",
        m.obs("tissue_type", "primary cell culture"),
    ),
    Mutant("tissue_organoid_ok", "", m.obs("tissue_type", "organoid")),
    Mutant("tissue_cell_line_ok", "", m.cell_line),
    Mutant(
        "tissue_cell_line_uberon",
        "tissue_ontology_term_id",
        m.several(m.cell_line, m.obs("tissue_ontology_term_id", "UBERON:0002048")),
    ),
    Mutant(
        "cell_line_stage_not_na",
        "development_stage_ontology_term_id",
        m.several(m.cell_line, m.obs("development_stage_ontology_term_id", "HsapDv:0000003")),
    ),
    Mutant("cell_line_donor_not_na", "donor_id", m.several(m.cell_line, m.obs("donor_id", "donor_1"))),
    Mutant(
        "cell_line_sex_not_na",
        "sex_ontology_term_id",
        m.several(m.cell_line, m.obs("sex_ontology_term_id", "PATO:0000383")),
    ),
    Mutant("tissue_type_cell_culture", "tissue_type", m.obs("tissue_type", "cell culture")),
    Mutant(
        "ethnicity_na_for_human",
        "self_reported_ethnicity_ontology_term_id",
        m.obs("self_reported_ethnicity_ontology_term_id", "na"),
    ),
    Mutant("ethnicity_unknown_ok", "", m.obs("self_reported_ethnicity_ontology_term_id", "unknown")),
    Mutant(
        "ethnicity_deprecated",
        "self_reported_ethnicity_ontology_term_id",
        m.obs("self_reported_ethnicity_ontology_term_id", "HANCESTRO:0575"),
    ),
    Mutant(
        "ethnicity_outside_branch",
        "self_reported_ethnicity_ontology_term_id",
        m.obs("self_reported_ethnicity_ontology_term_id", "HANCESTRO:0005"),
    ),
    Mutant(
        "ethnicity_multi_ok",
        "",
        m.obs("self_reported_ethnicity_ontology_term_id", "HANCESTRO:0019 || HANCESTRO:0022"),
    ),
    Mutant(
        "ethnicity_multi_unsorted",
        "self_reported_ethnicity_ontology_term_id",
        m.obs("self_reported_ethnicity_ontology_term_id", "HANCESTRO:0022 || HANCESTRO:0019"),
    ),
    Mutant(
        "stage_mouse_for_human",
        "development_stage_ontology_term_id",
        m.obs("development_stage_ontology_term_id", "MmusDv:0000003"),
    ),
    Mutant(
        "stage_root",
        "development_stage_ontology_term_id",
        m.obs("development_stage_ontology_term_id", "HsapDv:0000001"),
    ),
    Mutant(
        "stage_na_not_cell_line",
        "development_stage_ontology_term_id",
        m.obs("development_stage_ontology_term_id", "na"),
    ),
    Mutant("stage_unknown_ok", "", m.obs("development_stage_ontology_term_id", "unknown")),
    # --- obs: enumerations, dtypes, names ---
    Mutant("suspension_not_allowed_value", "suspension_type", m.obs("suspension_type", "whole")),
    Mutant("suspension_na_for_10x", "suspension_type", m.obs("suspension_type", "na")),
    Mutant("suspension_cell_ok", "", m.obs("suspension_type", "cell")),
    Mutant(
        "suspension_not_categorical", "suspension_type", m.put("obs", "suspension_type", ["nucleus", "cell"])
    ),
    Mutant("donor_not_categorical", "donor_id", m.put("obs", "donor_id", ["donor_1", "donor_2"])),
    Mutant("donor_na", "donor_id", m.obs("donor_id", "na")),
    Mutant("donor_empty", "donor_id", m.obs("donor_id", " ")),
    Mutant("is_primary_data_str", "is_primary_data", m.put("obs", "is_primary_data", ["True", "True"])),
    Mutant("tissue_type_not_categorical", "tissue_type", m.put("obs", "tissue_type", ["tissue", "organoid"])),
    Mutant("obs_dunder_column", "__extra", m.obs("__extra", "x")),
    Mutant("obs_bool_categories_ok", "", m.put("obs", "flag", pd.Categorical([True, False]))),
    Mutant("obs_extra_column_ok", "", m.obs("batch", "b1")),
    Mutant(
        "obs_unused_category_ok", "", m.put("obs", "batch", pd.Categorical(["a", "a"], categories=["a", "b"]))
    ),
    # --- obs: deprecated and reserved columns ---
    Mutant(
        "obs_deprecated_organism",
        "organism_ontology_term_id",
        m.obs("organism_ontology_term_id", "NCBITaxon:9606"),
    ),
    Mutant("obs_deprecated_organism_label", "organism", m.obs("organism", "Homo sapiens")),
    Mutant(
        "obs_deprecated_ethnicity",
        "ethnicity_ontology_term_id",
        m.obs("ethnicity_ontology_term_id", "HANCESTRO:0019"),
    ),
    Mutant("obs_deprecated_ethnicity_label", "ethnicity", m.obs("ethnicity", "Japanese")),
    Mutant("obs_reserved_cell_type", "cell_type", m.obs("cell_type", "epithelial cell")),
    Mutant("obs_reserved_tissue", "tissue", m.obs("tissue", "lung")),
    Mutant("obs_reserved_assay", "assay", m.obs("assay", "10x 3' v2")),
    Mutant("obs_reserved_joinid", "observation_joinid", m.obs("observation_joinid", "abc")),
    Mutant("obs_reserved_perturbation_types", "perturbation_types", m.obs("perturbation_types", "x")),
    # --- uns ---
    Mutant("uns_missing_title", "title", m.drop("uns", "title")),
    Mutant("uns_title_trailing_space", "title", m.put("uns", "title", "A title ")),
    Mutant("uns_title_double_space", "title", m.put("uns", "title", "A  title")),
    Mutant("uns_title_not_str", "title", m.put("uns", "title", 3)),
    Mutant("uns_missing_organism", "organism_ontology_term_id", m.drop("uns", "organism_ontology_term_id")),
    Mutant(
        "uns_organism_not_allowed",
        "organism_ontology_term_id",
        m.put("uns", "organism_ontology_term_id", "NCBITaxon:9685"),
    ),
    Mutant(
        "uns_organism_forbidden",
        "organism_ontology_term_id",
        m.put("uns", "organism_ontology_term_id", "NCBITaxon:2697049"),
    ),
    Mutant(
        "uns_organism_not_a_term",
        "organism_ontology_term_id",
        m.put("uns", "organism_ontology_term_id", "human"),
    ),
    Mutant(
        "uns_organism_mouse_human_genes",
        "var_names",
        m.several(
            m.put("uns", "organism_ontology_term_id", "NCBITaxon:10090"),
            m.obs("development_stage_ontology_term_id", "MmusDv:0000003"),
            m.obs("self_reported_ethnicity_ontology_term_id", "na"),
        ),
    ),
    Mutant(
        "uns_default_embedding_missing_key", "default_embedding", m.put("uns", "default_embedding", "X_pca")
    ),
    Mutant("uns_default_embedding_not_str", "default_embedding", m.put("uns", "default_embedding", 1)),
    Mutant(
        "uns_batch_condition_no_column",
        "batch_condition",
        m.put("uns", "batch_condition", np.array(["batch"])),
    ),
    Mutant("uns_batch_condition_not_list", "batch_condition", m.put("uns", "batch_condition", "donor_id")),
    Mutant(
        "uns_batch_condition_ok",
        "",
        m.put("uns", "batch_condition", np.array(["donor_id", "is_primary_data"])),
    ),
    Mutant(
        "uns_approx_distribution_bad",
        "X_approximate_distribution",
        m.put("uns", "X_approximate_distribution", "poisson"),
    ),
    Mutant("uns_no_approx_distribution_ok", "", m.drop("uns", "X_approximate_distribution")),
    Mutant("uns_reserved_schema_version", "schema_version", m.put("uns", "schema_version", "7.1.0")),
    Mutant("uns_reserved_citation", "citation", m.put("uns", "citation", "x")),
    Mutant("uns_reserved_schema_reference", "schema_reference", m.put("uns", "schema_reference", "x")),
    Mutant("uns_deprecated_x_normalization", "X_normalization", m.put("uns", "X_normalization", "log1p")),
    Mutant("uns_deprecated_default_field", "default_field", m.put("uns", "default_field", "cell_type")),
    Mutant("uns_empty_value", "extra", m.put("uns", "extra", np.array([], dtype=object))),
    Mutant("uns_colors_ok", "", m.put("uns", "donor_id_colors", np.array(["#ff0000"]))),
    Mutant(
        "uns_colors_portal_column", "cell_type_colors", m.put("uns", "cell_type_colors", np.array(["red"]))
    ),
    Mutant(
        "uns_colors_not_enough",
        "suspension_type_colors",
        m.several(
            m.obs("suspension_type", ["cell", "nucleus"]),
            m.put("uns", "suspension_type_colors", np.array(["red"])),
        ),
    ),
    Mutant(
        "uns_colors_mixed", "donor_id_colors", m.put("uns", "donor_id_colors", np.array(["red", "#00ff00"]))
    ),
    Mutant("uns_spatial_not_spatial_assay", "spatial", m.put("uns", "spatial", {"is_single": True})),
    # --- obsm ---
    Mutant("obsm_none", "obsm", m.obsm("X_umap", None, drop="X_umap")),
    Mutant("obsm_all_nan", "X_umap", m.obsm("X_umap", np.full((2, 2), np.nan))),
    Mutant("obsm_some_nan_ok", "", m.obsm("X_umap", np.array([[np.nan, 1.0], [2.0, 3.0]]))),
    Mutant("obsm_one_column", "X_umap", m.obsm("X_umap", np.ones((2, 1)))),
    Mutant("obsm_infinite", "X_umap", m.obsm("X_umap", np.array([[np.inf, 1.0], [2.0, 3.0]]))),
    Mutant("obsm_x_spatial", "X_spatial", m.obsm("X_spatial", np.ones((2, 2)))),
    Mutant("obsm_bad_suffix", "X_1umap", m.obsm("X_1umap", np.ones((2, 2)))),
    Mutant("obsm_only_unprefixed", "obsm", m.obsm("umap", np.ones((2, 2)), drop="X_umap")),
    Mutant("obsm_unprefixed_extra_ok", "", m.obsm("umap", np.ones((2, 2)))),
    Mutant("obsm_spatial_without_uns", "spatial", m.obsm("spatial", np.ones((2, 2)))),
    Mutant("obsm_int_ok", "", m.obsm("X_pca", np.ones((2, 3), dtype=np.int32))),
    Mutant("obsm_bool", "X_pca", m.obsm("X_pca", np.ones((2, 2), dtype=bool))),
    # --- var, raw.var ---
    Mutant(
        "var_missing_feature_is_filtered",
        "feature_is_filtered",
        lambda a: a.var.drop(columns="feature_is_filtered", inplace=True),
    ),
    Mutant("var_feature_is_filtered_not_bool", "feature_is_filtered", m.put("var", "feature_is_filtered", 0)),
    Mutant(
        "var_feature_is_filtered_true_ok",
        "",
        m.several(
            m.put("var", "feature_is_filtered", [True] + [False] * 6),
            m.x(lambda x: sp.csr_matrix(x * (np.arange(7) > 0))),
        ),
    ),
    Mutant("var_filtered_but_in_x_ok", "", m.put("var", "feature_is_filtered", [True] + [False] * 6)),
    Mutant("var_zero_in_x_not_filtered_ok", "", m.x(lambda x: sp.csr_matrix(x * (np.arange(7) > 0)))),
    Mutant(
        "var_filtered_without_raw",
        "feature_is_filtered",
        m.several(m.raw_in_x(), m.put("var", "feature_is_filtered", [True] + [False] * 6)),
    ),
    Mutant("var_reserved_feature_name", "feature_name", m.put("var", "feature_name", "TP53")),
    Mutant("var_reserved_feature_biotype", "feature_biotype", m.put("var", "feature_biotype", "gene")),
    Mutant(
        "var_reserved_feature_reference",
        "feature_reference",
        m.put("var", "feature_reference", "NCBITaxon:9606"),
    ),
    Mutant("var_reserved_feature_length", "feature_length", m.put("var", "feature_length", 100)),
    Mutant("var_reserved_feature_type", "feature_type", m.put("var", "feature_type", "protein_coding")),
    Mutant("var_unknown_gene", "var", m.var_names(["ENSG00000999999"])),
    Mutant("var_versioned_gene", "var", m.var_names(["ENSG00000127603.5"])),
    Mutant("var_symbol", "var", m.var_names(["TP53"])),
    Mutant("var_mouse_gene", "var", m.var_names(["ENSMUSG00000059552"])),
    Mutant("var_ercc_ok", "", m.var_names(["ERCC-00002"])),
    Mutant("var_duplicate_gene", "var", m.var_names(["ENSG00000141510"])),
    Mutant("raw_var_feature_is_filtered", "feature_is_filtered", m.raw_var("feature_is_filtered", False)),
    Mutant("raw_var_feature_biotype", "feature_biotype", m.raw_var("feature_biotype", "gene")),
    Mutant("raw_var_extra_ok", "", m.raw_var("extra", "x")),
    # --- matrices ---
    Mutant("raw_float64", "raw.X", m.raw(lambda x: sp.csr_matrix(x.astype(np.float64)))),
    Mutant("raw_non_integer", "raw.X", m.raw(lambda x: sp.csr_matrix(x + np.float32(0.5) * (x > 0)))),
    Mutant(
        "raw_negative", "raw.X", m.raw(lambda x: sp.csr_matrix(np.where(x == 2, -2, x).astype(np.float32)))
    ),
    Mutant(
        "raw_zero_row",
        "raw.X",
        m.raw(lambda x: sp.csr_matrix(x * np.array([[0.0], [1.0]], dtype=np.float32))),
    ),
    Mutant("raw_duplicate_rows", "raw.X", m.raw(lambda x: sp.csr_matrix(np.vstack([x[1], x[1]])))),
    Mutant("raw_dense_ok", "", m.raw(lambda x: x)),
    Mutant("raw_csc", "raw.X", m.raw(sp.csc_matrix)),
    Mutant("x_csc", "X", m.x(sp.csc_matrix)),
    Mutant("x_dense_sparse", "X", m.x(lambda x: x * (np.arange(7) < 2))),
    Mutant("x_float64_ok", "", m.x(lambda x: sp.csr_matrix(x.astype(np.float64)))),
    Mutant("no_raw_counts_in_x_ok", "", m.raw_in_x()),
    Mutant("no_raw_normalized_x", "X", m.no_raw_normalized),
    Mutant("no_raw_float64_counts", "X", m.raw_in_x(lambda x: sp.csr_matrix(x.astype(np.float64)))),
    Mutant("layers_ok", "", lambda a: a.layers.__setitem__("counts", a.raw.X.copy())),
    # --- spatial: a Visium slide with is_single True (the base), and bead-based spatial ---
    *(Mutant(name, rule, mutate, base="visium") for name, rule, mutate in SPATIAL),
    *(Mutant(name, rule, mutate) for name, rule, mutate in (*PERTURBATION, *ASSAY)),
    Mutant("nonspatial_tissue_positions", "array_row", m.put("obs", "array_row", [1, 2])),
)


def load_base(which: str, data: Path) -> ad.AnnData:
    if which == "visium":
        return visium(load_base("valid", data))
    name = "example_valid.h5ad" if which == "valid" else "example_invalid_CL.h5ad"
    return ad.read_h5ad(data / "cellxgene" / name)


def main(argv: list[str]) -> None:
    out = Path(argv[1])
    data = Path(argv[2]) if len(argv) > 2 else Path(__file__).parents[4] / "shared" / "data"
    out.mkdir(parents=True, exist_ok=True)
    bases = {which: load_base(which, data) for which in ("valid", "invalid", "visium")}
    for mutant in MUTANTS:
        build(mutant, bases[mutant.base], out / f"{mutant.name}.h5ad")
    print(f"{len(MUTANTS)} mutants in {out}")


if __name__ == "__main__":
    main(sys.argv)
