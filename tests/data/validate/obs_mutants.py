"""Mutants of the obs fields beyond the core ones, made from the valid fixture (see make_mutants.py):
experimental conditions and genetic perturbations (schema 7.1.0), and assays the raw-count rules
leave out (ATAC; multiome keeps them)."""

from __future__ import annotations

import anndata as ad
import mutations as m
import numpy as np
import pandas as pd
import scipy.sparse as sp

CONDITION = "experimental_condition_ontology_term_id"
_GUIDE = {
    "role": "targeting",
    "protospacer_sequence": "ACGTACGTACGTACGTAC",
    "protospacer_adjacent_motif": "3' NGG",
    "intended_features": {"ENSG00000141510": "TP53"},
}
_CONTROL = {
    "role": "control",
    "protospacer_sequence": "GGGGACGTACGTACGT",
    "protospacer_adjacent_motif": "3' NGG",
}


def perturbed(
    ids: tuple[str, str] = ("g1", "c1"),
    strategies: tuple[str, str] = ("CRISPR knockout screen", "control"),
    **guides: object,
) -> m.Mutation:
    """Two cells: the first with guide g1 (targeting TP53), the second with control guide c1."""

    def mutate(a: ad.AnnData) -> None:
        a.obs["genetic_perturbation_id"] = pd.Categorical(list(ids))
        a.obs["genetic_perturbation_strategy"] = pd.Categorical(list(strategies))
        found = {"g1": _GUIDE, "c1": _CONTROL, **guides}
        a.uns["genetic_perturbations"] = {k: v for k, v in found.items() if v is not None}

    return mutate


def _condition(*values: str) -> m.Mutation:
    return m.obs(CONDITION, list(values) if len(values) > 1 else values[0])


PERTURBATION: tuple[tuple[str, str, m.Mutation], ...] = (
    ("condition_chemical_ok", "", _condition("CHEBI:15377")),
    ("condition_na_and_term_ok", "", _condition("na", "CHEBI:15377")),
    ("condition_temperature_ok", "", _condition("EFO:0001702")),
    ("condition_protein_ok", "", _condition("anti-uniprot:P04637")),
    ("condition_several_ok", "", _condition("CHEBI:15377 || EFO:0002756")),
    ("condition_all_na", CONDITION, _condition("na")),
    ("condition_efo_other", CONDITION, _condition("EFO:0000001")),
    ("condition_chebi_role", CONDITION, _condition("CHEBI:23888")),
    ("condition_unsorted", CONDITION, _condition("EFO:0002756 || CHEBI:15377")),
    ("condition_not_a_term", CONDITION, _condition("caffeine")),
    ("perturbation_ok", "", perturbed()),
    (
        "perturbation_na_cell_ok",
        "",
        perturbed(ids=("g1", "na"), strategies=("CRISPR knockout screen", "no perturbations")),
    ),
    (
        "perturbation_without_uns",
        "genetic_perturbation_id",
        m.several(perturbed(), m.drop("uns", "genetic_perturbations")),
    ),
    (
        "perturbation_uns_without_obs",
        "genetic_perturbations",
        m.several(
            perturbed(),
            m.drop("obs", "genetic_perturbation_id"),
            m.drop("obs", "genetic_perturbation_strategy"),
        ),
    ),
    (
        "perturbation_all_na_ok",
        "",
        perturbed(ids=("na", "na"), strategies=("no perturbations",) * 2),
    ),
    ("perturbation_unknown_guide", "genetic_perturbation_id", perturbed(ids=("g2", "c1"))),
    ("perturbation_unsorted", "genetic_perturbation_id", perturbed(ids=("g1 || c1", "c1"))),
    (
        "perturbation_bad_strategy",
        "genetic_perturbation_strategy",
        perturbed(strategies=("knockout", "control")),
    ),
    (
        "perturbation_no_perturbation_strategy",
        "genetic_perturbation_strategy",
        perturbed(strategies=("no perturbations", "control")),
    ),
    ("perturbation_na_with_strategy", "genetic_perturbation_strategy", perturbed(ids=("g1", "na"))),
    (
        "perturbation_control_targeting",
        "genetic_perturbation_id",
        perturbed(strategies=("control", "control")),
    ),
    (
        "perturbation_bad_protospacer",
        "protospacer_sequence",
        perturbed(g1={**_GUIDE, "protospacer_sequence": "ACGU"}),
    ),
    ("perturbation_bad_role", "role", perturbed(g1={**_GUIDE, "role": "guide"})),
    (
        "perturbation_no_pam",
        "protospacer_adjacent_motif",
        perturbed(g1={k: v for k, v in _GUIDE.items() if k != "protospacer_adjacent_motif"}),
    ),
    ("perturbation_extra_key", "genetic_perturbations", perturbed(g1={**_GUIDE, "notes": "x"})),
    ("perturbation_na_guide", "genetic_perturbations", perturbed(na=_CONTROL)),
    (
        "perturbation_bad_feature",
        "intended_features",
        perturbed(g1={**_GUIDE, "intended_features": {"TP53": "TP53"}}),
    ),
)

ASSAY: tuple[tuple[str, str, m.Mutation], ...] = (
    (
        "atac_normalized_only_ok",
        "",
        m.several(m.obs("assay_ontology_term_id", "EFO:0030007"), m.no_raw_normalized),
    ),
    (
        "atac_float64_counts_ok",
        "",
        m.several(
            m.obs("assay_ontology_term_id", "EFO:0030007"),
            m.raw_in_x(lambda x: sp.csr_matrix(x.astype(np.float64))),
        ),
    ),
    (
        "multiome_normalized_only",
        "X",
        m.several(m.obs("assay_ontology_term_id", "EFO:0030059"), m.no_raw_normalized),
    ),
)
