"""Resolve what a user typed (ID, label, synonym, alias) to one ontology term, or refuse."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from rapidfuzz.distance import DamerauLevenshtein

from atlasprep._names import DEFAULT_ONTOLOGIES
from atlasprep.errors import AmbiguousTermError, UnknownTermError, UsageError
from atlasprep.ontology._fuzzy import closest, prime, suggestion_pool
from atlasprep.ontology._index import (
    alias_table,
    index_of,
    loose,
    loose_index_of,
    marked,
    normalize,
    variants,
)
from atlasprep.ontology._parser import get_parser
from atlasprep.ontology.kept import (
    descendants_kept,
    keep_descendants,
    keep_refused,
    keep_resolved,
    refused_kept,
    resolved_kept,
)

__all__ = [
    "DEFAULT_ONTOLOGIES",
    "FIELD_ONTOLOGIES",
    "FieldName",
    "MatchKind",
    "ResolvedTerm",
    "descendants",
    "expand_terms",
    "prime_suggestions",
    "resolve_term",
    "suggest",
    "suggests",
    "term_label",
]

log = logging.getLogger("atlasprep.ontology")

FieldName = Literal[
    "cell_type",
    "tissue",
    "tissue_general",
    "assay",
    "disease",
    "sex",
    "development_stage",
    "self_reported_ethnicity",
]
MatchKind = Literal["id", "label", "synonym", "alias", "normalized"]

# obs field -> the ontologies its terms come from (CELLxGENE schema 7)
FIELD_ONTOLOGIES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "cell_type": ("CL",),
        "tissue": ("UBERON",),
        "tissue_general": ("UBERON",),
        "assay": ("EFO",),
        "disease": ("MONDO", "PATO"),  # PATO:0000461 "normal" for healthy donors
        "sex": ("PATO",),
        "development_stage": ("HsapDv", "MmusDv", "UBERON"),
        "self_reported_ethnicity": ("HANCESTRO",),
    }
)

# "CL:0000738", "cl_0000738" (the OBO PURL form), "CVCL_0030". With an unknown prefix only
# "XYZ:123" counts as an ID: EFO has labels such as "SALK_049497".
_CURIE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9]*)([:_])([A-Za-z0-9]+)\s*$")
_MIN_SCORE = 0.5  # below this a "suggestion" is noise
_WORD_BONUS = 0.25


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedTerm:
    """One query resolved: the term, and how it was found."""

    query: str  # what the user typed
    term_id: str  # CURIE, e.g. "CL:0000738"
    label: str
    ontology: str  # "CL"
    how: MatchKind
    n_descendants: int  # strict descendants (is_a and part_of), the term not counted

    def to_json(self) -> dict[str, object]:
        return {
            "query": self.query,
            "term_id": self.term_id,
            "label": self.label,
            "ontology": self.ontology,
            "how": self.how,
            "n_descendants": self.n_descendants,
        }


def resolve_term(query: str, ontologies: Sequence[str] | None = None) -> ResolvedTerm:
    """The one term ``query`` names among ``ontologies`` (default :data:`DEFAULT_ONTOLOGIES`).

    Order: ID; exact label; exact synonym; curated alias (:data:`~atlasprep.ontology.ALIASES`);
    normalized forms (plurals, "CD14+", hyphens, commas, apostrophes) against labels, then
    synonyms. The first level with a hit decides; a name several terms share at that level is
    refused with every candidate; a name nobody knows is refused with the closest labels.
    """
    searched = _ontologies(ontologies)
    kept = resolved_kept(query, searched)  # resolved in an earlier run (ontology/kept.py)
    if kept is not None:
        return ResolvedTerm(query=query, **kept)
    refused = refused_kept(query, searched)  # or refused in one
    if refused is not None:
        kind, message, term_ids = refused
        if kind == "ambiguous":
            raise AmbiguousTermError(message, query=query, candidates=term_ids)
        raise UnknownTermError(message, query=query, suggestions=term_ids)
    try:
        term = _resolve(query, searched)
    except AmbiguousTermError as exc:
        keep_refused(query, searched, "ambiguous", str(exc), exc.candidates)
        raise
    except UnknownTermError as exc:
        keep_refused(query, searched, "unknown", str(exc), exc.suggestions)
        raise
    keep_resolved(query, searched, term)
    return term


def _resolve(query: str, searched: tuple[str, ...]) -> ResolvedTerm:
    curie = _parse_curie(query)
    if curie is not None:
        return _resolve_id(query, curie, searched)
    key = normalize(query)
    if not key:
        raise UnknownTermError("an empty term was given", query=query)
    for how, hits in _levels(key, searched):
        if not hits:
            continue
        if len(hits) > 1:
            shown = _named((term_label(t), t) for t in hits)
            several = len({_ontology_of(t) for t in hits}) > 1
            hint = (
                "set ontologies to narrow it, or give the term ID"
                if several
                else "give the term ID of the one you mean"
            )
            raise AmbiguousTermError(
                f"{query!r} matches {len(hits)} terms by {how}: {shown}; {hint}",
                query=query,
                candidates=tuple(hits),
            )
        return _resolved(query, hits[0], how)
    closest = suggest(query, searched)
    hint = f"did you mean: {_named(closest)}?" if closest else "no label or synonym there is close to it"
    raise UnknownTermError(
        f"no {'/'.join(searched)} term has the label or synonym {query!r}; {hint}",
        query=query,
        suggestions=tuple(tid for _, tid in closest),
    )


def prime_suggestions(queries: Iterable[str], ontologies: Sequence[str] | None = None) -> None:
    """Match the names of many queries at once (:func:`~atlasprep.ontology._fuzzy.prime`, on
    every core), so that :func:`suggest` finds each one's closest names ready."""
    keys = list(dict.fromkeys(marked(normalize(q)) for q in queries if _parse_curie(q) is None))
    if len(keys) > 1:  # (one query: extract, as suggest would)
        prime(keys, _ontologies(ontologies))


def suggests(query: str, ontologies: Sequence[str] | None = None) -> bool:
    """Whether resolving ``query`` would look for suggestions: a name, neither kept from an
    earlier run nor matched by any level (label, synonym, alias, normalized forms)."""
    searched = _ontologies(ontologies)
    key = normalize(query)
    if _parse_curie(query) is not None or not key:
        return False
    if resolved_kept(query, searched) is not None or refused_kept(query, searched) is not None:
        return False
    return not any(hits for _, hits in _levels(key, searched))


def _levels(key: str, searched: Sequence[str]) -> Iterable[tuple[MatchKind, list[str]]]:
    """Each match level and its hits (term IDs in ``searched`` order), lazily."""
    indexes = [index_of(o) for o in searched]
    yield "label", _union(ix.labels.get(key, ()) for ix in indexes)
    yield "synonym", _union(ix.synonyms.get(key, ()) for ix in indexes)
    yield "alias", _union(_alias(o, key) for o in searched)
    forms = [loose(form) for form in variants(key)]
    loose_indexes = [loose_index_of(o) for o in searched]
    yield "normalized", _union(ix.labels.get(f, ()) for ix in loose_indexes for f in forms)
    yield "normalized", _union(ix.synonyms.get(f, ()) for ix in loose_indexes for f in forms)


def _union(groups: Iterable[Iterable[str]]) -> list[str]:
    return list(dict.fromkeys(t for group in groups for t in group))


def _alias(ontology: str, key: str) -> tuple[str, ...]:
    table = alias_table(ontology)
    if key in table:
        return (table[key],)
    return tuple(dict.fromkeys(table[f] for f in variants(key) if f in table))


@functools.cache
def _supported() -> dict[str, str]:
    """Lower-cased name -> the parser's spelling, for every ontology it ships."""
    return {name.lower(): name for name in get_parser().cxg_schema.supported_ontologies}


def _ontologies(ontologies: Sequence[str] | None) -> tuple[str, ...]:
    if not ontologies:
        return DEFAULT_ONTOLOGIES
    if isinstance(ontologies, str):  # a bare "CL" would otherwise search "C" and "L"
        ontologies = (ontologies,)
    out = []
    for name in ontologies:
        canonical = _supported().get(name.lower())
        if canonical is None:
            raise UsageError(
                f"{name!r} is not an ontology cellxgene-ontology-guide ships; "
                f"choose from {', '.join(sorted(_supported().values()))}"
            )
        out.append(canonical)
    return tuple(dict.fromkeys(out))


@functools.cache
def _prefixes() -> dict[str, tuple[str, str, str]]:
    """Lower-cased ID prefix -> (its spelling, the ontology that ships it, the ID separator).

    Imported prefixes count: HANCESTRO ships the AfPO terms ("AfPO:0000271", Sudanic).
    """
    out = {}
    for name, info in get_parser().cxg_schema.supported_ontologies.items():
        out[name.lower()] = (name, name, str(info.get("id_separator", ":")))
        for imported in info.get("additional_ontologies") or ():
            out[imported.lower()] = (imported, name, ":")
    return out


def _parse_curie(query: str) -> str | None:
    """``query`` as an ID spelled the way the ontology spells it, or None if it is a name."""
    match = _CURIE.match(query)
    if match is None:
        return None
    prefix, sep, local = match.groups()
    known = _prefixes().get(prefix.lower())
    if known is not None:
        spelling, _, separator = known
        return f"{spelling}{separator}{local.upper()}"
    if sep == ":" and local.isdigit():
        return f"{prefix.upper()}:{local}"
    return None


def _ontology_of(term_id: str) -> str:
    """The shipped ontology a term ID belongs to, or its bare prefix if none ships it."""
    prefix = re.split(r"[:_]", term_id, maxsplit=1)[0]
    known = _prefixes().get(prefix.lower())
    return known[1] if known else prefix


def _release(ontology: str) -> str:
    return str(get_parser().cxg_schema.supported_ontologies[ontology]["version"])


def _resolve_id(query: str, term_id: str, searched: Sequence[str]) -> ResolvedTerm:
    ontology = _ontology_of(term_id)
    if ontology not in searched:
        where = f"is from {ontology}" if ontology in _supported().values() else "is from no shipped ontology"
        raise UnknownTermError(
            f"{term_id} {where}, but only {'/'.join(searched)} terms are allowed here; give a "
            f"{' or '.join(searched)} term, by ID or label",
            query=query,
        )
    meta = get_parser().cxg_schema.ontology(ontology).get(term_id)
    if meta is None:
        raise UnknownTermError(f"{term_id} is not a term of {ontology} {_release(ontology)}", query=query)
    if meta.get("deprecated"):
        offered = _replacements(term_id)
        fix = f"use {_named(offered)} instead" if offered else f"{ontology} names no replacement"
        raise UnknownTermError(
            f"{term_id} ({meta.get('label')}) is deprecated in {ontology} {_release(ontology)}; {fix}",
            query=query,
            suggestions=tuple(tid for _, tid in suggest(query, searched)),
        )
    return _resolved(query, term_id, "id")


def _replacements(term_id: str) -> tuple[tuple[str, str], ...]:
    """The (label, ID) the ontology offers for a deprecated term: its replacement, else "consider"."""
    parser = get_parser()
    replacement = parser.get_term_replacement(term_id)
    meta = parser.cxg_schema.ontology(_ontology_of(term_id))[term_id]
    ids = [replacement] if replacement else list(meta.get("consider") or ())
    out = []
    for tid in ids:
        if not parser.is_valid_term_id(tid):  # outside the shipped ontologies: CL:0000002 -> CLO:0000019
            out.append(("", tid))
        elif not parser.is_term_deprecated(tid):  # "consider" lists may name obsolete terms
            out.append((term_label(tid), tid))
    return tuple(out)


def _named(pairs: Iterable[tuple[str, str]]) -> str:
    return ", ".join(f"{label} ({tid})" if label else tid for label, tid in pairs)


def _resolved(query: str, term_id: str, how: MatchKind) -> ResolvedTerm:
    return ResolvedTerm(
        query=query,
        term_id=term_id,
        label=term_label(term_id),
        ontology=_ontology_of(term_id),
        how=how,
        n_descendants=len(descendants(term_id, include_self=False)),
    )


def term_label(term_id: str) -> str:
    """The term's label in the pinned release (deprecated terms keep theirs)."""
    try:
        return str(get_parser().get_term_label(term_id))
    except (ValueError, KeyError):  # (KeyError: an ID of a shipped ontology that it lacks)
        raise UnknownTermError(f"{term_id} is not a term of any shipped ontology", query=term_id) from None


@functools.cache
def descendants(term_id: str, *, include_self: bool = True) -> tuple[str, ...]:
    """The term's descendants over is_a and part_of, sorted (cached per process, and kept
    between runs: ontology/kept.py)."""
    kept = descendants_kept(term_id, include_self)
    if kept is not None:
        return kept
    try:
        found = tuple(sorted(set(get_parser().get_term_descendants(term_id, include_self=include_self))))
    except ValueError:
        raise UnknownTermError(f"{term_id} is not a term of any shipped ontology", query=term_id) from None
    keep_descendants(term_id, include_self, found)
    return found


def expand_terms(term_ids: Iterable[str], *, exact: bool = False) -> tuple[str, ...]:
    """The terms and all their descendants (only the terms if ``exact``), sorted and deduplicated.

    Values that are not CURIEs ("unknown", "na": schema values, not terms) pass through.
    """
    out: set[str] = set()
    for term_id in term_ids:
        if exact or ":" not in term_id:
            out.add(term_id)
        else:
            out.update(descendants(term_id))
    return tuple(sorted(out))


def suggest(query: str, ontologies: Sequence[str] | None = None, n: int = 5) -> tuple[tuple[str, str], ...]:
    """The ``n`` closest (label, term ID) pairs among the live labels and synonyms.

    A deprecated ID's suggestions are its replacement (or the terms the ontology says to
    consider). A name is ranked by rapidfuzz's WRatio over every label and synonym (the 100
    closest of each ontology), plus a bonus for names holding every word typed; names that share
    too little are not suggested at all.
    """
    searched = _ontologies(ontologies)
    curie = _parse_curie(query)
    if curie is not None:
        if _ontology_of(curie) not in searched or not get_parser().is_valid_term_id(curie):
            return ()
        if not get_parser().is_term_deprecated(curie):
            return ((term_label(curie), curie),)
        return tuple((label, tid) for label, tid in _replacements(curie) if _ontology_of(tid) in searched)[:n]
    key = marked(normalize(query))  # "cd4+" read as "cd4-positive", as resolution reads it
    words = loose(key).split()
    scored: list[tuple[float, str, str]] = []  # (-score, name, term ID)
    for ontology in searched:
        term_ids = suggestion_pool(ontology)[1]
        for name, similarity, i in closest(key, ontology):
            # Damerau-Levenshtein counts a swapped pair as one edit ("lnug" is one from "lung",
            # two from "lanugo"); names that contain every word typed ("cd4", "t", "cell") beat
            # names that are merely about as close: "CD4-positive, alpha-beta T cell" over
            # "Tc1 cell" for "cd4 t cell".
            swapped = DamerauLevenshtein.normalized_similarity(key, name)
            name_words = loose(name).split()
            covered = sum(any(w.startswith(q) for w in name_words) for q in words) / max(len(words), 1)
            score = (similarity / 100 + swapped) / 2 + _WORD_BONUS * covered
            if score >= _MIN_SCORE:
                scored.extend((-score, name, tid) for tid in term_ids[i])
    out: dict[str, str] = {}
    for _, _, term_id in sorted(scored):
        if term_id not in out:
            out[term_id] = term_label(term_id)
            if len(out) == n:
                break
    log.debug("suggest(%r, %s): %d candidates scored", query, "/".join(searched), len(scored))
    return tuple((label, term_id) for term_id, label in out.items())
