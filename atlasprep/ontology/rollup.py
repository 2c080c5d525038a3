"""The Census ``tissue_general`` rollup, computed the way the Census builder does it."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable

from cellxgene_ontology_guide.curated_ontology_term_lists import get_curated_ontology_term_list
from cellxgene_ontology_guide.entities import CuratedOntologyTermList

from atlasprep.ontology._parser import get_parser

__all__ = ["tissue_general"]

log = logging.getLogger("atlasprep.ontology")


@functools.cache
def _tissue_general_list() -> tuple[str, ...]:
    return tuple(get_curated_ontology_term_list(CuratedOntologyTermList.TISSUE_GENERAL))


def tissue_general(tissue_ids: Iterable[str]) -> dict[str, str]:
    """Map each tissue term to its Census ``tissue_general`` term.

    The first hit of the term's high-level ancestors in the curated TISSUE_GENERAL order wins;
    a term with no hit (or a non-UBERON term, as for cell cultures) keeps itself, as the
    Census does. Those fallbacks are counted and logged, never silent.
    """
    parser = get_parser()
    order = _tissue_general_list()
    result: dict[str, str] = {}
    fallbacks: list[str] = []
    for term in dict.fromkeys(tissue_ids):
        hits = parser.get_high_level_terms(term, list(order)) if term.startswith("UBERON:") else []
        if hits:
            rank = {t: i for i, t in enumerate(order)}
            result[term] = min(hits, key=rank.__getitem__)
        else:
            result[term] = term
            fallbacks.append(term)
    if fallbacks:
        log.info(
            "tissue_general: %d term(s) have no curated rollup and keep themselves: %s",
            len(fallbacks),
            ", ".join(fallbacks),
        )
    return result
