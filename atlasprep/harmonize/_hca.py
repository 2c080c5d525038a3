"""HCA Tier 1 (``profile="hca"``): the extra obs fields and uns keys the HCA requires, filled in;
``cell_enrichment`` as live CL terms marked ``+``/``-`` (or "na"). Values outside the enumerations
of hca-validation-tools' ``hca_schema_definition.yaml`` (HCA anndata schema 1.0.0) are warnings:
the HCA Tier 1 text states no such lists.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from atlasprep.harmonize._report import Found, blank, check_missing, flag_values
from atlasprep.harmonize._term_rules import term_meta

HCA_OBS: tuple[str, ...] = (
    "sample_id",
    "library_id",
    "institute",
    "library_preparation_batch",
    "library_sequencing_run",
    "alignment_software",
    "manner_of_death",
    "sample_source",
    "sample_collection_method",
    "sampled_site_condition",
    "sample_preservation_method",
    "sequenced_fragment",
    "reference_genome",
    "cell_enrichment",
    "gene_annotation_version",
)
HCA_UNS: tuple[str, ...] = ("study_pi", "description", "contact_email")
# hca-validation-tools, hca_schema_definition.yaml (HCA anndata schema 1.0.0)
_HCA_ENUMS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "manner_of_death": ("0", "1", "2", "3", "4", "unknown", "not applicable"),
        "sample_source": ("surgical donor", "postmortem donor", "living organ donor"),
        "sample_collection_method": (
            *("brush", "scraping", "biopsy", "surgical resection", "blood draw", "body fluid", "other"),
        ),
        "sampled_site_condition": ("healthy", "diseased", "adjacent"),
        "sample_preservation_method": (
            *("fresh", "ambient temperature", "cut slide", "paraffin block", "frozen at -70C"),
            *("frozen at -80C", "frozen at -150C", "frozen in liquid nitrogen", "frozen in vapor phase"),
            *("RNAlater at 4C", "RNAlater at 25C", "RNAlater at -20C", "other"),
        ),
        "sequenced_fragment": ("3 prime tag", "5 prime tag", "full length", "probe-based"),
        "reference_genome": ("GRCh38", "GRCh37", "GRCm39", "GRCm38", "GRCm37", "not applicable"),
    }
)
_GENE_ANNOTATION_VERSION = re.compile(r"^(v(7[5-9]|[89]\d|10\d|11[01])|GCF_000001405\.(2[5-9]|3\d|40))$")
_ENRICHMENT_ITEM = re.compile(r"^CL:\d{7}[+-]$")


def check_hca(obs: pd.DataFrame, uns: Mapping[str, Any], problems: Found, warnings: Found) -> None:
    n = len(obs)
    for column in HCA_OBS:
        if column not in obs:
            problems.add(column, "required HCA Tier 1 column is missing", n)
        else:
            check_missing(obs, column, problems, "HCA Tier 1 field without a value for some cells")
    for key in HCA_UNS:
        value = uns.get(key)
        if value is None or np.size(value) == 0 or blank(value):
            problems.add(f"uns['{key}']", "required HCA Tier 1 key is missing or empty", n)
    if "cell_enrichment" in obs:
        flag_values(obs, "cell_enrichment", lambda value: _enrichment_verdict(str(value)), problems)
    for column, allowed in _HCA_ENUMS.items():
        if column in obs:
            flag_values(obs, column, _enum_verdict(allowed), warnings)
    if "gene_annotation_version" in obs:
        flag_values(obs, "gene_annotation_version", _annotation_verdict, warnings)


def _enum_verdict(allowed: tuple[str, ...]) -> Callable[[Any], str | None]:
    what = f"not a value hca-validation-tools accepts ({', '.join(allowed)})"
    return lambda value: None if str(value) in allowed else what


def _annotation_verdict(value: Any) -> str | None:
    if _GENE_ANNOTATION_VERSION.match(str(value)):
        return None
    return "not an Ensembl release v75–v111 nor a RefSeq GCF_000001405.25–40 (hca-validation-tools)"


def _enrichment_verdict(value: str) -> str | None:
    """``na``, or comma-separated CL terms each followed by + (enriched) or - (depleted)."""
    if value == "na":
        return None
    items = [item.strip() for item in value.split(",")]
    if not all(_ENRICHMENT_ITEM.match(item) for item in items):
        return "must be 'na' or CL terms each followed by '+' or '-' (e.g. 'CL:0000236+,CL:0000084-')"
    for item in items:
        release, meta = term_meta(item[:-1])
        if meta is None or meta.get("deprecated"):
            return f"names a CL term that is not a live term of {release}"
    return None
