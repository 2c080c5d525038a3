"""The one pinned OntologyParser every stage shares."""

from __future__ import annotations

import functools

from cellxgene_ontology_guide.ontology_parser import OntologyParser

from atlasprep._names import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "get_parser", "ontology_versions"]

# SCHEMA_VERSION (defined in atlasprep._names, which imports nothing): the CELLxGENE schema whose
# ontology releases atlasprep resolves and validates against: the
# newest that cellxgene-ontology-guide ships. (The Census builds of 2025-26 were made from
# schema 7.0.0 data, but the package deprecated that set on 2026-04-06; the 7.1.0 releases are
# newer editions of the same ontologies, so the descendants of a term only grow.)


@functools.cache
def get_parser() -> OntologyParser:
    """The process-wide parser, pinned to :data:`SCHEMA_VERSION` (ontologies load lazily)."""
    return OntologyParser(schema_version=SCHEMA_VERSION)


def ontology_versions() -> dict[str, str]:
    """Ontology name -> release, for provenance records."""
    supported = get_parser().cxg_schema.supported_ontologies
    return {name: str(info["version"]) for name, info in sorted(supported.items())}
