"""The var checks: raw.var matching var, reserved and forbidden columns, ``feature_is_filtered``, and
the gene IDs (Ensembl, unversioned, of the dataset's organism and in atlasprep's GENCODE table, or
ERCC spike-ins). Gene findings come back as masks over var: the matrix scan counts their cells.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from atlasprep.harmonize._report import Found
from atlasprep.harmonize._schema_rules import (
    ENSEMBL,
    ENSEMBL_VERSIONED,
    ERCC,
    FORBIDDEN_RAW_VAR,
    GENES,
    ORGANISMS,
    RESERVED_VAR,
)
from atlasprep.harmonize._slice import Slice
from atlasprep.harmonize._term_rules import organism_note
from atlasprep.reference import gene_table


def check_frames(part: Slice, problems: Found) -> None:
    """raw.var against var; reserved, forbidden and '__' columns; var's feature_is_filtered."""
    n = len(part.obs)
    if part.raw_var is not None and not part.raw_var.index.equals(part.var.index):
        problems.add("raw.var_names", "differ from var_names: raw.X and X must hold the same genes", n)
    frames = {"obs": part.obs, "var": part.var}
    if part.raw_var is not None:
        frames["raw.var"] = part.raw_var
    for name, frame in frames.items():
        for column in frame.columns:
            if str(column).startswith("__"):
                problems.add(f"{name}['{column}']", "column names starting with '__' are reserved", n)
            elif name != "obs" and column in RESERVED_VAR:
                what = "reserved column: CELLxGENE writes it on upload (drop it)"
                problems.add(f"{name}['{column}']", what, n)
            elif name == "raw.var" and column in FORBIDDEN_RAW_VAR:
                problems.add(f"raw.var['{column}']", "must not be present in raw.var (it belongs in var)", n)
    _check_feature_is_filtered(part, problems)


def _check_feature_is_filtered(part: Slice, problems: Found) -> None:
    """Required boolean var column; all False when there is no raw.X (its consistency with X is
    checked by the matrix scan)."""
    n, where = len(part.obs), "var['feature_is_filtered']"
    column = part.var.get("feature_is_filtered")
    if column is None:
        problems.add(where, "required column is missing (True for genes filtered out of X)", n)
    elif not pd.api.types.is_bool_dtype(column):
        problems.add(where, f"must be boolean, not {column.dtype}", n)
    elif part.counts_name == "X" and bool(column.any()):
        problems.add(
            where, "must be False for every gene when there is no raw.X", n, part.var.index[column][:3]
        )


GeneFindings = list[tuple[str, npt.NDArray[np.bool_]]]


def check_genes(
    ids: pd.Index, species: str | None, n_cells: int, warnings: Found
) -> tuple[GeneFindings, str]:
    """Gene-ID findings as (what, mask over var) — their cell counts come from the matrix scan —
    and the gene annotation the IDs were checked against."""
    found: GeneFindings = []
    dup = np.asarray(ids.duplicated(keep=False))
    if dup.any():
        found.append((f"{int(dup.sum())} var names repeat: genes must be unique", dup))
    spike = np.asarray(ids.str.match(ERCC.pattern))
    ensembl = np.asarray(ids.str.match(ENSEMBL.pattern))
    versioned = np.asarray(ids.str.match(ENSEMBL_VERSIONED.pattern))
    if versioned.any():
        found.append((f"{int(versioned.sum())} Ensembl IDs carry a version suffix (drop '.N')", versioned))
    other = ~(spike | ensembl | versioned)
    if other.any():
        what = "var names are neither Ensembl gene IDs nor ERCC spike-ins (atlasprep harmonize maps symbols)"
        found.append((f"{int(other.sum())} {what}", other))
    if species is None or species not in GENES:
        warnings.add(
            "var_names", f"no gene table for {organism_note(species)}: IDs checked for form only", n_cells
        )
        return found, ""
    table = gene_table(GENES[species][0])
    prefix = GENES[species][1]
    foreign = ensembl & ~np.asarray(ids.str.startswith(f"{prefix}0"))
    if foreign.any():
        what = f"{int(foreign.sum())} Ensembl IDs are not {ORGANISMS[species]}'s ({prefix}…)"
        found.append((what, foreign))
    unknown = ensembl & ~foreign & ~np.asarray(ids.isin(table.genes.index))
    if unknown.any():
        found.append((f"{int(unknown.sum())} Ensembl IDs are not in {table.annotation}", unknown))
    return found, table.annotation
