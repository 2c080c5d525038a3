"""Ontology terms: resolve labels, synonyms, aliases and IDs; expand descendants; roll up tissues."""

from atlasprep.ontology._parser import SCHEMA_VERSION, get_parser, ontology_versions
from atlasprep.ontology.aliases import ALIASES
from atlasprep.ontology.resolve import (
    DEFAULT_ONTOLOGIES,
    FIELD_ONTOLOGIES,
    FieldName,
    MatchKind,
    ResolvedTerm,
    descendants,
    expand_terms,
    resolve_term,
    suggest,
    term_label,
)
from atlasprep.ontology.rollup import tissue_general

__all__ = [
    "ALIASES",
    "DEFAULT_ONTOLOGIES",
    "FIELD_ONTOLOGIES",
    "SCHEMA_VERSION",
    "FieldName",
    "MatchKind",
    "ResolvedTerm",
    "descendants",
    "expand_terms",
    "get_parser",
    "ontology_versions",
    "resolve_term",
    "suggest",
    "term_label",
    "tissue_general",
]
