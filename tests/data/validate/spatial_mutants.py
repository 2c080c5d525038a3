"""Mutants of a Visium slide (``is_single`` True, built from the valid fixture) and of bead-based
spatial data: the spatial rules of the schema (see make_mutants.py)."""

from __future__ import annotations

import anndata as ad
import mutations as m
import numpy as np
import pandas as pd
import scipy.sparse as sp


def visium(valid: ad.AnnData, n_spots: int = 4992, out_of_tissue: int = 10) -> ad.AnnData:
    """A Visium V1 slide with is_single True built from the valid fixture: every spot of the
    4,992 (the first ``out_of_tissue`` out of tissue, of unknown cell type), distinct counts, the
    tissue positions, a 2000-pixel hires image, scale factors and the spatial embedding."""
    obs = valid.obs.iloc[np.zeros(n_spots, dtype=int)].copy()
    obs.index = [f"spot{i}" for i in range(n_spots)]
    spots = np.arange(n_spots)
    obs["assay_ontology_term_id"] = pd.Categorical(["EFO:0022857"] * n_spots)
    obs["suspension_type"] = pd.Categorical(["na"] * n_spots)
    obs["in_tissue"] = (spots >= out_of_tissue).astype(np.int64)
    obs["array_row"] = spots % 78
    obs["array_col"] = (spots // 78) % 128
    cell_type = np.where(spots < out_of_tissue, "unknown", "CL:0000066")
    obs["cell_type_ontology_term_id"] = pd.Categorical(cell_type)
    counts = np.ones((n_spots, valid.n_vars), dtype=np.float32)
    counts[:, 0] = spots + 1  # no two spots alike
    a = ad.AnnData(X=sp.csr_matrix(np.log1p(counts)), obs=obs, var=valid.var.copy())
    a.raw = ad.AnnData(X=sp.csr_matrix(counts), var=pd.DataFrame(index=valid.var_names))
    a.uns = {
        "title": "A Visium slide",
        "organism_ontology_term_id": "NCBITaxon:9606",
        "spatial": {"is_single": True, "slide1": library()},
    }
    a.obsm["spatial"] = np.stack([obs["array_row"], obs["array_col"]], axis=1).astype(np.float64)
    return a


def library(hires: tuple[int, ...] = (2000, 20, 3), dtype: type = np.uint8) -> dict[str, object]:
    return {
        "images": {"hires": np.zeros(hires, dtype=dtype)},
        "scalefactors": {"spot_diameter_fullres": 89.4, "tissue_hires_scalef": 0.17},
    }


def _spatial(**changes: object) -> m.Mutation:
    """Replace keys of uns['spatial'] (None: drop the key)."""

    def mutate(a: ad.AnnData) -> None:
        spatial = dict(a.uns["spatial"])
        for key, value in changes.items():
            if value is None:
                spatial.pop(key, None)
            else:
                spatial[key] = value
        a.uns["spatial"] = spatial

    return mutate


def _rows(keep: slice) -> m.Mutation:
    def mutate(a: ad.AnnData) -> ad.AnnData:
        return a[keep].copy()

    return mutate


def _spot_counts(row: int, value: float) -> m.Mutation:
    """Set one spot's raw counts to ``value`` everywhere."""

    def mutate(a: ad.AnnData) -> ad.AnnData:
        counts = a.raw.X.toarray()
        counts[row] = value
        raw = a.raw.to_adata()
        raw.X = sp.csr_matrix(counts)
        a.raw = raw
        return a

    return mutate


def _not_single(a: ad.AnnData) -> None:
    a.uns["spatial"] = {"is_single": False}
    for column in ("in_tissue", "array_row", "array_col"):
        del a.obs[column]
    a.obs["cell_type_ontology_term_id"] = pd.Categorical(["CL:0000066"] * a.n_obs)


SPATIAL: tuple[tuple[str, str, m.Mutation], ...] = (
    ("visium_ok", "", m.fixture),
    ("visium_generic_assay", "assay_ontology_term_id", m.obs("assay_ontology_term_id", "EFO:0010961")),
    (
        "visium_two_assays",
        "assay_ontology_term_id",
        lambda a: a.obs.__setitem__(
            "assay_ontology_term_id",
            pd.Categorical(np.where(np.arange(a.n_obs) % 2, "EFO:0022857", "EFO:0022858")),
        ),
    ),
    ("visium_is_single_missing", "is_single", _spatial(is_single=None)),
    ("visium_is_single_not_bool", "is_single", _spatial(is_single="yes")),
    ("visium_no_library", "library_id", _spatial(slide1=None)),
    ("visium_two_libraries", "uns['spatial']", _spatial(slide2=library())),
    ("visium_library_extra_key", "library_id", _spatial(slide1={**library(), "notes": "x"})),
    (
        "visium_no_hires",
        "images",
        _spatial(slide1={**library(), "images": {"fullres": np.zeros((9, 9, 3), np.uint8)}}),
    ),
    ("visium_hires_float", "hires", _spatial(slide1=library(dtype=np.float32))),
    ("visium_hires_small", "hires", _spatial(slide1=library(hires=(1000, 20, 3)))),
    ("visium_hires_gray", "hires", _spatial(slide1=library(hires=(2000, 20)))),
    (
        "visium_fullres_ok",
        "",
        _spatial(
            slide1={
                **library(),
                "images": {
                    "hires": np.zeros((2000, 20, 3), np.uint8),
                    "fullres": np.zeros((40, 30, 4), np.uint8),
                },
            }
        ),
    ),
    (
        "visium_scalefactor_int",
        "scalefactors",
        _spatial(
            slide1={**library(), "scalefactors": {"spot_diameter_fullres": 89, "tissue_hires_scalef": 0.17}}
        ),
    ),
    (
        "visium_scalefactor_missing",
        "scalefactors",
        _spatial(slide1={**library(), "scalefactors": {"spot_diameter_fullres": 89.4}}),
    ),
    ("visium_in_tissue_missing", "in_tissue", m.drop("obs", "in_tissue")),
    (
        "visium_array_row_out_of_range",
        "array_row",
        lambda a: a.obs.__setitem__("array_row", a.obs["array_row"] + 50),
    ),
    (
        "visium_array_col_float",
        "array_col",
        lambda a: a.obs.__setitem__("array_col", a.obs["array_col"].astype(float)),
    ),
    (
        "visium_out_of_tissue_cell_type",
        "cell_type_ontology_term_id",
        m.obs("cell_type_ontology_term_id", "CL:0000066"),
    ),
    ("visium_too_few_spots", "raw.X", _rows(slice(0, 4000))),
    ("visium_no_spatial_embedding", "obsm", m.obsm("spatial", None, drop="spatial")),
    ("visium_spatial_nan", "spatial", lambda a: a.obsm["spatial"].__setitem__((5, 0), np.nan)),
    ("visium_empty_spot_out_of_tissue_ok", "", _spot_counts(0, 0.0)),
    ("visium_empty_spot_in_tissue", "raw.X", _spot_counts(100, 0.0)),
    (
        "visium_not_single_ok",
        "",
        m.several(_not_single, lambda a: a.obs.__setitem__("is_primary_data", False)),
    ),
    ("visium_not_single_primary", "is_primary_data", _not_single),
    ("visium_not_single_positions", "in_tissue", m.several(_not_single, m.put("obs", "in_tissue", 1))),
    (
        "slideseq_ok",
        "",
        m.several(m.obs("assay_ontology_term_id", "EFO:0030062"), _not_single, _spatial(is_single=True)),
    ),
    (
        "slideseq_no_uns_spatial",
        "spatial",
        m.several(m.obs("assay_ontology_term_id", "EFO:0030062"), _not_single, m.drop("uns", "spatial")),
    ),
)
