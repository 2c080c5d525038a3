"""Everyday names that no pinned ontology release knows as a label or synonym.

Each entry exists because people (and Census tutorials) type the name and the ontology does
not carry it. tests/test_ontology.py checks that no alias is a label or synonym of its ontology
(an alias must never shadow the ontology) and that every target is a live term. Keys match
case-insensitively after whitespace normalization, and plurals ("immune cells") also match.

Left out on purpose: names the ontologies already resolve ("PBMC" is a CL synonym, "snRNA-seq"
an EFO synonym, "10x 3' v3" an EFO label, "T cells" a plural of a label), and names that mean
two things ("HSC": hematopoietic stem cell or hepatic stellate cell; "gut"; "adult", which
HsapDv and MmusDv both stage).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["ALIASES"]

# ontology -> everyday name -> term ID
ALIASES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "CL": MappingProxyType(
            {
                # The Census tutorials filter on "immune cell"; CL's term is leukocyte.
                "immune cell": "CL:0000738",
                "immune cells": "CL:0000738",
                # CL spells it "mucosal-associated invariant T cell" and lists no abbreviation.
                "MAIT cell": "CL:0000940",
                # CL has "innate lymphoid cell" but not the abbreviation every paper uses.
                "ILC": "CL:0001065",
                # CL's term is "malignant cell"; it lists no synonyms at all.
                "cancer cell": "CL:0001064",
            }
        ),
        "UBERON": MappingProxyType(
            {
                # GTEx and many atlases name the tissue "Adipose"; UBERON has "adipose tissue", "fat".
                "adipose": "UBERON:0001013",
            }
        ),
        "PATO": MappingProxyType(
            {
                # CELLxGENE records healthy donors' disease as PATO "normal".
                "healthy": "PATO:0000461",
            }
        ),
        "MONDO": MappingProxyType(
            {
                # MONDO has "COVID-19" and long forms, not the short form people type.
                "COVID": "MONDO:0100096",
            }
        ),
    }
)
