"""A batch of cells into tokens: the scheme's encoder (rank, bin, raw) over CSR counts."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from atlasprep.errors import InputFormatError
from atlasprep.sources import (
    CellBatch,
)
from atlasprep.sources.base import remap_columns
from atlasprep.sources.counts import check_counts
from atlasprep.tokenize.binning import bin_values, cap_genes
from atlasprep.tokenize.config import Encoded, TokenizeConfig
from atlasprep.tokenize.context import context_token
from atlasprep.tokenize.rank import RankEncoder
from atlasprep.tokenize.raw import raw_encode

if TYPE_CHECKING:  # fit imports this module (the counts check)
    from atlasprep.tokenize.fit import Fitted

log = logging.getLogger("atlasprep.tokenize")


def make_encoder(config: TokenizeConfig, fitted: Fitted) -> Callable[[CellBatch, int], Encoded]:
    """``encode(batch, first_row)``: a batch's tokens; ``first_row`` is its first cell's place."""
    vocab, gene_ids, hvg = fitted.vocab, fitted.gene_ids, fitted.hvg
    n_counts_column, mapping = fitted.n_counts_column, fitted.mapping
    column_tokens = vocab.column_tokens
    if config.scheme == "rank":
        assert vocab.medians is not None
        ranking = functools.partial(
            RankEncoder.from_dictionaries,
            token_dictionary=vocab.tokens,
            gene_medians=vocab.medians,
            gene_mapping=mapping,
            max_len=config.max_len,
            special_tokens=config.special_tokens,
        )
        whole = ranking(gene_ids)
        # A file joined to others on one var is ranked as Geneformer ranks it, alone: its own
        # genes, in its own order, summed where two of its own IDs name one gene.
        by_file: dict[bytes, tuple[np.ndarray, RankEncoder]] = {}

        def own_encoder(stored: np.ndarray) -> tuple[np.ndarray, RankEncoder]:
            key = stored.tobytes()
            if key not in by_file:
                own = stored[stored >= 0]
                by_file[key] = (own, ranking([gene_ids[c] for c in own], require_genes=False))
            return by_file[key]

        def encode_rank(batch: CellBatch, first_row: int) -> Encoded:
            n_counts = None if n_counts_column is None else _totals(batch.obs, n_counts_column)
            X, encoder = batch.X, whole
            if batch.stored_columns is not None:
                own, encoder = own_encoder(np.asarray(batch.stored_columns, dtype=np.int64))
                position = np.full(X.shape[1], -1, dtype=np.int64)
                position[own] = np.arange(len(own))
                X = remap_columns(X, position, len(own))
            ranked = encoder.encode(X, n_counts, x_dtype=batch.stored_dtype, dense=batch.stored_dense)
            return ranked.input_ids, ranked.offsets, None

        return encode_rank
    if config.scheme == "raw":

        def encode_raw(batch: CellBatch, first_row: int) -> Encoded:
            cells = raw_encode(batch.X, column_tokens, max_len=config.max_len)
            return cells.input_ids, cells.offsets, cells.values

        return encode_raw

    # bins over the vocabulary genes (or the most variable of them), as scGPT
    columns = np.flatnonzero(column_tokens >= 0) if hvg is None else hvg
    tokens = column_tokens[columns]

    def encode_bin(batch: CellBatch, first_row: int) -> Encoded:
        binned = bin_values(sp.csr_matrix(batch.X)[:, columns], config.n_bins)
        binned = cap_genes(binned, config.max_len, seed=config.seed, first_row=first_row)
        ids = tokens[binned.indices]
        offsets = binned.indptr.astype(np.int64)
        return ids.astype(np.int32), offsets, binned.data.astype(np.int32)

    return encode_bin


def _totals(obs: pa.Table, column: str) -> np.ndarray:
    """A batch's cell totals from an obs column, in the column's own dtype."""
    values = obs[column]
    if values.null_count or not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
        raise InputFormatError(
            f"obs[{column!r}] must hold each cell's total counts as numbers (it has {values.type}, "
            f"{values.null_count} missing); fix it, or pass --n-counts-column none to use the sum "
            "of the counts"
        )
    totals = values.to_numpy()
    if (totals < 0).any() or not np.isfinite(totals).all():
        raise InputFormatError(
            f"obs[{column!r}] has a negative or infinite total; fix it, or pass --n-counts-column none "
            "to use the sum of the counts"
        )
    return totals


def context_ids(obs: pa.Table, columns: tuple[str, ...], tokens: dict[str, int]) -> np.ndarray:
    """(cells × columns) context token ids of a batch."""
    out = np.empty((obs.num_rows, len(columns)), dtype=np.int32)
    for j, column in enumerate(columns):
        values = obs[column].to_pandas().astype("string").fillna("<NA>")
        lookup = {v: tokens[context_token(column, v)] for v in values.unique()}
        out[:, j] = values.map(lookup).to_numpy(dtype=np.int32)
    return out


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
        hint=f"--scheme {config.scheme} needs raw integer counts (normalized data?); point at raw counts, "
        "or pass --assume-normalized",
    )


SCORING = {
    "atac": "TF-IDF: log1p(count / cell total * 1e4) * log(1 + N / (1 + cells with the peak))",
    "prot": "CLR per cell: log1p(x) - mean over the cell's proteins of log1p(x)",
}
