"""The var and uns checks: raw.var matching var, reserved var columns and deprecated uns keys, and
the gene IDs (Ensembl, unversioned, of the dataset's organism and in atlasprep's GENCODE table, or
ERCC spike-ins). Gene findings come back as masks over var: the matrix scan counts their cells.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from atlasprep.harmonize._report import Found
from atlasprep.harmonize._schema_rules import (
    DEPRECATED_UNS,
    ENSEMBL,
    ENSEMBL_VERSIONED,
    ERCC,
    GENES,
    ORGANISMS,
    RESERVED_VAR,
)
from atlasprep.harmonize._slice import Slice
from atlasprep.harmonize._term_rules import organism_note
from atlasprep.reference import gene_table


def check_frames(part: Slice, problems: Found, warnings: Found) -> None:
    n = len(part.obs)
    if part.raw_var is not None and not part.raw_var.index.equals(part.var.index):
        problems.add("raw.var_names", "differ from var_names: raw.X and X must hold the same genes", n)
    reserved = [c for c in RESERVED_VAR if c in part.var]
    if reserved:
        what = "reserved columns: CELLxGENE writes them from the gene IDs (drop them before submitting)"
        warnings.add("var", what, n, reserved)
    deprecated = [k for k in DEPRECATED_UNS if k in part.uns]
    if deprecated:
        warnings.add("uns", "deprecated keys (schema 7 no longer reads them)", n, deprecated)


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
