"""What validation reports (`Problem`, `ValidationReport`), how findings pile up (`Found`), and the
per-value counting every check shares: one group-by per column (`tally`), then cells by value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from atlasprep._names import Profile

N_EXAMPLES = 3


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: where (``column``: an obs column, ``var_names``, ``raw.X``, ``uns['key']`` …),
    what is wrong, how many cells it touches, and up to three offending values or obs names."""

    column: str
    what: str
    n_cells: int
    examples: tuple[str, ...] = ()

    def __str__(self) -> str:
        shown = f" (e.g. {', '.join(self.examples)})" if self.examples else ""
        cells = "cell" if self.n_cells == 1 else "cells"
        return f"{self.column}: {self.what} — {self.n_cells:,} {cells}{shown}"

    def to_json(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "what": self.what,
            "n_cells": self.n_cells,
            "examples": list(self.examples),
        }


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """What :func:`validate_anndata` found, and the rule set (schema, ontology and gene releases) it used."""

    path: Path
    profile: Profile
    schema_version: str
    ontology_versions: dict[str, str]
    problems: tuple[Problem, ...]
    warnings: tuple[Problem, ...]
    n_cells: int
    n_genes: int
    references: dict[str, str] = field(default_factory=dict)  # gene table, ASCT+B table

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "profile": self.profile,
            "ok": self.ok,
            "schema_version": self.schema_version,
            "ontology_versions": dict(self.ontology_versions),
            "references": dict(self.references),
            "n_cells": self.n_cells,
            "n_genes": self.n_genes,
            "problems": [p.to_json() for p in self.problems],
            "warnings": [w.to_json() for w in self.warnings],
        }


class Found:
    """Findings as they come, merged by (column, what): cell counts add up, examples collect."""

    def __init__(self) -> None:
        self._found: dict[tuple[str, str], tuple[int, list[str]]] = {}

    def add(self, column: str, what: str, n_cells: int, examples: Iterable[str] = ()) -> None:
        n, shown = self._found.get((column, what), (0, []))
        shown.extend(e for e in examples if e not in shown)
        self._found[(column, what)] = (n + int(n_cells), shown[:N_EXAMPLES])

    def extend(self, found: Iterable[Problem]) -> None:
        for p in found:
            self.add(p.column, p.what, p.n_cells, p.examples)

    def freeze(self) -> tuple[Problem, ...]:
        return tuple(Problem(c, w, n, tuple(e)) for (c, w), (n, e) in self._found.items())


def tally(obs: pd.DataFrame, columns: Sequence[str]) -> Iterator[tuple[tuple[Any, ...], int]]:
    """Each distinct combination of values in ``columns`` (missing values included), with its cells."""
    sizes = obs.groupby(list(columns), observed=True, dropna=False, sort=False).size()
    for key, n in sizes.items():
        yield (key if isinstance(key, tuple) else (key,)), int(n)


def blank(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or bool(np.all(pd.isna(value)))


def check_missing(obs: pd.DataFrame, column: str, problems: Found, what: str = "") -> None:
    """Cells whose value is missing or blank."""
    values = obs[column]
    distinct = pd.unique(values.dropna())
    blanks = [v for v in distinct if blank(v)]
    mask = values.isna().to_numpy() | values.isin(blanks).to_numpy()
    if mask.any():
        names = obs.index[mask][:N_EXAMPLES]
        problems.add(column, what or "has no value for some cells", int(mask.sum()), names)


def flag_values(obs: pd.DataFrame, column: str, verdict: Callable[[Any], str | None], found: Found) -> None:
    """One finding per distinct non-blank value of ``column`` that ``verdict`` rejects (its reason)."""
    for (value,), n in tally(obs, [column]):
        reason = None if blank(value) else verdict(value)
        if reason is not None:
            found.add(column, reason, n, (str(value),))
