"""Which NCBITaxon terms lie below a few taxa, as a compact index cached on disk.

Placing a strain or subspecies (``NCBITaxon:10091``, *Mus musculus castaneus*) under its species
needs the ancestors of one term, but the NCBITaxon release takes ~12 s and ~1 GB to load. The
answer for every term at once is small (the descendants of the species the schema accepts with
their strains: a few dozen IDs), so it ships with atlasprep for the pinned release, and for any
other release is computed once and kept in atlasprep's cache (``$ATLASPREP_CACHE``, else the user
cache dir) as JSON.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from atlasprep._cache import cache_dir, note_written
from atlasprep._io import write_json_atomic
from atlasprep.ontology._parser import get_parser, ontology_versions

__all__ = ["SHIPPED", "build_taxa_below", "index_name", "taxa_below"]

# indexes built for the releases atlasprep pins ship with it; others are built into the cache
SHIPPED = Path(__file__).parent / "data"

log = logging.getLogger("atlasprep.ontology")


@functools.cache
def taxa_below(roots: tuple[str, ...]) -> Mapping[str, str]:
    """NCBITaxon term -> the first of ``roots`` among its ancestors (the roots themselves left out),
    for every term of the pinned release that has one (deprecated terms included, as the parser has them)."""
    name = index_name(roots)
    for path in (SHIPPED / name, cache_dir() / "ontology" / name):
        if path.exists():
            try:
                return MappingProxyType(json.loads(path.read_text()))
            except (OSError, ValueError):  # a damaged cache file is rebuilt
                log.warning("%s: unreadable, rebuilding it", path)
    path = cache_dir() / "ontology" / name
    found = build_taxa_below(roots, path)
    note_written(path)
    return MappingProxyType(found)


def index_name(roots: tuple[str, ...]) -> str:
    """The index's file name: the NCBITaxon release and a digest of the roots."""
    digest = hashlib.sha256("\n".join(roots).encode()).hexdigest()[:12]
    return f"NCBITaxon-{ontology_versions()['NCBITaxon']}-below-{digest}.json"


def build_taxa_below(roots: tuple[str, ...], path: Path) -> dict[str, str]:
    """Index the loaded NCBITaxon release and write the index to ``path``."""
    version = ontology_versions()["NCBITaxon"]
    log.info("indexing NCBITaxon %s below %s (once; ~15 s)", version, ", ".join(roots))
    found: dict[str, str] = {}
    for term, meta in get_parser().cxg_schema.ontology("NCBITaxon").items():
        ancestors = meta.get("ancestors") or {}
        root = next((r for r in roots if r in ancestors), None)
        if root is not None:
            found[term] = root
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, found)
    return found
