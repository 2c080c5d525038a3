"""census_info tables and var, computed from the plan and the counts, as the Census builder does."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from atlasprep.demo import _spec as spec
from atlasprep.demo._catalog import Catalog
from atlasprep.demo._datasets import ATLAS, COLLECTIONS
from atlasprep.demo._plan import CellPlan, RowCodes
from atlasprep.demo._schema import (
    CENSUS_SCHEMA_VERSION,
    DATASET_SCHEMA_VERSION,
    DATASETS_FIELDS,
    ORGANISMS_FIELDS,
    SUMMARY_CELL_COUNTS_FIELDS,
    SUMMARY_FIELDS,
    VAR_FIELDS,
    arrow_schema,
)
from atlasprep.demo._write import table

__all__ = ["info_tables", "var_table"]

ORGANISM = "homo_sapiens"  # the builder writes the experiment name here, "Homo sapiens" is its label

# summary_cell_counts categories: (category, obs column with the term ID or None)
_CATEGORIES = (
    ("assay", "assay_ontology_term_id"),
    ("cell_type", "cell_type_ontology_term_id"),
    ("disease", "disease_ontology_term_id"),
    ("self_reported_ethnicity", "self_reported_ethnicity_ontology_term_id"),
    ("sex", "sex_ontology_term_id"),
    ("suspension_type", None),
    ("tissue", "tissue_ontology_term_id"),
    ("tissue_general", "tissue_general_ontology_term_id"),
)


def var_table(
    genes: pd.DataFrame, nnz: npt.NDArray[np.int64], n_measured_obs: npt.NDArray[np.int64]
) -> pa.Table:
    return table(
        VAR_FIELDS,
        {
            "soma_joinid": np.arange(len(genes), dtype=np.int64),
            "feature_id": genes["feature_id"].to_numpy(dtype=str),
            "feature_name": genes["feature_name"].to_numpy(dtype=str),
            "feature_type": np.full(len(genes), "gene"),
            "feature_length": genes["feature_length"].to_numpy(dtype=np.int64),
            "nnz": nnz,
            "n_measured_obs": n_measured_obs,
        },
    )


def info_tables(
    cat: Catalog, plan: CellPlan, cells_per_dataset: npt.NDArray[np.int64]
) -> dict[str, pa.Table]:
    everything = plan.rows(0, plan.n_cells)
    organisms = {
        "soma_joinid": [0],
        "organism_ontology_term_id": ["NCBITaxon:9606"],
        "organism_label": ["Homo sapiens"],
        "organism": [ORGANISM],
    }
    return {
        "summary": _summary(plan, everything),
        "datasets": _datasets(cat, cells_per_dataset),
        "summary_cell_counts": _summary_cell_counts(
            cat,
            everything.is_primary,
            {
                "dataset": everything.dataset,
                "donor": everything.donor,
                "tissue": everything.tissue,
                "cell_type": everything.cell_type,
            },
        ),
        "organisms": table(ORGANISMS_FIELDS, organisms),
    }


def _summary(plan: CellPlan, everything: RowCodes) -> pa.Table:
    n_unique = int(everything.is_primary.sum())
    summary = [
        ("census_schema_version", CENSUS_SCHEMA_VERSION),
        ("census_build_date", spec.DEMO_VERSION),
        ("dataset_schema_version", DATASET_SCHEMA_VERSION),
        ("total_cell_count", str(plan.n_cells)),
        ("unique_cell_count", str(n_unique)),
        ("number_donors_homo_sapiens", str(len(np.unique(everything.donor)))),  # deprecated in 2.4.0
        ("atlasprep_demo_version", spec.DEMO_VERSION),
        ("atlasprep_demo_seed", str(plan.seed)),
    ]
    return table(
        SUMMARY_FIELDS,
        {
            "soma_joinid": np.arange(len(summary), dtype=np.int64),
            "label": [k for k, _ in summary],
            "value": [v for _, v in summary],
        },
    )


def _datasets(cat: Catalog, cells_per_dataset: npt.NDArray[np.int64]) -> pa.Table:
    collections = [COLLECTIONS[ds.collection] for ds in cat.datasets] + [COLLECTIONS[ATLAS.collection]]
    titles = [*(ds.title for ds in cat.datasets), ATLAS.title]
    n = len(titles)
    datasets = {
        "soma_joinid": np.arange(n, dtype=np.int64),
        "citation": [
            f"Synthetic data made by atlasprep (demo {spec.DEMO_VERSION}) in the CELLxGENE Census layout; "
            f"no publication. Collection: {c.name}."
            for c in collections
        ],
        "collection_id": list(cat.collection_ids),
        "collection_name": [c.name for c in collections],
        "collection_doi": [c.doi for c in collections],
        "collection_doi_label": [c.doi_label for c in collections],
        "dataset_id": list(cat.dataset_ids),
        "dataset_version_id": list(cat.dataset_version_ids),
        "dataset_title": titles,
        "dataset_h5ad_path": [f"{d}.h5ad" for d in cat.dataset_ids],
        "dataset_total_cell_count": cells_per_dataset,
    }
    return table(DATASETS_FIELDS, datasets)


def _summary_cell_counts(
    cat: Catalog, is_primary: npt.NDArray[np.bool_], keys: Mapping[str, npt.NDArray[np.int16]]
) -> pa.Table:
    records: list[tuple[str, str, str, int, int]] = [
        ("all", "na", "na", len(is_primary), int(is_primary.sum()))
    ]
    for category, id_name in _CATEGORIES:
        labels = cat.columns[category]
        terms = cat.columns[id_name] if id_name else labels  # suspension_type has no term IDs
        ids = terms.codes[keys[terms.key]]
        total = np.bincount(ids, minlength=len(terms.vocabulary))
        unique = np.bincount(ids[is_primary], minlength=len(total))
        label_of = np.zeros(len(terms.vocabulary), dtype=np.int64)
        label_of[terms.codes] = labels.codes  # both columns are keyed by the same entity
        for i in np.flatnonzero(total):
            term = terms.vocabulary[i] if id_name else "na"
            records.append((category, term, labels.vocabulary[label_of[i]], int(total[i]), int(unique[i])))
    records.sort(key=lambda r: (r[0], r[1], r[2]))
    categories = sorted({r[0] for r in records})
    schema = arrow_schema(SUMMARY_CELL_COUNTS_FIELDS, {"organism": 1, "category": len(categories)})
    return table(
        SUMMARY_CELL_COUNTS_FIELDS,
        {
            "soma_joinid": np.arange(len(records), dtype=np.int64),
            "organism": pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(len(records), dtype=np.int8)), pa.array([ORGANISM], pa.large_string())
            ),
            "category": pa.DictionaryArray.from_arrays(
                pa.array([categories.index(r[0]) for r in records], type=pa.int8()),
                pa.array(categories, pa.large_string()),
            ),
            "label": [r[2] for r in records],
            "ontology_term_id": [r[1] for r in records],
            "total_cell_count": [r[3] for r in records],
            "unique_cell_count": [r[4] for r in records],
        },
        schema,
    )
