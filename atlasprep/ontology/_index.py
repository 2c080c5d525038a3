"""Per-ontology lookup tables, built once per process: names -> term IDs, and a 3-gram index.

cellxgene-ontology-guide maps exact labels only; people type synonyms, plurals, other casings
and punctuation, and misspell. Each ontology gets

* exact tables (case-folded, whitespace-collapsed label / synonym -> term IDs),
* loose tables (the same with hyphens, commas and apostrophes dropped) for normalized matches,
* a names index that :func:`~atlasprep.ontology.suggest` ranks with rapidfuzz (edit distance
  in C++: MONDO's ~90,000 labels and synonyms in milliseconds, typos such as "lnug" included).

Deprecated terms are left out of all of them: a name must never resolve to an obsolete term.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from dataclasses import dataclass

from atlasprep.ontology._parser import get_parser
from atlasprep.ontology.aliases import ALIASES

__all__ = [
    "LooseIndex",
    "NameIndex",
    "OntologyIndex",
    "alias_table",
    "index_of",
    "loose",
    "loose_index_of",
    "marked",
    "name_index_of",
    "normalize",
    "variants",
]

# str.replace and split/join, not regexes: MONDO alone has ~100,000 labels and synonyms
_LOOSE_DROP = ("'", "’", "′")
_LOOSE_SPACE = (",", "-", "‐", "‑", "–")
_POSITIVE = re.compile(r"\b([a-z]{1,4}\d+[a-z]?)\+")  # "cd14+" -> "cd14-positive"
_NEGATIVE = re.compile(r"\b([a-z]{1,4}\d+[a-z]?)-(?=\s|$)")  # "cd4- t cell" -> "cd4-negative t cell"


def normalize(text: str) -> str:
    """The exact-match key: case-folded, whitespace and underscores collapsed to one space."""
    return " ".join(text.replace("_", " ").split()).casefold()


def loose(key: str) -> str:
    """The normalized-match key: also drop apostrophes; hyphens and commas become spaces.

    "CD4-positive alpha beta T cell" and "Peyers patch" then meet their labels; anything this
    makes collide is reported as ambiguous, never guessed.
    """
    for char in _LOOSE_DROP:
        key = key.replace(char, "")
    for char in _LOOSE_SPACE:
        key = key.replace(char, " ")
    return " ".join(key.split())


def _singular(words: list[str]) -> list[str]:
    last = words[-1]
    if last.endswith("ies") and len(last) > 4:
        return [*words[:-1], last[:-3] + "y"]
    if last.endswith("s") and not last.endswith(("ss", "us", "is")) and len(last) > 3:
        return [*words[:-1], last[:-1]]
    return words


def marked(key: str) -> str:
    """A normalized key with marker signs spelled out: "cd14+ monocyte" -> "cd14-positive monocyte"."""
    return _NEGATIVE.sub(r"\1-negative", _POSITIVE.sub(r"\1-positive", key))


def variants(key: str) -> tuple[str, ...]:
    """Forms of a normalized key a user may have meant: "cd14+ monocytes" -> "cd14-positive monocyte"."""
    spelled = marked(key)
    forms = [key, spelled]
    for form in (key, spelled):
        words = form.split(" ")
        forms.append(" ".join(_singular(words)))
        # "T cells of the lung": the plural head noun sits before a qualifier
        forms.append(" ".join("cell" if w == "cells" else w for w in words))
    return tuple(dict.fromkeys(f for f in forms if f))


@dataclass(frozen=True, slots=True)
class OntologyIndex:
    name: str
    labels: dict[str, tuple[str, ...]]  # normalize(label) -> live term IDs
    synonyms: dict[str, tuple[str, ...]]  # normalize(synonym) -> live term IDs
    display: dict[str, str]  # live term ID -> label


@dataclass(frozen=True, slots=True)
class LooseIndex:
    labels: dict[str, tuple[str, ...]]  # loose(normalize(label)) -> live term IDs
    synonyms: dict[str, tuple[str, ...]]


def _freeze(d: defaultdict[str, set[str]]) -> dict[str, tuple[str, ...]]:
    return {k: tuple(sorted(v)) for k, v in d.items()}


@functools.cache
def index_of(ontology: str) -> OntologyIndex:
    """The lookup tables of one ontology (``ontology`` spelled as the parser names it)."""
    terms = get_parser().cxg_schema.ontology(ontology)
    labels: defaultdict[str, set[str]] = defaultdict(set)
    synonyms: defaultdict[str, set[str]] = defaultdict(set)
    display: dict[str, str] = {}
    for term_id, meta in terms.items():
        label = meta.get("label")
        if meta.get("deprecated") or not label:
            continue
        display[term_id] = label
        labels[normalize(label)].add(term_id)
        for synonym in meta.get("synonyms") or ():
            synonyms[normalize(synonym)].add(term_id)
    return OntologyIndex(name=ontology, labels=_freeze(labels), synonyms=_freeze(synonyms), display=display)


@functools.cache
def loose_index_of(ontology: str) -> LooseIndex:
    """The loose tables, built only when no exact label, synonym or alias matched."""
    index = index_of(ontology)

    def loosen(table: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        out: defaultdict[str, set[str]] = defaultdict(set)
        for key, ids in table.items():
            out[loose(key)].update(ids)
        return _freeze(out)

    return LooseIndex(labels=loosen(index.labels), synonyms=loosen(index.synonyms))


@dataclass(frozen=True, slots=True)
class NameIndex:
    """Every live label and synonym of one ontology, normalized, with the terms it names: what
    :func:`atlasprep.ontology.suggest` ranks (rapidfuzz, in C++, over all of them)."""

    names: tuple[str, ...]
    term_ids: tuple[tuple[str, ...], ...]  # per name


@functools.cache
def name_index_of(ontology: str) -> NameIndex:
    """One ontology's names (built on first suggestion); a name both a label and a synonym
    keeps its label's terms."""
    index = index_of(ontology)
    table: dict[str, tuple[str, ...]] = dict(index.synonyms)
    table.update(index.labels)
    names = tuple(table)
    return NameIndex(names=names, term_ids=tuple(table[name] for name in names))


@functools.cache
def alias_table(ontology: str) -> dict[str, str]:
    """The ontology's curated everyday names (:data:`~atlasprep.ontology.aliases.ALIASES`),
    normalized, with the term each names."""
    return {normalize(name): term_id for name, term_id in ALIASES.get(ontology, {}).items()}
