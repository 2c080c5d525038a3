"""What a loader samples: ``sampling="uniform"|"balanced:COLUMN"|"balanced:COLUMN@LEVEL"`` and
``batches="hard_negatives:ANCHOR/SPREAD"``, parsed once, and the per-cell labels they need.

``balanced:COLUMN`` draws cells with probability inversely proportional to their label's
frequency, so every label is drawn equally often on average. ``@LEVEL`` first rolls each label up
the ontology — to the Census's curated ``cell_class`` / ``cell_subclass`` (or ``organ``,
``system``, ``tissue_general`` for tissues): the nearest ancestor in that set; or to depth ``k``
(``@3``): the nearest ancestor ``k`` steps below the ontology's root — so the rare subtypes of a
common type share its weight instead of each taking a full label's. A term the level does not
cover keeps itself (counted and logged, never silent).

Labels are read from the store's own columns once (a column per shard, as strings), rolled up
over the *distinct* values only, and kept as one small integer per cell (``uint16`` below 65,536
labels): two to four bytes a cell, whatever the corpus size.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from cellxgene_ontology_guide.curated_ontology_term_lists import get_curated_ontology_term_list
from cellxgene_ontology_guide.entities import CuratedOntologyTermList

from atlasprep.errors import UsageError
from atlasprep.loader._sampled import BalancedDraws, HardNegatives
from atlasprep.ontology import get_parser, tissue_general
from atlasprep.sources.filters import FILTER_COLUMNS

__all__ = [
    "Batches",
    "LabelCodes",
    "Sampling",
    "SamplingKind",
    "SamplingPlan",
    "label_codes",
    "plan_sampling",
    "roll_up",
]

log = logging.getLogger("atlasprep.loader")

_CURATED = {
    "cell_class": CuratedOntologyTermList.CELL_CLASS,
    "cell_subclass": CuratedOntologyTermList.CELL_SUBCLASS,
    "organ": CuratedOntologyTermList.ORGAN,
    "system": CuratedOntologyTermList.SYSTEM,
}
_ROOTS = {"CL": "CL:0000000", "UBERON": "UBERON:0001062"}  # cell; anatomical entity
_LEVELS = (*_CURATED, "tissue_general", "<depth>")


class SamplingKind(StrEnum):
    uniform = "uniform"
    balanced = "balanced"


@dataclass(frozen=True, slots=True, kw_only=True)
class Sampling:
    """``uniform``, or ``balanced`` over ``column``'s labels (rolled up to ``level``)."""

    kind: SamplingKind = SamplingKind.uniform
    column: str | None = None
    level: str | None = None

    @classmethod
    def parse(cls, text: str) -> Sampling:
        kind, sep, rest = text.partition(":")
        if kind == "uniform" and not sep:
            return cls()
        if kind != "balanced" or not rest.strip():
            raise UsageError(
                f"sampling = {text!r}: choose 'uniform', 'balanced:COLUMN' or 'balanced:COLUMN@LEVEL' "
                "(e.g. balanced:cell_type@cell_class)"
            )
        column, _, level = rest.partition("@")
        return cls(
            kind=SamplingKind.balanced, column=column.strip(), level=_level(text, level.strip() or None)
        )

    def __str__(self) -> str:
        if self.kind == SamplingKind.uniform:
            return "uniform"
        return f"balanced:{self.column}" + (f"@{self.level}" if self.level else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class Batches:
    """``hard_negatives:ANCHOR/SPREAD``: each batch one ``anchor`` value from several ``spread``s."""

    anchor: str
    spread: str

    @classmethod
    def parse(cls, text: str) -> Batches:
        kind, _, rest = text.partition(":")
        anchor, slash, spread = rest.partition("/")
        if kind != "hard_negatives" or not slash or not anchor.strip() or not spread.strip():
            raise UsageError(
                f"batches = {text!r}: expected 'hard_negatives:ANCHOR/SPREAD', e.g. "
                "hard_negatives:cell_type/tissue_general"
            )
        return cls(anchor=anchor.strip(), spread=spread.strip())

    def __str__(self) -> str:
        return f"hard_negatives:{self.anchor}/{self.spread}"


def _level(text: str, level: str | None) -> str | None:
    if level is None or level in _CURATED or level == "tissue_general" or level.isdigit():
        return level
    raise UsageError(f"sampling = {text!r}: level {level!r} is not one of {', '.join(_LEVELS)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelCodes:
    """One label per cell of the split (in manifest order), as an index into ``names``."""

    column: str  # the stored column read
    codes: np.ndarray  # uint16 or int32 per cell
    names: list[str]

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.codes, minlength=len(self.names)).astype(np.int64)

    def digest(self) -> str:
        """A short hash of the labels' names and counts (recorded with the loader's state)."""
        h = hashlib.sha256("\n".join(self.names).encode())
        h.update(self.counts.tobytes())
        return h.hexdigest()[:16]


def label_codes(
    read: Callable[[str], list[np.ndarray]], stored: Sequence[str], column: str, level: str | None = None
) -> LabelCodes:
    """``column``'s label per cell (``read(column)``: its strings, shard by shard), rolled up to
    ``level``. A field name reads its stored column (``cell_type`` ->
    ``cell_type_ontology_term_id``); ``tissue_general`` is rolled up from the tissue when absent."""
    source, derived = _stored_column(column, stored)
    codes: list[np.ndarray] = []
    seen: dict[str, int] = {}
    for values in read(source):  # distinct values per shard, then one code per cell
        uniques, inverse = np.unique(values.astype(str), return_inverse=True)
        local = np.array([seen.setdefault(str(u), len(seen)) for u in uniques], dtype=np.int64)
        codes.append(local[inverse])
    raw = list(seen)
    rollup = derived or level
    mapped = roll_up(raw, rollup) if rollup else {r: r for r in raw}
    names = sorted(set(mapped.values()))
    index = {n: i for i, n in enumerate(names)}
    table = np.array([index[mapped[r]] for r in raw], dtype=np.int64)
    dtype = np.uint16 if len(names) < 2**16 else np.int32
    flat = np.concatenate(codes) if codes else np.zeros(0, dtype=np.int64)
    return LabelCodes(column=source, codes=table[flat].astype(dtype), names=names)


def _stored_column(column: str, stored: Sequence[str]) -> tuple[str, str | None]:
    """The stored column to read, and the rollup that makes ``column`` from it (or None)."""
    if column in stored:
        return column, None
    if column in FILTER_COLUMNS and FILTER_COLUMNS[column] in stored:
        return FILTER_COLUMNS[column], None
    if column == "tissue_general" and FILTER_COLUMNS["tissue"] in stored:
        return FILTER_COLUMNS["tissue"], "tissue_general"
    raise UsageError(f"{column!r}: the store holds no such column (it holds {', '.join(stored)})")


def roll_up(terms: Sequence[str], level: str) -> dict[str, str]:
    """Each term -> its label at ``level`` (see the module's doc); non-terms keep themselves."""
    if level == "tissue_general":
        return tissue_general(terms)
    kept = []
    result = {}
    for term in terms:
        up = _depth_ancestor(term, int(level)) if level.isdigit() else _curated_ancestor(term, level)
        result[term] = up or term
        if up is None:
            kept.append(term)
    if kept:
        log.info(
            "rollup to %s: %d term(s) have none and keep themselves: %s", level, len(kept), ", ".join(kept)
        )
    return result


@functools.cache
def _curated(level: str) -> dict[str, int]:
    return {t: i for i, t in enumerate(get_curated_ontology_term_list(_CURATED[level]))}


@functools.cache
def _ancestors(term: str) -> dict[str, int]:
    """The term's ancestors (itself included) and their distance from it; {} for a non-term."""
    if ":" not in term:
        return {}
    try:
        return dict(get_parser().get_term_ancestors_with_distances(term, include_self=True))
    except ValueError:
        return {}


def _curated_ancestor(term: str, level: str) -> str | None:
    """The nearest ancestor in the curated set (ties: the set's own order)."""
    rank = _curated(level)
    hits = [(d, rank[a], a) for a, d in _ancestors(term).items() if a in rank]
    return min(hits)[2] if hits else None


def _depth_ancestor(term: str, depth: int) -> str | None:
    """The nearest ancestor ``depth`` steps below the ontology's root; None above that depth."""
    root = _ROOTS.get(term.split(":")[0])
    if root is None:
        return None
    hits = sorted((d, a) for a, d in _ancestors(term).items() if _ancestors(a).get(root) == depth)
    return hits[0][1] if hits else None


@dataclass(frozen=True, slots=True, kw_only=True)
class SamplingPlan:
    """A dataset's sampling, with what it computed from the store's labels once."""

    sampling: Sampling
    batches: Batches | None = None
    draws: BalancedDraws | None = None
    hard: HardNegatives | None = None
    digest: str | None = None  # of the labels the weights come from

    @property
    def uniform(self) -> bool:
        return self.draws is None and self.hard is None

    def fingerprint(self, num_samples: int) -> dict[str, object]:
        """What a saved state must match (nothing for uniform: states saved before sampling)."""
        if self.uniform:
            return {}
        batches = None if self.batches is None else str(self.batches)
        return {
            "sampling": str(self.sampling),
            "batch_plan": batches,
            "num_samples": num_samples,
            "labels": self.digest,
        }


def plan_sampling(
    sampling: str,
    batches: str | None,
    *,
    read: Callable[[str], list[np.ndarray]],
    stored: Sequence[str],
    shard_sizes: Sequence[int],
) -> SamplingPlan:
    """``sampling`` and ``batches`` parsed, and the labels they weigh read from the store."""
    spec = Sampling.parse(sampling)
    grouped = Batches.parse(batches) if batches is not None else None
    if grouped is not None:
        if spec.kind != SamplingKind.uniform:
            raise UsageError(f"batches = {batches!r} draws its own cells; leave sampling = 'uniform'")
        anchor = label_codes(read, stored, grouped.anchor)
        spread = label_codes(read, stored, grouped.spread)
        hard = HardNegatives.index(anchor.codes, spread.codes, len(spread.names))
        digest = hashlib.sha256((anchor.digest() + spread.digest()).encode()).hexdigest()[:16]
        return SamplingPlan(sampling=spec, batches=grouped, hard=hard, digest=digest)
    if spec.kind == SamplingKind.uniform:
        return SamplingPlan(sampling=spec)
    assert spec.column is not None
    labels = label_codes(read, stored, spec.column, spec.level)
    draws = BalancedDraws.inverse_frequency(labels.codes, len(labels.names), shard_sizes)
    return SamplingPlan(sampling=spec, draws=draws, digest=labels.digest())
