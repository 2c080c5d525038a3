"""Per-ontology lookup tables, built once per process: names -> term IDs, and a 3-gram index.

cellxgene-ontology-guide maps exact labels only; people type synonyms, plurals, other casings
and punctuation, and misspell. Each ontology gets

* exact tables (case-folded, whitespace-collapsed label / synonym -> term IDs),
* loose tables (the same with hyphens, commas and apostrophes dropped) for normalized matches,
* a character 3-gram index, so suggesting the closest names over MONDO's ~90,000 labels and
  synonyms takes milliseconds instead of a difflib pass over all of them.

Deprecated terms are left out of all of them: a name must never resolve to an obsolete term.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from atlasprep.ontology._parser import get_parser

__all__ = [
    "GramIndex",
    "LooseIndex",
    "OntologyIndex",
    "gram_index_of",
    "index_of",
    "loose",
    "loose_index_of",
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


def variants(key: str) -> tuple[str, ...]:
    """Forms of a normalized key a user may have meant: "cd14+ monocytes" -> "cd14-positive monocyte"."""
    marked = _NEGATIVE.sub(r"\1-negative", _POSITIVE.sub(r"\1-positive", key))
    forms = [key, marked]
    for form in (key, marked):
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
class GramIndex:
    """Every label and synonym of one ontology as sets of character 3-grams.

    Grams are integers over the ontology's own alphabet; ``owners`` lists, sorted by gram, the
    name each (name, gram) pair belongs to, so a query's grams are a few ``searchsorted`` calls.
    """

    names: tuple[str, ...]  # normalized labels and synonyms
    term_ids: tuple[tuple[str, ...], ...]  # per name
    alphabet: npt.NDArray[np.uint32]  # sorted code points
    grams: npt.NDArray[np.int64]  # sorted
    owners: npt.NDArray[np.int32]  # name number of each entry of ``grams``
    n_grams: npt.NDArray[np.int32]  # distinct grams per name

    def gram_codes(self, key: str) -> tuple[npt.NDArray[np.int64], int]:
        """The query's distinct grams that occur in this alphabet, and how many it has in all."""
        padded = f" {key} "
        n_total = len({padded[i : i + 3] for i in range(len(padded) - 2)})
        points = _code_points(padded)
        if n_total == 0:
            return np.empty(0, dtype=np.int64), 0
        pos = np.minimum(np.searchsorted(self.alphabet, points), len(self.alphabet) - 1)
        known = self.alphabet[pos] == points
        size = len(self.alphabet)
        codes = (pos[:-2] * size + pos[1:-1]) * size + pos[2:]
        ok = known[:-2] & known[1:-1] & known[2:]
        return np.asarray(sorted(set(codes[ok].tolist())), dtype=np.int64), n_total

    def shared(self, codes: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
        """How many of ``codes`` each name contains."""
        lo = np.searchsorted(self.grams, codes, side="left")
        hi = np.searchsorted(self.grams, codes, side="right")
        hits = [self.owners[a:b] for a, b in zip(lo.tolist(), hi.tolist(), strict=True) if b > a]
        if not hits:
            return np.zeros(len(self.names), dtype=np.intp)
        return np.bincount(np.concatenate(hits), minlength=len(self.names))


def _code_points(text: str) -> npt.NDArray[np.uint32]:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


@functools.cache
def gram_index_of(ontology: str) -> GramIndex:
    """The 3-gram index of one ontology's labels and synonyms (built on first suggestion)."""
    index = index_of(ontology)
    table: dict[str, tuple[str, ...]] = dict(index.synonyms)
    table.update(index.labels)  # a name that is both keeps its label's terms
    names = tuple(table)
    # One string, each name padded by spaces (so word starts and ends count) and split by NUL;
    # grams that touch a NUL straddle two names and are dropped.
    points = _code_points("".join(f" {name} \0" for name in names))
    alphabet = np.unique(points)
    codes = np.searchsorted(alphabet, points).astype(np.int64)
    size = len(alphabet)
    grams = (codes[:-2] * size + codes[1:-1]) * size + codes[2:]
    sep = points == 0
    ok = ~(sep[:-2] | sep[1:-1] | sep[2:])
    owner = np.repeat(np.arange(len(names), dtype=np.int64), [len(n) + 3 for n in names])[:-2]
    # Distinct (gram, name) pairs, gram-major. One sort and a neighbour compare: np.unique
    # (numpy 2.4) takes 3 s on MONDO's 3 million pairs where this takes 0.2 s.
    pairs = np.sort(grams[ok] * len(names) + owner[ok])
    keep = np.ones(len(pairs), dtype=bool)
    np.not_equal(pairs[1:], pairs[:-1], out=keep[1:])
    gram_of, owners = np.divmod(pairs[keep], len(names))
    return GramIndex(
        names=names,
        term_ids=tuple(table[name] for name in names),
        alphabet=alphabet,
        grams=gram_of,
        owners=owners.astype(np.int32),
        n_grams=np.bincount(owners, minlength=len(names)).astype(np.int32),
    )
