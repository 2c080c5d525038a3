"""What every batch is checked for before it is encoded, and how paired modalities are scored."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa

from atlasprep.errors import InputFormatError
from atlasprep.sources.counts import check_counts
from atlasprep.tokenize.config import TokenizeConfig

log = logging.getLogger("atlasprep.tokenize")


def check_batch_counts(X: Any, config: TokenizeConfig) -> None:
    """Counts are counts: negative or non-finite values are refused by every scheme (raw would
    store NaN). rank and bin read raw counts, so non-integer values are refused too unless
    ``assume_normalized``: normalized input would silently change every token."""

    source = config.source
    if source.inputs:
        names = {None: "the count matrix", "X": "X", "raw": "raw.X"}
        matrix = names.get(source.layer, f"layers[{source.layer!r}]")
        where = f"{matrix} of {', '.join(source.inputs)}"
    else:
        where = f"X[{source.layer or 'raw'!r}] of the Census {source.census or source.census_uri}"
    check_counts(
        X,
        where=where,
        integer=config.scheme != "raw" and not config.assume_normalized,
        hint=f"scheme = {str(config.scheme)!r} needs raw integer counts (normalized data?); point at raw "
        "counts, or set assume_normalized",
    )


SCORING = {
    "atac": "TF-IDF: log1p(count / cell total * 1e4) * log(1 + N / (1 + cells with the peak))",
    "prot": "CLR per cell: log1p(x) - mean over the cell's proteins of log1p(x)",
}


def cell_totals(obs: pa.Table, column: str) -> np.ndarray:
    """A batch's cell totals from an obs column, in the column's own dtype."""
    values = obs[column]
    if values.null_count or not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
        raise InputFormatError(
            f"obs[{column!r}] must hold each cell's total counts as numbers (it has {values.type}, "
            f"{values.null_count} missing); fix it, or set n_counts_column = none to use the sum "
            "of the counts"
        )
    totals = values.to_numpy()
    if (totals < 0).any() or not np.isfinite(totals).all():
        raise InputFormatError(
            f"obs[{column!r}] has a negative or infinite total; fix it, or set n_counts_column = none "
            "to use the sum of the counts"
        )
    return totals
