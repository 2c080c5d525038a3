"""Labels of many terms at once, looked up ahead on a background thread while a build runs.

A token store names every ontology term it holds (its manifest's ``labels``). Looking them up
loads the ontologies that hold them (CL, UBERON, MONDO …: a quarter of a second), so a build
starts the lookup as soon as it has seen the terms (:func:`labels_ahead`, from its first batch
of cells) and collects the labels when it writes its manifest (:func:`labels_of`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import Future

from atlasprep.errors import UnknownTermError

__all__ = ["is_term_id", "labels_ahead", "labels_of"]

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
    from atlasprep.ontology.resolve import term_label

    for term, future in sorted(futures.items()):
        try:
            future.set_result(term_label(term))
        except UnknownTermError:
            future.set_result(None)
        except BaseException as exc:  # an ontology that fails to load: raised where it is read
            future.set_exception(exc)
