"""The CELLxGENE obs checks: required columns present and filled, every ID column's terms (per
organism and ``tissue_type``), the enumerated columns, label columns against their IDs, unique obs
names; and the dataset's one organism, from ``uns`` (schema 7), obs, or failing both the var names.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from atlasprep.harmonize._report import (
    N_EXAMPLES,
    Found,
    Profile,
    blank,
    check_missing,
    flag_values,
    tally,
)
from atlasprep.harmonize._schema_rules import (
    CATEGORICAL_OBS,
    CELL_LINE,
    DEPRECATED_OBS,
    HUMAN,
    LABEL_COLUMNS,
    LENIENT_OBS,
    MOUSE,
    ORGANISM_OBS,
    ORGANISMS,
    PREDECESSORS,
    REQUIRED_OBS,
    RESERVED_OBS,
    SUSPENSION_TYPES,
    TISSUE_TYPES,
    UNS_ORGANISM,
)
from atlasprep.harmonize._slice import Slice
from atlasprep.harmonize._term_rules import (
    TERM_RULES,
    accepted_species,
    expected_label,
    organism_verdict,
    suspension_for,
    verdict,
)

log = logging.getLogger("atlasprep.harmonize")

_BY_ORGANISM = ("development_stage_ontology_term_id", "self_reported_ethnicity_ontology_term_id")


def _check_terms(obs: pd.DataFrame, column: str, species: str | None, problems: Found) -> None:
    source = column if column in obs else PREDECESSORS.get(column, "")
    if source not in obs or (species is None and column in _BY_ORGANISM):
        return
    suffix = f" (checked as {column})" if source != column else ""
    by = [source, "tissue_type"] if "tissue_type" in obs else [source]
    for values, n in tally(obs, by):
        value, tissue_type = values[0], (values[1] if len(values) > 1 else "tissue")
        if blank(value):
            continue  # counted by check_missing
        reason = verdict(str(value), TERM_RULES[column](str(tissue_type), species))
        if reason is not None:
            problems.add(source, reason + suffix, n, (str(value),))


def check_obs(obs: pd.DataFrame, species: str | None, problems: Found, warnings: Found) -> None:
    n = len(obs)
    for column in REQUIRED_OBS:
        if column in obs:
            check_missing(obs, column, problems)
            continue
        old = PREDECESSORS.get(column)
        hint = f"; the deprecated {old} holds its values: rename it" if old in obs else ""
        if column in LENIENT_OBS:
            what = "required column is missing (cellxgene-schema 7.1.2 still accepts the file)"
            warnings.add(column, what, n)
        else:
            problems.add(column, f"required column is missing{hint}", n)
    for column, note in DEPRECATED_OBS.items():
        if column in obs:
            problems.add(column, f"deprecated obs column: {note} (CELLxGENE rejects it)", n)
    for column in CATEGORICAL_OBS:
        if column not in obs:
            continue
        dtype = obs[column].dtype
        if not isinstance(dtype, pd.CategoricalDtype):
            problems.add(column, f"must be categorical, not {dtype}", n)
        elif not (dtype.categories.dtype == object or pd.api.types.is_string_dtype(dtype.categories)):
            problems.add(column, f"its categories must be strings, not {dtype.categories.dtype}", n)
    for column in TERM_RULES:
        _check_terms(obs, column, species, problems)
    _check_enums(obs, problems)
    _check_labels(obs, problems)
    dup = obs.index.duplicated(keep=False)
    if dup.any():
        problems.add(
            "obs_names", "obs names repeat: cells must be unique", int(dup.sum()), obs.index[dup].unique()
        )
    for column in RESERVED_OBS:
        if column in obs:
            problems.add(column, "reserved obs column: CELLxGENE writes it on upload (drop it)", n)


def _check_enums(obs: pd.DataFrame, problems: Found) -> None:
    """tissue_type, suspension_type (by assay), donor_id (by tissue_type), is_primary_data."""
    if "tissue_type" in obs:
        not_one_of = f"not one of {', '.join(TISSUE_TYPES)}"
        flag_values(obs, "tissue_type", lambda value: None if value in TISSUE_TYPES else not_one_of, problems)
    if "suspension_type" in obs:
        by = (
            ["suspension_type", "assay_ontology_term_id"]
            if "assay_ontology_term_id" in obs
            else ["suspension_type"]
        )
        for values, n in tally(obs, by):
            reason = _suspension_verdict(values[0], values[1] if len(values) > 1 else None)
            if reason is not None:
                problems.add("suspension_type", reason, n, (str(values[0]),))
    if "donor_id" in obs:
        by = ["donor_id", "tissue_type"] if "tissue_type" in obs else ["donor_id"]
        for values, n in tally(obs, by):
            cell_line = len(values) > 1 and values[1] == CELL_LINE
            if not blank(values[0]) and (values[0] == "na") != cell_line:
                what = "must be 'na' for tissue_type 'cell line'" if cell_line else "'na' only for cell lines"
                problems.add("donor_id", what, n, (str(values[0]),))
    column = obs.get("is_primary_data")
    if column is not None and (
        isinstance(column.dtype, pd.CategoricalDtype) or not pd.api.types.is_bool_dtype(column)
    ):
        shown = [str(v) for v in pd.unique(column)[:N_EXAMPLES]]
        problems.add("is_primary_data", f"must be boolean, not {column.dtype}", len(obs), shown)


def _suspension_verdict(value: Any, assay: Any) -> str | None:
    if blank(value):
        return None
    if value not in SUSPENSION_TYPES:
        return f"not one of {', '.join(SUSPENSION_TYPES)}"
    if assay is None or blank(assay):
        return None
    allowed = suspension_for(str(assay))
    if allowed is None or value in allowed:
        return None
    return f"not allowed for assay {assay}: it takes {' or '.join(allowed)}"


def _check_labels(obs: pd.DataFrame, problems: Found) -> None:
    """Label columns (cell_type, tissue …) must equal the labels of their ID columns."""
    for label_column, id_column in LABEL_COLUMNS.items():
        if label_column not in obs or id_column not in obs:
            continue
        for (term, label), n in tally(obs, [id_column, label_column]):
            expected = None if blank(term) else expected_label(str(term))
            if expected is not None and str(label) != expected:
                problems.add(
                    label_column, f"differs from the label of {id_column}", n, (f"{label!r} for {term}",)
                )


def check_organism(part: Slice, profile: Profile, problems: Found, warnings: Found) -> str | None:
    """The dataset's species (an ORGANISMS key) for the organism-dependent rules, or None."""
    obs, n, column = part.obs, len(part.obs), "organism_ontology_term_id"
    in_uns = part.uns.get(column)
    if in_uns is None and profile != "hca":
        where = f" ({column} sits per cell in obs, a deprecated place)" if column in obs else ""
        problems.add(UNS_ORGANISM, f"required key is missing: schema 7 keeps the organism in uns{where}", n)
    if column not in obs and profile == "hca":
        problems.add(column, "required column is missing: the HCA validator expects the organism in obs", n)
    if profile != "hca":  # the HCA validator still reads the organism from obs
        for old in ORGANISM_OBS:
            if old in obs:
                what = "deprecated obs column: schema 7 keeps the dataset's one organism in uns"
                problems.add(old, what, n)
    organism = None
    if in_uns is not None:
        reason = organism_verdict(str(in_uns))
        if reason is None:
            organism = str(in_uns)
        else:
            problems.add(UNS_ORGANISM, reason, n, (str(in_uns),))
    if column in obs:
        organism = _check_obs_organism(obs, organism, problems)
    if organism is None:
        organism = _organism_from_genes(part.var.index)
        if organism is None:
            problems.add(UNS_ORGANISM, "no organism: organism-dependent fields were not checked", n)
    return accepted_species(organism) if organism else None


def _check_obs_organism(obs: pd.DataFrame, organism: str | None, problems: Found) -> str | None:
    """Check the per-cell organism column; the dataset's organism (uns's, else the most common)."""
    column = "organism_ontology_term_id"
    counts: dict[str, int] = {}
    for (value,), n in tally(obs, [column]):
        reason = "has no value" if blank(value) else organism_verdict(str(value))
        if reason is None:
            counts[str(value)] = n
        else:
            problems.add(column, reason, n, (str(value),))
    if organism is None and counts:
        organism = max(counts, key=counts.__getitem__)
    others = {v: k for v, k in counts.items() if v != organism}
    if others and organism is not None:
        label = ORGANISMS.get(organism, organism)
        what = f"one organism per dataset: these cells name another than {organism} ({label})"
        problems.add(column, what, sum(others.values()), sorted(others, key=others.__getitem__, reverse=True))
    return organism


def _organism_from_genes(ids: pd.Index) -> str | None:
    """Human or mouse, by the Ensembl prefix most var names carry (None when neither dominates)."""
    n_mouse = int(ids.str.startswith("ENSMUSG").sum())
    n_human = int(ids.str.startswith("ENSG").sum())
    if max(n_human, n_mouse) * 2 <= len(ids):
        return None
    found = HUMAN if n_human > n_mouse else MOUSE
    log.info("no organism recorded: taking %s from the var names' Ensembl prefix", found)
    return found
