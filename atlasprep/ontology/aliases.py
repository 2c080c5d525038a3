"""Everyday names that no pinned ontology release knows as a label or synonym.

Each entry exists because people (and Census tutorials) type the name and the ontology does
not carry it. tests/test_ontology.py checks that no alias is a label or synonym of its ontology
(an alias must never shadow the ontology) and that every target is a live term. Keys match
case-insensitively after whitespace normalization, and plurals ("immune cells") also match.

Left out on purpose: names the ontologies already resolve ("PBMC" is a CL synonym, "snRNA-seq"
an EFO synonym, "10x 3' v3" an EFO label, "T cells" a plural of a label), and names that mean
two things ("HSC": hematopoietic stem cell or hepatic stellate cell). "adult" names a stage of
each organism's ontology (HsapDv's adult stage, MmusDv's mature stage): a filter searches only
its organism's, so it resolves there (``terms adult`` across both is refused as ambiguous).
"CD4+ T cell" and its plurals are covered by the "CD4-positive T cell" entry (normalization
turns "CD4+" into "CD4-positive").
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
                # Everyone writes "CD4 T cells" / "CD4+ T cells" for CL's "CD4-positive, alpha-beta
                # T cell" (CL has no plain CD4-positive T cell), and the same for CD8.
                "CD4 T cell": "CL:0000624",
                "CD4-positive T cell": "CL:0000624",
                "CD8 T cell": "CL:0000625",
                "CD8-positive T cell": "CL:0000625",
            }
        ),
        "UBERON": MappingProxyType(
            {
                # GTEx and many atlases name the tissue "Adipose"; UBERON has "adipose tissue", "fat".
                "adipose": "UBERON:0001013",
                # The Gut Cell Atlas and most papers say "gut" for the digestive tract; UBERON
                # lists it only as a related synonym, which it does not match on.
                "gut": "UBERON:0001555",
            }
        ),
        "PATO": MappingProxyType(
            {
                # CELLxGENE records healthy donors' disease as PATO "normal".
                "healthy": "PATO:0000461",
            }
        ),
        "EFO": MappingProxyType(
            {
                # "10x v3" / "10x v2" mean the 3' chemistries (the 5' kits are always named so).
                "10x v3": "EFO:0009922",
                "10x v2": "EFO:0009899",
                "10x Chromium v3": "EFO:0009922",
                "Smartseq2": "EFO:0008931",
            }
        ),
        "HsapDv": MappingProxyType({"adult": "HsapDv:0000258"}),
        "MmusDv": MappingProxyType({"adult": "MmusDv:0000110"}),
        "MONDO": MappingProxyType(
            {
                # MONDO has "COVID-19" and long forms, not the short form people type.
                "COVID": "MONDO:0100096",
            }
        ),
    }
)
