"""Term resolutions kept between runs, so that a filtering command parses no ontology.

Resolving a filter's terms parses the ontologies they come from (UBERON alone takes 0.13 s of a
core; a label builds the name index on top) in every command that filters, and expanding them
walks the term graph for their descendants. What resolution finds depends only on the pinned
ontology releases (cellxgene-ontology-guide's, for :data:`SCHEMA_VERSION`) and on atlasprep's
own matching rules (aliases, normalization), so each resolved query and each term's descendants
are kept in the cache, in one small JSON file per (schema, ontology-guide version, atlasprep
version, digest of the matching rules' source):
``ontology-terms-<schema>/<guide>-<atlasprep>-<rules>.json``, written as the process ends.
A refused query is kept too, with its message and the terms it suggests (or the candidates an
ambiguous name matched), so that harmonize re-run over the same unmapped labels computes no
fuzzy match again (rapidfuzz's version is part of that entry: its scores rank the suggestions).
A broken file is ignored and written again; a cache that cannot be written leaves the answers
right, only not kept.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import importlib.metadata
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atlasprep.ontology.resolve import ResolvedTerm

__all__ = [
    "descendants_kept",
    "flush",
    "keep_descendants",
    "keep_refused",
    "keep_resolved",
    "refused_kept",
    "resolved_kept",
]

_LOCK = threading.Lock()
_SECTIONS = ("resolved", "descendants", "refused")


# the modules whose rules decide what a query resolves to (with the ontologies themselves)
_RULES = ("resolve.py", "_index.py", "_fuzzy.py", "aliases.py")


@functools.cache
def _name() -> str | None:
    """The file's name: the schema, the ontology guide's version and atlasprep's, and a digest
    of the matching rules' source (an edited alias or rule in a checkout starts a new file);
    None where the guide's version cannot be read (nothing is kept then)."""
    from atlasprep import __version__
    from atlasprep._names import SCHEMA_VERSION

    try:
        guide = importlib.metadata.version("cellxgene-ontology-guide")
    except importlib.metadata.PackageNotFoundError:
        return None
    rules = _rules_digest(Path(__file__).parent)
    return f"ontology-terms-{SCHEMA_VERSION}/{guide}-{__version__}-{rules}.json"


def _rules_digest(folder: Path) -> str:
    rules = hashlib.sha256()
    for name in _RULES:
        rules.update((folder / name).read_bytes())
    return rules.hexdigest()[:12]


def _path() -> Path | None:
    """The file for the pinned releases and these rules, in the cache dir of the moment; None
    when no cache dir can be made."""
    from atlasprep._cache import cache_file

    name = _name()
    return cache_file(name) if name is not None else None


# the entries of each file, read once per process (empty where there is none or it is broken)
_TABLES: dict[Path | None, dict[str, dict[str, Any]]] = {}


def _table() -> tuple[Path | None, dict[str, dict[str, Any]]]:
    path = _path()
    with _LOCK:
        if path not in _TABLES:
            _TABLES[path] = _read(path)
        return path, _TABLES[path]


def _read(path: Path | None) -> dict[str, dict[str, Any]]:
    empty: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    if path is None:
        return empty
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return empty
    if not isinstance(found, dict) or not all(isinstance(found.get(n, {}), dict) for n in _SECTIONS):
        return empty
    return {name: found.get(name, {}) for name in _SECTIONS}


# a kept resolution: the ResolvedTerm's fields but the query, with their JSON types
_FIELDS = {"term_id": str, "label": str, "ontology": str, "how": str, "n_descendants": int}


def _query_key(query: str, searched: Sequence[str]) -> str:
    return json.dumps([query, list(searched)])


def resolved_kept(query: str, searched: Sequence[str]) -> dict[str, Any] | None:
    """The fields of the :class:`~atlasprep.ontology.ResolvedTerm` that ``query`` resolved to
    among ``searched`` in an earlier run, or None."""
    entry = _table()[1]["resolved"].get(_query_key(query, searched))
    if not isinstance(entry, dict) or {k: type(v) for k, v in entry.items()} != _FIELDS:
        return None
    return entry


def keep_resolved(query: str, searched: Sequence[str], term: ResolvedTerm) -> None:
    """Keep what ``query`` resolved to among ``searched`` (the term's fields but the query)."""
    _keep("resolved", _query_key(query, searched), {name: getattr(term, name) for name in _FIELDS})


def refused_kept(query: str, searched: Sequence[str]) -> tuple[str, str, tuple[str, ...]] | None:
    """(kind: "unknown" or "ambiguous", message, term IDs: suggestions or candidates) of a query
    refused among ``searched`` in an earlier run, or None."""
    entry = _table()[1]["refused"].get(_query_key(query, searched))
    if (
        not isinstance(entry, list)
        or len(entry) != 4
        or entry[0] not in ("unknown", "ambiguous")
        or not isinstance(entry[1], str)
        or not isinstance(entry[2], list)
        or not all(isinstance(t, str) for t in entry[2])
        or entry[3] != _fuzzy_version()
    ):
        return None
    return entry[0], entry[1], tuple(entry[2])


def keep_refused(
    query: str, searched: Sequence[str], kind: str, message: str, term_ids: Sequence[str]
) -> None:
    _keep("refused", _query_key(query, searched), [kind, message, list(term_ids), _fuzzy_version()])


@functools.cache
def _fuzzy_version() -> str:
    try:
        return importlib.metadata.version("rapidfuzz")
    except importlib.metadata.PackageNotFoundError:
        return ""


def descendants_kept(term_id: str, include_self: bool) -> tuple[str, ...] | None:
    """The term's descendants as an earlier run found them, or None."""
    entry = _table()[1]["descendants"].get(f"{term_id} {int(include_self)}")
    if not isinstance(entry, list) or not all(isinstance(t, str) for t in entry):
        return None
    return tuple(entry)


def keep_descendants(term_id: str, include_self: bool, found: Sequence[str]) -> None:
    _keep("descendants", f"{term_id} {int(include_self)}", list(found))


def _keep(section: str, key: str, value: Any) -> None:
    """Add an entry: in memory now, in the file when the process ends (:func:`flush`, once for
    all the entries a run adds: harmonize resolves hundreds of labels)."""
    global _FLUSH_REGISTERED
    path, table = _table()
    with _LOCK:
        table[section][key] = value
        if path is None:
            return
        _PENDING.add(path)
        if not _FLUSH_REGISTERED:
            atexit.register(flush)
            _FLUSH_REGISTERED = True


_PENDING: set[Path] = set()  # files with entries not written yet
_FLUSH_REGISTERED = False


def flush() -> None:
    """Write the new entries, merged with what other runs kept since this one read the file
    (written whole, atomically: a run that ends meanwhile loses nothing but its own entries)."""
    from atlasprep._cache import keep_json

    with _LOCK:
        for path in sorted(_PENDING):
            on_disk = _read(path)
            for name in _SECTIONS:
                on_disk[name].update(_TABLES[path][name])
            keep_json(path, on_disk)
        _PENDING.clear()
