"""The one pinned OntologyParser every stage shares."""

from __future__ import annotations

import functools

from cellxgene_ontology_guide.ontology_parser import OntologyParser

from atlasprep._names import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "get_parser", "ontology_versions", "release_ontologies"]

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


def release_ontologies() -> None:
    """Drop the parsed ontology files and the name tables built from them (UBERON alone is
    about 25 MB of Python objects): for a long step whose terms are resolved, so that the
    memory serves what it allocates next. A later lookup parses the files again."""
    from cellxgene_ontology_guide.supported_versions import clear_ontology_file_cache

    from atlasprep.ontology import _index

    clear_ontology_file_cache()
    for table in (_index.index_of, _index.loose_index_of, _index.name_index_of):
        table.cache_clear()
