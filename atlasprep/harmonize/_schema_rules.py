"""The CELLxGENE schema 7.1.0 rules as data: required and reserved fields, allowed values, the
accepted organisms, and per species the ontologies and branches that ID columns draw from.

Values follow the ``schema_definition.yaml`` that cellxgene-schema 7.1.2 ships; the term rules
built from these tables are in :mod:`._term_rules`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

REQUIRED_OBS: tuple[str, ...] = (
    "assay_ontology_term_id",
    "cell_type_ontology_term_id",
    "development_stage_ontology_term_id",
    "disease_ontology_term_id",
    "self_reported_ethnicity_ontology_term_id",
    "sex_ontology_term_id",
    "tissue_ontology_term_id",
    "tissue_type",
    "is_primary_data",
    "donor_id",
    "suspension_type",
)
TISSUE_TYPES = ("tissue", "organoid", "primary cell culture", "cell line")
SUSPENSION_TYPES = ("cell", "nucleus", "na")
CELL_LINE = "cell line"
# label column CELLxGENE derives -> the ID column it comes from
LABEL_COLUMNS: Mapping[str, str] = MappingProxyType(
    {
        name: f"{name}_ontology_term_id"
        for name in (
            "assay",
            "cell_type",
            "development_stage",
            "disease",
            "self_reported_ethnicity",
            "sex",
            "tissue",
        )
    }
)
UNS_ORGANISM = "uns['organism_ontology_term_id']"
# deprecated obs column -> what replaced it (the organism columns: see _obs_checks.check_organism)
DEPRECATED_OBS: Mapping[str, str] = MappingProxyType(
    {
        "ethnicity_ontology_term_id": "renamed self_reported_ethnicity_ontology_term_id",
        "ethnicity": "renamed self_reported_ethnicity",
    }
)
ORGANISM_OBS = ("organism_ontology_term_id", "organism")
# required column -> the deprecated column that held its values
PREDECESSORS: Mapping[str, str] = MappingProxyType(
    {"self_reported_ethnicity_ontology_term_id": "ethnicity_ontology_term_id"}
)
RESERVED_OBS = ("observation_joinid", "experimental_condition", "perturbation_types", *LABEL_COLUMNS)
RESERVED_VAR = ("feature_name", "feature_reference", "feature_biotype", "feature_length", "feature_type")
FORBIDDEN_RAW_VAR = ("feature_is_filtered",)
# obs columns that must be categorical (of strings)
CATEGORICAL_OBS = ("donor_id", "suspension_type", "tissue_type")
# required by the schema text, but cellxgene-schema 7.1.2 accepts a file without it (its pre-analysis
# rule skips the missing-column check): a warning, not a problem
LENIENT_OBS = ("cell_type_ontology_term_id",)
RESERVED_UNS = ("schema_version", "schema_reference", "citation", "is_pre_analysis")
APPROXIMATE_DISTRIBUTIONS = ("count", "normal")
# uns['<column>_colors'] for these must name the ID column instead
PORTAL_COLUMNS = (*LABEL_COLUMNS, "organism")
DEPRECATED_UNS = (
    *("X_normalization", "default_field", "layer_descriptions", "tags", "version", "contributors"),
    *("preprint_doi", "project_description", "project_links", "project_name", "publication_doi"),
)


# --- organisms: schema 7.1.0 accepts these taxa (and strains / subspecies of the second group) ---
HUMAN, MOUSE = "NCBITaxon:9606", "NCBITaxon:10090"
ORGANISMS: Mapping[str, str] = MappingProxyType(
    {
        HUMAN: "Homo sapiens",
        MOUSE: "Mus musculus",
        "NCBITaxon:7227": "Drosophila melanogaster",
        "NCBITaxon:7955": "Danio rerio",
        "NCBITaxon:6239": "Caenorhabditis elegans",
        "NCBITaxon:9541": "Macaca fascicularis",
        "NCBITaxon:9986": "Oryctolagus cuniculus",
        "NCBITaxon:9483": "Callithrix jacchus",
        "NCBITaxon:9595": "Gorilla gorilla gorilla",
        "NCBITaxon:9544": "Macaca mulatta",
        "NCBITaxon:9598": "Pan troglodytes",
        "NCBITaxon:9823": "Sus scrofa",
        "NCBITaxon:30608": "Microcebus murinus",
        "NCBITaxon:10116": "Rattus norvegicus",
    }
)
WITH_DESCENDANTS: tuple[str, ...] = (
    *("NCBITaxon:9541", "NCBITaxon:9544", MOUSE, "NCBITaxon:9986", "NCBITaxon:9598"),
    *("NCBITaxon:10116", "NCBITaxon:9823"),
)
FORBIDDEN_TAXA = ("NCBITaxon:2697049", "NCBITaxon:32630")
# species -> (atlasprep gene table, Ensembl gene ID prefix)
GENES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {HUMAN: ("homo_sapiens", "ENSG"), MOUSE: ("mus_musculus", "ENSMUSG")}
)
# species -> (development stage ontology, below these, or exactly these, but not these)
STAGES: Mapping[str, tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = MappingProxyType(
    {
        HUMAN: ("HsapDv", ("HsapDv:0000001",), (), ()),
        MOUSE: ("MmusDv", ("MmusDv:0000001",), (), ()),
        "NCBITaxon:7955": ("ZFS", ("ZFS:0100000",), (), ("ZFS:0000000",)),
        "NCBITaxon:7227": ("FBdv", ("FBdv:00007014", "FBdv:00005259"), (), ("FBdv:00007012",)),
        "NCBITaxon:6239": ("WBls", ("WBls:0000803", "WBls:0000804"), ("WBls:0000669",), ()),
    }
)
OTHER_STAGES = ("UBERON", ("UBERON:0000105",), (), ("UBERON:0000071",))
# non-mammal species -> (anatomy ontology, its cell root, its anatomy root), allowed beside CL / UBERON
ANATOMY: Mapping[str, tuple[str, str, str]] = MappingProxyType(
    {
        "NCBITaxon:7955": ("ZFA", "ZFA:0009000", "ZFA:0100000"),
        "NCBITaxon:7227": ("FBbt", "FBbt:00007002", "FBbt:10000000"),
        "NCBITaxon:6239": ("WBbt", "WBbt:0004017", "WBbt:0005766"),
    }
)
FORBIDDEN_CELL_TYPES = ("CL:0000255", "CL:0000257", "CL:0000548")
# assay -> suspension_type, first match wins: (values, assays and their descendants, exact assays)
SUSPENSION_BY_ASSAY: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    (
        ("cell", "nucleus"),
        ("EFO:0030080", "EFO:0010184", "EFO:0010010", "EFO:0009919"),
        (
            *("EFO:0008722", "EFO:0008780", "EFO:0700010", "EFO:0700011", "EFO:0030060"),
            *("EFO:0022490", "EFO:0030028"),
        ),
    ),
    (("nucleus",), ("EFO:0007045", "EFO:0002761"), ("EFO:0008720", "EFO:0030026")),
    (
        ("cell",),
        ("EFO:0008919", "EFO:0008853", "EFO:0008953"),
        ("EFO:0030002", "EFO:0008796", "EFO:0700003", "EFO:0700004", "EFO:0008679", "EFO:0008877"),
    ),
    (("na",), ("EFO:0008994",), ("EFO:0008992",)),
)

# obsm keys: "X_<suffix>" or "spatial" (shown in the Explorer), anything else a warning
EMBEDDING_KEY = re.compile(r"^[a-zA-Z][a-zA-Z0-9_.-]*$")
# spatial assays: Visium and its descendants, bead-based spatial (descendants only)
VISIUM, BEAD_SPATIAL = "EFO:0010961", "EFO:0920001"
MAX_SPARSITY = 0.5  # a matrix sparser than this must be stored CSR
# the raw-count rules hold unless an assay is ATAC-seq, methylation profiling (or below them) …
RAW_EXEMPT = ("EFO:0007045", "EFO:0008804", "EFO:0000751", "EFO:0008939")
# … and no assay is below both scATAC-seq and scRNA-seq (multiome)
RAW_ALSO = ("EFO:0010891", "EFO:0008913")

CURIE = re.compile(r"^([A-Za-z][A-Za-z0-9]*)[:_][A-Za-z0-9]+$")
ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{11}$")
ENSEMBL_VERSIONED = re.compile(r"^ENS[A-Z]*G\d{11}\.\d+(_PAR_Y)?$")
ERCC = re.compile(r"^ERCC-\d{5}$")
