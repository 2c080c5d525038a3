"""Everyday names that no pinned ontology release knows as a label or synonym.

Each entry exists because people (and Census tutorials) type the name and the ontology does
not carry it; a test checks that no alias shadows a real label or synonym and that every target
is a live term. Keys are matched case-insensitively after whitespace normalization.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["ALIASES"]

# ontology -> everyday name -> term ID
ALIASES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "CL": {
            # The Census tutorials filter on "immune cell"; CL's term is leukocyte.
            "immune cell": "CL:0000738",
            "immune cells": "CL:0000738",
        },
        "PATO": {
            # Disease "normal" is what CELLxGENE records for healthy donors.
            "healthy": "PATO:0000461",
        },
        "MONDO": {
            # Common short form; MONDO has only "COVID-19" and long forms.
            "COVID": "MONDO:0100096",
        },
    }
)
