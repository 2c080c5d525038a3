"""Labels of many terms at once, looked up ahead on a background thread while a build runs.

A token store names every ontology term it holds (its manifest's ``labels``). A build starts
the lookup as soon as it has seen the terms (:func:`labels_ahead`, from its first batch of
cells) and collects the labels when it writes its manifest (:func:`labels_of`).

Parsing the ontologies that hold them (MONDO, UBERON, EFO, CL … of the demo cells) took 0.45 s
of a core in every build, so each ontology's labels (term ID -> label, the parser's own, for
every term, deprecated ones included) are kept in the cache, one small JSON file per pinned
release (``ontology-labels-<schema>/<ONTOLOGY>-<release>.json``), made from the parsed ontology
the first time it is needed: 97 demo terms then take 0.03 s.
"""

from __future__ import annotations

import functools
import json
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from pathlib import Path

__all__ = ["is_term_id", "label_table", "labels_ahead", "labels_of"]

# term ID -> its label (None: a term none of the shipped ontologies has), as looked up ahead
_AHEAD: dict[str, Future[str | None]] = {}
_LOCK = threading.Lock()


def is_term_id(value: str) -> bool:
    """Whether a value is a term ID to label (``CL:0000057``), not a schema value (``unknown``,
    ``na``) or a special token (``<unk>``)."""
    return ":" in value and not value.startswith("<")


def labels_ahead(term_ids: Iterable[str]) -> None:
    """Start looking up the labels of these term IDs (those not asked for before) on a daemon
    thread: a command that fails before it needs them does not wait for it."""
    with _LOCK:
        wanted = {t for t in term_ids if is_term_id(t) and t not in _AHEAD}
        new: dict[str, Future[str | None]] = {t: Future() for t in wanted}
        _AHEAD.update(new)
    if new:
        threading.Thread(target=_look_up, args=(new,), name="atlasprep-labels", daemon=True).start()


def labels_of(term_ids: Iterable[str]) -> dict[str, str]:
    """Term ID -> label for those of ``term_ids`` that are term IDs of a shipped ontology
    (others, such as an ID of a newer release or of FMA, are left out), sorted by ID."""
    wanted = {t for t in term_ids if is_term_id(t)}
    labels_ahead(wanted)  # (those not asked for before: looked up now)
    found = {}
    for term in sorted(wanted):
        with _LOCK:
            future = _AHEAD[term]
        label = future.result()
        if label is not None:
            found[term] = label
    return found


def _look_up(futures: dict[str, Future[str | None]]) -> None:
    from atlasprep.ontology.resolve import _ontology_of

    by_ontology: dict[str, list[str]] = defaultdict(list)
    for term in futures:
        by_ontology[_ontology_of(term)].append(term)
    for ontology, terms in sorted(by_ontology.items()):
        try:
            table = label_table(ontology)
        except BaseException as exc:  # an ontology that fails to load: raised where it is read
            for term in terms:
                futures[term].set_exception(exc)
            continue
        for term in terms:  # (None: a term none of the shipped ontologies has)
            futures[term].set_result(table.get(term) if table is not None else None)


@functools.cache
def label_table(ontology: str) -> Mapping[str, str] | None:
    """Term ID -> label of every term of a shipped ontology (its pinned release; None for an
    ontology not shipped): from the cache, else from the parsed ontology, then kept there."""
    from atlasprep._cache import cache_file, keep_json
    from atlasprep.ontology._parser import SCHEMA_VERSION, get_parser

    parser = get_parser()
    info = parser.cxg_schema.supported_ontologies.get(ontology)
    if info is None:
        return None
    path = cache_file(f"ontology-labels-{SCHEMA_VERSION}/{ontology}-{info['version']}.json")
    kept = _read_table(path) if path is not None else None
    if kept is not None:
        return kept
    table = {str(term): str(entry["label"]) for term, entry in parser.cxg_schema.ontology(ontology).items()}
    if path is not None:
        keep_json(path, table)
    return table


def _read_table(path: Path) -> dict[str, str] | None:
    """A kept label table; None when there is none or it is not one (it is then made again)."""
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(table, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in table.items()
    ):
        return None
    return table
