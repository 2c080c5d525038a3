"""The Census layout the demo writes: names, Arrow types and TileDB settings, declared as data.

Pinned to Census schema 2.4.0, the first built from CELLxGENE dataset schema 7.0.0 (what
census_info/summary records; the terms themselves are validated against the ontology releases
:data:`atlasprep.ontology.SCHEMA_VERSION` pins). Types follow the Census builder
(``tools/cellxgene_census_builder/.../build_soma/globals.py``): strings are ``large_string``,
categorical columns Arrow dictionaries (TileDB enumerations) whose index type is the narrowest
that holds every category, exactly as the builder picks it from pandas' categorical codes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

__all__ = [
    "CENSUS_SCHEMA_VERSION",
    "DATASETS_FIELDS",
    "DATASET_SCHEMA_VERSION",
    "OBS_FIELDS",
    "OBS_PLATFORM_CONFIG",
    "ORGANISMS_FIELDS",
    "SUMMARY_CELL_COUNTS_FIELDS",
    "SUMMARY_FIELDS",
    "VAR_FIELDS",
    "VAR_PLATFORM_CONFIG",
    "X_PLATFORM_CONFIG",
    "X_TILE_EXTENT",
    "Field",
    "arrow_schema",
    "dictionary_index_type",
]

CENSUS_SCHEMA_VERSION = "2.4.0"
DATASET_SCHEMA_VERSION = "7.0.0"


@dataclass(frozen=True, slots=True, kw_only=True)
class Field:
    name: str
    type: pa.DataType  # the value type when ``dictionary``
    dictionary: bool = False


def _f(name: str, type_: pa.DataType, *, dictionary: bool = False) -> Field:
    return Field(name=name, type=type_, dictionary=dictionary)


_S = pa.large_string()

OBS_FIELDS: tuple[Field, ...] = (
    _f("soma_joinid", pa.int64()),
    *(
        _f(name, _S, dictionary=True)
        for name in (
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
        )
    ),
    _f("is_primary_data", pa.bool_()),
    _f("observation_joinid", _S),
    *(
        _f(name, _S, dictionary=True)
        for name in (
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
        )
    ),
    _f("raw_sum", pa.float64()),
    _f("nnz", pa.int64()),
    _f("raw_mean_nnz", pa.float64()),
    _f("raw_variance_nnz", pa.float64()),
    _f("n_measured_vars", pa.int64()),
)

VAR_FIELDS: tuple[Field, ...] = (
    _f("soma_joinid", pa.int64()),
    _f("feature_id", _S),
    _f("feature_name", _S),
    _f("feature_type", _S),
    _f("feature_length", pa.int64()),
    _f("nnz", pa.int64()),
    _f("n_measured_obs", pa.int64()),
)

SUMMARY_FIELDS: tuple[Field, ...] = (_f("soma_joinid", pa.int64()), _f("label", _S), _f("value", _S))

DATASETS_FIELDS: tuple[Field, ...] = (
    _f("soma_joinid", pa.int64()),
    _f("citation", _S),
    _f("collection_id", _S),
    _f("collection_name", _S),
    _f("collection_doi", _S),
    _f("collection_doi_label", _S),
    _f("dataset_id", _S),
    _f("dataset_version_id", _S),
    _f("dataset_title", _S),
    _f("dataset_h5ad_path", _S),
    _f("dataset_total_cell_count", pa.int64()),
)

SUMMARY_CELL_COUNTS_FIELDS: tuple[Field, ...] = (
    _f("soma_joinid", pa.int64()),
    _f("organism", _S, dictionary=True),
    _f("category", _S, dictionary=True),
    _f("label", _S),
    _f("ontology_term_id", _S),
    _f("total_cell_count", pa.int64()),
    _f("unique_cell_count", pa.int64()),
)

ORGANISMS_FIELDS: tuple[Field, ...] = (
    _f("soma_joinid", pa.int64()),
    _f("organism_ontology_term_id", _S),
    _f("organism_label", _S),
    _f("organism", _S),
)


def dictionary_index_type(n_categories: int) -> pa.DataType:
    """The index type pandas gives ``n_categories`` categorical codes (the Census builder's rule)."""
    for bits, type_ in ((8, pa.int8()), (16, pa.int16()), (32, pa.int32())):
        if n_categories < 2 ** (bits - 1) - 1:
            return type_
    return pa.int64()


def arrow_schema(fields: Sequence[Field], n_categories: Mapping[str, int] | None = None) -> pa.Schema:
    """The Arrow schema of ``fields``; ``n_categories`` sizes each dictionary column's index."""
    sizes = n_categories or {}
    return pa.schema(
        [
            pa.field(f.name, pa.dictionary(dictionary_index_type(sizes.get(f.name, 1)), f.type))
            if f.dictionary
            else pa.field(f.name, f.type)
            for f in fields
        ]
    )


# -- TileDB settings, after the Census builder's (levels lowered where noted) -----------------
def _zstd(level: int) -> dict[str, Any]:
    return {"_type": "ZstdFilter", "level": level}


# The builder uses zstd level 19 for obs strings; at 9 the demo builds several seconds faster
# per million cells and is a few percent larger.
OBS_PLATFORM_CONFIG: dict[str, Any] = {
    "tiledb": {
        "create": {
            "capacity": 2**16,
            "dims": {"soma_joinid": {"filters": ["DoubleDeltaFilter", _zstd(19)]}},
            "attrs": {
                **{
                    name: {"filters": ["ByteShuffleFilter", _zstd(9)]}
                    for name in ("raw_sum", "nnz", "raw_mean_nnz", "raw_variance_nnz", "n_measured_vars")
                },
                **{f.name: {"filters": [_zstd(19)]} for f in OBS_FIELDS if f.dictionary},
                "is_primary_data": {"filters": [_zstd(9)]},
                "observation_joinid": {"filters": [_zstd(9)]},
            },
            "offsets_filters": ["DoubleDeltaFilter", _zstd(19)],
            "allows_duplicates": True,
        }
    }
}

VAR_PLATFORM_CONFIG: dict[str, Any] = {
    "tiledb": {
        "create": {
            "capacity": 2**16,
            "dims": {"soma_joinid": {"filters": ["DoubleDeltaFilter", _zstd(19)]}},
            "attrs": {
                **{name: {"filters": [_zstd(19)]} for name in ("feature_id", "feature_name", "feature_type")},
                **{
                    name: {"filters": ["ByteShuffleFilter", _zstd(9)]}
                    for name in ("nnz", "n_measured_obs", "feature_length")
                },
            },
            "offsets_filters": ["DoubleDeltaFilter", _zstd(19)],
            "allows_duplicates": True,
        }
    }
}

# X is written in TileDB's global order, one tile row of cells at a time (see _expression), so
# TileDB never sorts: an unordered write of the same cells is ten times slower. zstd level 3
# rather than the builder's 9 halves the write time for a store about 6% larger.
X_TILE_EXTENT = 2048
X_PLATFORM_CONFIG: dict[str, Any] = {
    "tiledb": {
        "create": {
            "capacity": 2**16,
            "dims": {
                "soma_dim_0": {"tile": X_TILE_EXTENT, "filters": [_zstd(3)]},
                "soma_dim_1": {"tile": X_TILE_EXTENT, "filters": ["ByteShuffleFilter", _zstd(3)]},
            },
            "attrs": {"soma_data": {"filters": ["ByteShuffleFilter", _zstd(3)]}},
            "cell_order": "row-major",
            "tile_order": "row-major",
            "allows_duplicates": True,
        }
    }
}
