"""The spec resolved once per process: IDs, ontology labels, tissue_general, obs vocabularies, genes."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from atlasprep.demo import _spec as spec
from atlasprep.demo._datasets import ATLAS, DATASETS
from atlasprep.ontology import get_parser, tissue_general
from atlasprep.reference import gene_table

__all__ = ["Catalog", "ObsColumn", "catalog", "gene_universe"]

_NAMESPACE = uuid.UUID("5b1f0e1e-8a54-4f43-9d4c-7a1a5e0c2d17")  # atlasprep demo, fixed forever

# obs columns keyed by the entity that determines them: a cell's donor fixes its dataset's
# assay and suspension, its sex, stage, ethnicity and disease; tissue and cell type are per cell.
_BY_DONOR = (
    "assay",
    "assay_ontology_term_id",
    "development_stage",
    "development_stage_ontology_term_id",
    "disease",
    "disease_ontology_term_id",
    "donor_id",
    "self_reported_ethnicity",
    "self_reported_ethnicity_ontology_term_id",
    "sex",
    "sex_ontology_term_id",
    "suspension_type",
)
_BY_TISSUE = (
    "tissue",
    "tissue_ontology_term_id",
    "tissue_type",
    "tissue_general",
    "tissue_general_ontology_term_id",
)
_BY_CELL_TYPE = ("cell_type", "cell_type_ontology_term_id")


@dataclass(frozen=True, slots=True, kw_only=True)
class ObsColumn:
    """One categorical obs column: its vocabulary and how a cell's entity index maps into it."""

    name: str
    key: str  # "dataset" | "donor" | "tissue" | "cell_type"
    vocabulary: tuple[str, ...]  # sorted
    codes: npt.NDArray[np.int32]  # entity index -> position in vocabulary


@dataclass(frozen=True, slots=True, kw_only=True)
class Catalog:
    datasets: tuple[spec.DatasetSpec, ...]  # primary datasets; the atlas has index len(datasets)
    dataset_ids: tuple[str, ...]  # one per dataset, the atlas last
    dataset_version_ids: tuple[str, ...]
    collection_ids: tuple[str, ...]
    donors: tuple[spec.DonorSpec, ...]  # all donors, dataset by dataset
    donor_dataset: npt.NDArray[np.int32]
    tissues: tuple[str, ...]  # UBERON IDs in spec order
    cell_types: tuple[str, ...]  # CL IDs in CELL_TYPES order
    labels: dict[str, str]  # term ID (or " || "-joined IDs) -> label
    tissue_general: dict[str, str]  # tissue ID -> tissue_general ID
    columns: dict[str, ObsColumn]

    @property
    def atlas_index(self) -> int:
        return len(self.datasets)

    def term_ids(self) -> set[str]:
        """Every ontology term ID the demo writes (multi-valued fields split)."""
        ids: set[str] = set()
        for column in self.columns.values():
            if column.name.endswith("_ontology_term_id"):
                ids.update(t for value in column.vocabulary for t in value.split(" || "))
        return ids - {"unknown"}


def demo_uuid(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts)))


def _obs_columns(
    dataset_ids: tuple[str, ...],
    donors: tuple[spec.DonorSpec, ...],
    owner: list[spec.DatasetSpec],
    tissues: tuple[str, ...],
    cell_types: tuple[str, ...],
    general: Mapping[str, str],
    label: Callable[[str], str],
) -> dict[str, ObsColumn]:
    """The obs columns, each a sorted vocabulary and one code per dataset, donor, tissue or cell type."""
    columns: dict[str, ObsColumn] = {}

    def add(name: str, key: str, values: list[str]) -> None:
        vocabulary = tuple(sorted(set(values)))
        index = {v: i for i, v in enumerate(vocabulary)}
        codes = np.array([index[v] for v in values], dtype=np.int32)
        columns[name] = ObsColumn(name=name, key=key, vocabulary=vocabulary, codes=codes)

    add("dataset_id", "dataset", list(dataset_ids))
    donor_values: dict[str, Callable[[spec.DonorSpec, spec.DatasetSpec], str]] = {
        "assay_ontology_term_id": lambda d, ds: ds.assay,
        "development_stage_ontology_term_id": lambda d, ds: d.development_stage,
        "disease_ontology_term_id": lambda d, ds: d.disease,
        "self_reported_ethnicity_ontology_term_id": lambda d, ds: d.ethnicity,
        "sex_ontology_term_id": lambda d, ds: d.sex,
    }
    for name, get in donor_values.items():
        ids = [get(d, ds) for d, ds in zip(donors, owner, strict=True)]
        add(name, "donor", ids)
        add(name.removesuffix("_ontology_term_id"), "donor", [label(t) for t in ids])
    add("donor_id", "donor", [d.donor_id for d in donors])
    add("suspension_type", "donor", [ds.suspension_type for ds in owner])
    add("tissue_ontology_term_id", "tissue", list(tissues))
    add("tissue", "tissue", [label(t) for t in tissues])
    add("tissue_type", "tissue", ["tissue"] * len(tissues))
    add("tissue_general_ontology_term_id", "tissue", [general[t] for t in tissues])
    add("tissue_general", "tissue", [label(general[t]) for t in tissues])
    add("cell_type_ontology_term_id", "cell_type", list(cell_types))
    add("cell_type", "cell_type", [label(t) for t in cell_types])
    assert set(columns) == {"dataset_id", *_BY_DONOR, *_BY_TISSUE, *_BY_CELL_TYPE}
    return columns


@functools.cache
def catalog() -> Catalog:
    parser = get_parser()
    datasets = DATASETS
    donors = tuple(d for ds in datasets for d in ds.donors)
    donor_dataset = np.array([i for i, ds in enumerate(datasets) for _ in ds.donors], dtype=np.int32)
    tissues = tuple(dict.fromkeys(t for d in donors for t, _ in d.tissues))
    cell_types = tuple(spec.CELL_TYPES)
    general = tissue_general(tissues)

    def label(term: str) -> str:
        if term in ("unknown", "cell", "nucleus", "tissue"):
            return term
        return " || ".join(parser.get_term_label(t) for t in term.split(" || "))

    keys = [ds.key for ds in datasets] + [ATLAS.key]
    collections = [ds.collection for ds in datasets] + [ATLAS.collection]
    dataset_ids = tuple(demo_uuid("dataset", k) for k in keys)
    owner = [datasets[i] for i in donor_dataset]
    columns = _obs_columns(dataset_ids, donors, owner, tissues, cell_types, general, label)

    labels = {t: label(t) for c in columns.values() if c.name.endswith("_term_id") for t in c.vocabulary}
    return Catalog(
        datasets=datasets,
        dataset_ids=dataset_ids,
        dataset_version_ids=tuple(demo_uuid("dataset-version", k, "1") for k in keys),
        collection_ids=tuple(demo_uuid("collection", c) for c in collections),
        donors=donors,
        donor_dataset=donor_dataset,
        tissues=tissues,
        cell_types=cell_types,
        labels=labels,
        tissue_general=general,
        columns=columns,
    )


@functools.cache
def gene_universe() -> pd.DataFrame:
    """The demo's var: protein-coding, IG/TR, mitochondrial genes and the named lncRNAs.

    Columns feature_id, feature_name, feature_length, feature_biotype, sorted by feature_id.
    "Named" lncRNAs are those with a plain symbol (no LINC, clone or pseudogene-style name),
    about 700 of them, MALAT1, NEAT1 and XIST among them.
    """
    genes = gene_table("homo_sapiens").genes
    name = genes["feature_name"]
    biotype = genes["feature_biotype"]
    named_lnc = (
        (biotype == "lncRNA")
        & name.str.fullmatch(r"[A-Z][A-Z0-9]*")
        & ~name.str.match(r"LINC|ENSG")
        & ~name.str.fullmatch(r".*P\d*")
    )
    immune = biotype.str.fullmatch(r"(IG|TR)_[CDJV]_gene")  # immunoglobulin and T-cell receptor genes
    keep = (biotype == "protein_coding") | immune | name.str.startswith("MT-") | named_lnc
    universe = genes[keep].sort_index().reset_index()
    return universe[["feature_id", "feature_name", "feature_length", "feature_biotype"]]
