"""Gene names to Ensembl IDs, through the GENCODE table atlasprep ships.

Each input gene (a var name, or a var column) is, in this order: an Ensembl ID of the organism
(``id``; a version suffix such as ``.12`` is dropped: ``versioned_id``; the ``_PAR_Y`` copy of a
pseudoautosomal gene in older GENCODE releases is the Y gene that now has its own ID and the same
symbol: ``par_y``, unknown if there is not exactly one), an ERCC spike-in kept as
it is (``spike_in``), a GENCODE symbol naming exactly one gene (``symbol``), or such a symbol
matched ignoring case (``case``; mouse data often comes lower-cased). Symbols that name several
Ensembl IDs are ``ambiguous`` and names found nowhere ``unknown``: both leave var, and the report
lists them with their counts. Several input genes that land on one ID are summed (``duplicates``).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from atlasprep.reference import gene_table

log = logging.getLogger("atlasprep.harmonize")

__all__ = ["GeneGrade", "GeneMapping", "id_column", "map_genes"]

GeneGrade = Literal["id", "versioned_id", "par_y", "spike_in", "symbol", "case"]
_ENSEMBL = re.compile(r"^(ENS(?:MUS)?G\d{11})(?:\.\d+)?(_PAR_Y)?$")
_PREFIX = {"homo_sapiens": "ENSG", "mus_musculus": "ENSMUSG"}


@dataclass(frozen=True, slots=True, kw_only=True)
class GeneMapping:
    """Where each input gene went, and the matrix that takes input columns to output genes."""

    organism: str
    annotation: str
    names: tuple[str, ...]  # input genes, in column order
    feature_ids: tuple[str | None, ...]  # per input gene; None: it leaves var
    how: tuple[GeneGrade | None, ...]
    ambiguous: dict[str, tuple[str, ...]]  # symbol -> the Ensembl IDs it names
    unknown: tuple[str, ...]
    var: pd.DataFrame  # output var: index feature_id; feature_name, feature_biotype, feature_length
    collapse: sp.csr_matrix  # n_input × n_output, 0/1: X @ collapse is the harmonized X

    @property
    def duplicates(self) -> dict[str, tuple[str, ...]]:
        """Output IDs that several input genes were summed into."""
        groups: dict[str, list[str]] = {}
        for name, fid in zip(self.names, self.feature_ids, strict=True):
            if fid is not None:
                groups.setdefault(fid, []).append(name)
        return {fid: tuple(names) for fid, names in groups.items() if len(names) > 1}

    def to_json(self, examples: int | None = 20) -> dict[str, Any]:
        """The mapping's counts, with the first ``examples`` unknown, ambiguous and summed genes
        (None: every one)."""
        grades = pd.Series([h or "dropped" for h in self.how]).value_counts()
        duplicates = self.duplicates
        return {
            "organism": self.organism,
            "annotation": self.annotation,
            "n_input": len(self.names),
            "n_output": len(self.var),
            "mapped": int(sum(f is not None for f in self.feature_ids)),
            "by_how": {str(k): int(v) for k, v in grades.items()},
            "n_unknown": len(self.unknown),
            "unknown_examples": list(self.unknown[:examples]),
            "n_ambiguous": len(self.ambiguous),
            "ambiguous": {k: list(v) for k, v in list(self.ambiguous.items())[:examples]},
            "n_summed": len(duplicates),
            "summed_examples": {k: list(v) for k, v in list(duplicates.items())[:examples]},
        }


def map_genes(names: Sequence[str], organism: str) -> GeneMapping:
    table = gene_table(organism)
    genes = table.genes
    by_symbol, by_upper = _symbols(organism)
    prefix = _PREFIX[table.organism]
    ids: list[str | None] = []
    how: list[GeneGrade | None] = []
    ambiguous: dict[str, tuple[str, ...]] = {}
    unknown: list[str] = []
    for raw in names:  # per gene, not per cell
        name = str(raw).strip()
        fid, grade = _one(name, prefix, genes["feature_name"], by_symbol, by_upper, ambiguous)
        if fid is None and name not in ambiguous:
            unknown.append(name)
        ids.append(fid)
        how.append(grade)
    order = list(dict.fromkeys(f for f in ids if f is not None))
    position = {f: i for i, f in enumerate(order)}
    rows = np.array([i for i, f in enumerate(ids) if f is not None], dtype=np.int64)
    cols = np.array([position[f] for f in ids if f is not None], dtype=np.int64)
    collapse = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(ids), len(order))
    )
    var = genes.reindex(order)[["feature_name", "feature_biotype", "feature_length"]]
    spike = var.index.str.startswith("ERCC-")
    var.loc[spike, "feature_name"] = var.index[spike]
    var.loc[spike, "feature_biotype"] = "spike-in"
    var["feature_length"] = var["feature_length"].fillna(0).astype("int64")
    var.index.name = None
    return GeneMapping(
        organism=table.organism,
        annotation=table.annotation,
        names=tuple(str(n) for n in names),
        feature_ids=tuple(ids),
        how=tuple(how),
        ambiguous=ambiguous,
        unknown=tuple(unknown),
        var=var,
        collapse=collapse,
    )


@functools.cache
def _symbols(organism: str) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """symbol -> Ensembl IDs, and the same with upper-cased symbols."""
    genes = gene_table(organism).genes
    exact: dict[str, list[str]] = {}
    upper: dict[str, list[str]] = {}
    for fid, name in zip(genes.index, genes["feature_name"], strict=True):
        exact.setdefault(name, []).append(fid)
        upper.setdefault(name.upper(), []).append(fid)
    return {k: tuple(v) for k, v in exact.items()}, {k: tuple(v) for k, v in upper.items()}


def _one(
    name: str,
    prefix: str,
    symbol_of: pd.Series,
    by_symbol: dict[str, tuple[str, ...]],
    by_upper: dict[str, tuple[str, ...]],
    ambiguous: dict[str, tuple[str, ...]],
) -> tuple[str | None, GeneGrade | None]:
    match = _ENSEMBL.match(name)
    if match:
        fid = match.group(1)
        if not fid.startswith(prefix) or fid not in symbol_of.index:
            return None, None
        if match.group(2):  # the Y copy of a pseudoautosomal gene: its own ID since GENCODE v44
            others = [g for g in by_symbol.get(str(symbol_of[fid]), ()) if g != fid]
            return (others[0], "par_y") if len(others) == 1 else (None, None)
        return fid, ("id" if fid == name else "versioned_id")
    if name.startswith("ERCC-"):
        return name, "spike_in"
    for lookup, grade in ((by_symbol, "symbol"), (by_upper, "case")):
        found = lookup.get(name if grade == "symbol" else name.upper())
        if found is not None:
            if len(found) == 1:
                return found[0], grade  # type: ignore[return-value]
            ambiguous[name] = found
            return None, None
    return None, None


_ID_SHARE = 0.9  # of a var column's values that must be the organism's Ensembl IDs to be taken


def id_column(var: pd.DataFrame, organism: str) -> list[str] | None:
    """The genes as a var column of the organism's Ensembl IDs (10x's ``gene_ids``), where the var
    index holds none (symbols): an ID names one gene, a symbol may name several or none. None
    when there is no such column, or the index has IDs itself."""
    pattern = rf"^{_PREFIX[organism]}\d{{11}}"
    if pd.Series(var.index.astype(str)).str.match(pattern).mean() >= 0.5:
        return None
    for column in var.columns:
        values = var[column]
        if values.dtype == object or pd.api.types.is_string_dtype(values):
            text = values.astype(str)
            if len(text) and text.str.match(pattern).mean() >= _ID_SHARE:
                log.info(
                    "genes: var column %r holds Ensembl IDs; mapped by them (set gene_column to choose)",
                    column,
                )
                return [str(g) for g in text]
    return None
