"""Experimental conditions and genetic perturbations (schema 7.1.0), as cellxgene-schema 7.1.2
enforces them. ``experimental_condition_ontology_term_id``: "na", or sorted, distinct terms joined
by " || " — a chemical entity (CHEBI, not a subatomic particle nor a role), temperature, diet or
fasting (EFO), or a protein (UniProt, also as ``anti-uniprot:…``); not "na" everywhere.
``genetic_perturbation_id`` and ``genetic_perturbation_strategy`` in obs go with
``uns['genetic_perturbations']``: each ID a key of it (sorted, distinct, " || "), each entry a
guide (role, protospacer, PAM, intended Ensembl features), the strategy as the IDs allow.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pandas as pd

from atlasprep.harmonize._report import Found, blank, tally
from atlasprep.harmonize._schema_rules import ENSEMBL, ERCC
from atlasprep.harmonize._term_rules import TermRule, verdict

CONDITION = "experimental_condition_ontology_term_id"
_CONDITION_RULE = TermRule(
    ("CHEBI", "EFO", "uniprot"),
    exact=("EFO:0001702", "EFO:0002755", "EFO:0002756"),
    under=("CHEBI:24431", "EFO:0002755"),
    forbidden_under=("CHEBI:36342", "CHEBI:50906"),
    exceptions=("na",),
    multi=True,
    whole=("uniprot",),
    strip="anti-",
)
GP_ID, GP_STRATEGY, GP_UNS = (
    "genetic_perturbation_id",
    "genetic_perturbation_strategy",
    "genetic_perturbations",
)
NO_PERTURBATION = "no perturbations"
STRATEGIES = (
    NO_PERTURBATION,
    *("control", "CRISPR activation screen", "CRISPR interference screen"),
    *("CRISPR knockout mutant", "CRISPR knockout screen"),
)
_GUIDE_KEYS = ("role", "protospacer_sequence", "protospacer_adjacent_motif", "intended_features")
_GUIDE_RESERVED = ("derived_genomic_regions", "derived_features")
_GUIDE_PATTERNS = {
    "role": re.compile(r"^(control|targeting)$"),
    "protospacer_sequence": re.compile(r"^[ACGT]{14,22}$"),
    "protospacer_adjacent_motif": re.compile(r"^3' [ABCDGHKMNRSTVWY]+$"),
}
_GUIDE_ID = re.compile(r"^[^\s/,\"']+$")
_UNS = f"uns['{GP_UNS}']"


def check_conditions(obs: pd.DataFrame, problems: Found) -> None:
    if CONDITION not in obs:
        return
    n, values = len(obs), obs[CONDITION]
    if values.isna().any():
        problems.add(
            CONDITION, "has no value for some cells ('na' where there is none)", int(values.isna().sum())
        )
    if (values.astype(str) == "na").all():
        problems.add(CONDITION, "all 'na': drop the column when no cell had a condition", n)
        return
    for (value,), count in tally(obs, [CONDITION]):
        reason = None if blank(value) else verdict(str(value), _CONDITION_RULE)
        if reason is not None:
            problems.add(CONDITION, reason, count, (str(value),))


def check_perturbations(obs: pd.DataFrame, uns: Mapping[str, Any], problems: Found, warnings: Found) -> None:
    n, guides = len(obs), uns.get(GP_UNS)
    if GP_STRATEGY in obs and GP_ID not in obs:
        problems.add(GP_STRATEGY, f"only allowed with obs['{GP_ID}']", n)
    if guides is None:
        if GP_ID in obs:
            problems.add(GP_ID, f"needs {_UNS}, the guides its IDs name", n)
        return
    if not isinstance(guides, Mapping):
        problems.add(_UNS, "must be a dict of guides by ID", n)
        return
    _check_guides(guides, problems, n)
    if GP_ID not in obs or GP_STRATEGY not in obs:
        problems.add(_UNS, f"needs obs['{GP_ID}'] and obs['{GP_STRATEGY}']", n)
        return
    if (obs[GP_ID].astype(str) == "na").all():  # the schema text forbids it; cellxgene-schema 7.1.2 passes it
        warnings.add(GP_ID, "all 'na': drop it (and the guides) when no cell was perturbed", n)
    for column in (GP_ID, GP_STRATEGY):
        if not isinstance(obs[column].dtype, pd.CategoricalDtype):
            problems.add(column, f"must be categorical, not {obs[column].dtype}", n)
    for (ids, strategy), count in tally(obs, [GP_ID, GP_STRATEGY]):
        found = _pair_verdict(str(ids), str(strategy), guides)
        if found is not None:
            problems.add(found[0], found[1], count, (f"{ids} / {strategy}",))


def _pair_verdict(ids: str, strategy: str, guides: Mapping[str, Any]) -> tuple[str, str] | None:
    """(the column at fault, why) for one combination of IDs and strategy, or None."""
    if strategy not in STRATEGIES:
        return GP_STRATEGY, f"not one of {', '.join(STRATEGIES)}"
    if ids == "na":
        ok = strategy == NO_PERTURBATION
        return None if ok else (GP_STRATEGY, f"must be {NO_PERTURBATION!r} for cells without a guide ('na')")
    parts = ids.split(" || ")
    if parts != sorted(set(parts)):
        return GP_ID, "several IDs must be sorted, distinct and joined by ' || '"
    missing = [p for p in parts if p not in guides]
    if missing:
        return GP_ID, f"names guides {_UNS} lacks: {', '.join(missing[:3])}"
    if strategy == NO_PERTURBATION:
        return GP_STRATEGY, f"perturbed cells cannot have {NO_PERTURBATION!r}"
    if strategy == "control" and any(dict(guides[p]).get("role") != "control" for p in parts):
        return GP_ID, "strategy 'control' needs guides whose role is 'control'"
    return None


def _check_guides(guides: Mapping[str, Any], problems: Found, n: int) -> None:
    if "na" in guides:
        problems.add(_UNS, "'na' cannot be a guide ID", n)
    for key, guide in guides.items():
        where = f"{_UNS}['{key}']"
        if not _GUIDE_ID.match(str(key)):
            continue  # keys the schema's pattern does not take are not guides: not checked
        if not isinstance(guide, Mapping):
            problems.add(where, "must be a dict (role, protospacer_sequence, protospacer_adjacent_motif)", n)
            continue
        extra = sorted(set(guide) - set(_GUIDE_KEYS) - set(_GUIDE_RESERVED))
        if extra:
            problems.add(where, "holds keys the schema does not define", n, extra[:3])
        for name, pattern in _GUIDE_PATTERNS.items():
            value = guide.get(name)
            if not isinstance(value, str) or not pattern.match(value):
                problems.add(
                    where, f"{name} is missing or does not match {pattern.pattern}", n, (str(value),)
                )
        features = guide.get("intended_features")
        if features is not None and not _features_ok(features):
            problems.add(where, "intended_features must map Ensembl gene IDs to their names", n)


def _features_ok(features: Any) -> bool:
    if not isinstance(features, Mapping):
        return False
    return all(
        (ENSEMBL.match(str(k)) or ERCC.match(str(k))) and isinstance(v, str) for k, v in features.items()
    )
