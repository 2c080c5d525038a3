"""Resolve what a user typed (label, synonym, alias, ID) to one ontology term, or refuse."""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from atlasprep.errors import AmbiguousTermError, UnknownTermError
from atlasprep.ontology._index import index_of, normalize, variants
from atlasprep.ontology._parser import get_parser
from atlasprep.ontology.aliases import ALIASES

__all__ = [
    "DEFAULT_ONTOLOGIES",
    "FIELD_ONTOLOGIES",
    "ResolvedTerm",
    "descendants",
    "expand_terms",
    "resolve_term",
    "suggest",
    "term_label",
]

MatchKind = Literal["id", "label", "synonym", "alias", "normalized"]

# obs field -> the ontologies its terms come from (CELLxGENE schema 7)
FIELD_ONTOLOGIES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "cell_type": ("CL",),
        "tissue": ("UBERON",),
        "tissue_general": ("UBERON",),
        "assay": ("EFO",),
        "disease": ("MONDO", "PATO"),
        "sex": ("PATO",),
        "development_stage": ("HsapDv", "MmusDv", "UBERON"),
        "self_reported_ethnicity": ("HANCESTRO",),
    }
)
# searched, in this order, when no ontology is named
DEFAULT_ONTOLOGIES: tuple[str, ...] = (
    "CL",
    "UBERON",
    "MONDO",
    "EFO",
    "PATO",
    "HsapDv",
    "HANCESTRO",
    "MmusDv",
)

_CURIE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9]*)[:_](\d+)\s*$")


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedTerm:
    """One query resolved: the term, and how it was found."""

    query: str
    term_id: str
    label: str
    ontology: str
    how: MatchKind
    n_descendants: int

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "term_id": self.term_id,
            "label": self.label,
            "ontology": self.ontology,
            "how": self.how,
            "n_descendants": self.n_descendants,
        }


def _canonical_prefix(prefix: str, ontologies: Sequence[str]) -> str | None:
    for name in (*ontologies, *DEFAULT_ONTOLOGIES):
        if name.lower() == prefix.lower():
            return name
    return None


def resolve_term(query: str, ontologies: Sequence[str] | None = None) -> ResolvedTerm:
    """The one term ``query`` names among ``ontologies`` (default: the common CELLxGENE ones).

    Order: ID, exact label, exact synonym, curated alias, normalized forms (plurals, "CD14+").
    Labels win over synonyms. A name several terms share at the best level is refused with
    every candidate; a name nobody knows is refused with the closest labels.
    """
    searched = tuple(ontologies) if ontologies else DEFAULT_ONTOLOGIES
    curie = _CURIE.match(query)
    if curie:
        return _resolve_id(query, curie.group(1), curie.group(2), searched)
    key = normalize(query)
    if not key:
        raise UnknownTermError("an empty term was given", query=query)
    for how in ("label", "synonym", "alias", "normalized"):
        hits = _hits(key, how, searched)
        if not hits:
            continue
        if len(hits) > 1:
            shown = ", ".join(f"{term_label(t)} ({t})" for _, t in hits)
            hint = " pass --ontology to choose" if len({o for o, _ in hits}) > 1 else " use the term ID"
            raise AmbiguousTermError(
                f"{query!r} names {len(hits)} terms: {shown};{hint}",
                query=query,
                candidates=tuple(t for _, t in hits),
            )
        ontology, term_id = hits[0]
        return _resolved(query, term_id, ontology, how)
    suggestions = suggest(query, searched)
    did_you_mean = ", ".join(f"{label} ({tid})" for label, tid in suggestions)
    raise UnknownTermError(
        f"no {'/'.join(searched)} term is labelled {query!r}"
        + (f"; did you mean: {did_you_mean}?" if did_you_mean else "")
        + " (look terms up with `atlasprep terms`)",
        query=query,
        suggestions=tuple(tid for _, tid in suggestions),
    )


def _hits(key: str, how: str, ontologies: Sequence[str]) -> list[tuple[str, str]]:
    hits: dict[str, str] = {}
    for ontology in ontologies:
        index = index_of(ontology)
        if how == "label":
            found: Iterable[str] = index.labels.get(key, ())
        elif how == "synonym":
            found = index.synonyms.get(key, ())
        elif how == "alias":
            table = {normalize(k): v for k, v in ALIASES.get(ontology, {}).items()}
            found = (table[key],) if key in table else ()
        else:
            found = ()
            for form in variants(key)[1:]:
                found = (
                    index.labels.get(form)
                    or index.synonyms.get(form)
                    or index.spaced.get(form.replace("-", " "), ())
                )
                if found:
                    break
        for term_id in found:
            hits.setdefault(term_id, ontology)
    return [(o, t) for t, o in hits.items()]


def _resolve_id(query: str, prefix: str, number: str, searched: Sequence[str]) -> ResolvedTerm:
    ontology = _canonical_prefix(prefix, searched)
    term_id = f"{ontology or prefix.upper()}:{number}"
    if ontology is None or ontology not in searched:
        raise UnknownTermError(
            f"{term_id} is not from {'/'.join(searched)}, the ontologies this field takes",
            query=query,
        )
    terms = get_parser().cxg_schema.ontology(ontology)
    if term_id not in terms:
        raise UnknownTermError(f"{term_id} does not exist in {ontology} {_release(ontology)}", query=query)
    meta = terms[term_id]
    if meta.get("deprecated"):
        replacement = meta.get("replaced_by")
        raise UnknownTermError(
            f"{term_id} ({meta.get('label')}) is deprecated in {ontology} {_release(ontology)}"
            + (f"; use {replacement} instead" if replacement else ""),
            query=query,
            suggestions=(replacement,) if replacement else (),
        )
    return _resolved(query, term_id, ontology, "id")


def _resolved(query: str, term_id: str, ontology: str, how: MatchKind) -> ResolvedTerm:
    return ResolvedTerm(
        query=query,
        term_id=term_id,
        label=term_label(term_id),
        ontology=ontology,
        how=how,
        n_descendants=len(descendants(term_id)) - 1,
    )


def _release(ontology: str) -> str:
    return str(get_parser().cxg_schema.supported_ontologies[ontology]["version"])


def term_label(term_id: str) -> str:
    return str(get_parser().get_term_label(term_id))


@functools.cache
def descendants(term_id: str, *, include_self: bool = True) -> tuple[str, ...]:
    """The term's descendants (is_a and part_of), sorted; the term itself first if asked."""
    found = sorted(set(get_parser().get_term_descendants(term_id)) - {term_id})
    return (term_id, *found) if include_self else tuple(found)


def expand_terms(term_ids: Iterable[str], *, exact: bool = False) -> tuple[str, ...]:
    """The terms, or the terms and all their descendants, sorted and deduplicated."""
    out: set[str] = set()
    for term_id in term_ids:
        if exact or not _CURIE.match(term_id):  # "unknown", "na": schema values, not terms
            out.add(term_id)
        else:
            out.update(descendants(term_id))
    return tuple(sorted(out))


def suggest(query: str, ontologies: Sequence[str] | None = None, n: int = 5) -> tuple[tuple[str, str], ...]:
    """The ``n`` closest (label, term ID) pairs by labels and synonyms."""
    key = normalize(query)
    candidates: dict[str, str] = {}  # name -> term ID
    for ontology in ontologies or DEFAULT_ONTOLOGIES:
        index = index_of(ontology)
        for table in (index.labels, index.synonyms):
            for name, ids in table.items():
                candidates.setdefault(name, ids[0])
    # prefilter: names sharing a 3-letter chunk with the query keep difflib under a second
    grams = {key[i : i + 3] for i in range(max(len(key) - 2, 1))}
    pool = [name for name in candidates if any(g in name for g in grams)] or list(candidates)
    best = difflib.get_close_matches(key, pool, n=n * 3, cutoff=0.5)
    out: dict[str, str] = {}
    for name in best:
        term_id = candidates[name]
        out.setdefault(term_id, term_label(term_id))
        if len(out) == n:
            break
    return tuple((label, term_id) for term_id, label in out.items())
