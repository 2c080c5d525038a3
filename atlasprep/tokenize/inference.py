"""New cells through a saved tokenizer, in memory: ``Tokenizer.load("store/")(adata)``.

The cells (an in-memory AnnData, or the path of an AnnData file, streamed in batches) are
checked as a build checks them (counts are counts; rank and bin need integers unless
``assume_normalized``), encoded exactly as the tokenizer's corpus was, and padded into the batch
dict the loaders yield: ``input_ids`` (int64, cells × L), ``attention_mask``, ``values`` when the
scheme has them, and ``cell_id``; torch tensors when torch is installed, numpy arrays otherwise.
Genes outside the vocabulary are left out (``report`` says how many), context values the corpus
never had become their column's ``<unk>`` token and are counted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from atlasprep.errors import UsageError
from atlasprep.sources import CellBatch
from atlasprep.sources.counts import check_counts
from atlasprep.tokenize.coverage import VocabCoverage
from atlasprep.tokenize.fit import var_gene_ids
from atlasprep.tokenize.padding import RaggedRows, as_tensors, pad_parts

if TYPE_CHECKING:
    import anndata as ad

    from atlasprep.tokenize.tokenizer import TokenizedBatch, Tokenizer

__all__ = ["InferenceReport", "tokenize_new", "with_totals"]

log = logging.getLogger("atlasprep.tokenize")


@dataclass(frozen=True, slots=True, kw_only=True)
class InferenceReport:
    """What new data lacked: genes outside the vocabulary, context values the corpus never had."""

    n_cells: int
    coverage: VocabCoverage


def tokenize_new(
    tokenizer: Tokenizer,
    data: ad.AnnData | str | Path,
    *,
    gene_column: str | None = None,
    layer: str | None = None,
    pad_to: int | None = None,
    assume_normalized: bool = False,
    batch_size: int = 4096,
) -> tuple[dict[str, Any], InferenceReport]:
    """The batch dict of ``data``'s cells (see the module docstring), and what they lacked."""
    if tokenizer.paired:
        raise UsageError(
            "this tokenizer pairs the RNA with other modalities; tokenize an aligned MuData with "
            "tokenize_cells(TokenizeConfig(..., tokenizer=...)), which reads them"
        )
    batches, gene_ids, where, obs_columns = _batches(
        data, gene_column=gene_column, layer=layer, batch_size=batch_size
    )
    tokenizer = with_totals(tokenizer, obs_columns)
    encode = tokenizer.encoder(gene_ids)
    column_tokens = tokenizer.column_tokens(gene_ids)
    coverage = VocabCoverage.of_genes(column_tokens)
    parts: list[TokenizedBatch] = []
    cell_ids: list[np.ndarray] = []
    for batch in batches:
        check_counts(
            batch.X,
            where=where,
            integer=tokenizer.scheme != "raw" and not assume_normalized,
            hint=f"the {tokenizer.scheme} scheme reads raw integer counts; point at them (layer), "
            "or set assume_normalized",
        )
        coverage = coverage.add(batch.X, column_tokens)
        encoded = encode(batch)
        coverage = coverage.add_unknown(encoded.unknown_context)
        parts.append(encoded)
        cell_ids.append(batch.cell_ids.astype(str))
    if coverage.n_genes_in_vocab == 0:
        log.warning("none of the %d input genes is in the vocabulary (symbols for IDs?)", coverage.n_genes)
    padded = _padded(parts, np.concatenate(cell_ids) if cell_ids else np.zeros(0, str), tokenizer, pad_to)
    return as_tensors(padded), InferenceReport(n_cells=len(padded["cell_id"]), coverage=coverage)


def _batches(
    data: ad.AnnData | str | Path, *, gene_column: str | None, layer: str | None, batch_size: int
) -> tuple[Iterator[CellBatch], list[str], str, list[str]]:
    """The cells in batches (obs: every column, for context and totals), the var's gene IDs,
    what the counts are called in messages, and the obs columns."""
    if isinstance(data, str | Path):
        from atlasprep.sources.anndata import AnnDataSource  # a stream need not import anndata

        source = AnnDataSource([str(data)], layer=layer)
        var = source.var()
        columns = list(source.obs_columns)

        def read() -> Iterator[CellBatch]:
            try:
                yield from source.iter_batches(
                    np.arange(source.n_cells), var_positions=None, batch_size=batch_size, obs_columns=columns
                )
            finally:
                source.close()

        return read(), var_gene_ids(var, gene_column), f"the counts of {data}", columns
    X = _counts(data, layer)
    obs = pa.Table.from_pandas(data.obs, preserve_index=False)
    stored_dtype = np.dtype(X.dtype)
    csr = sp.csr_matrix(X, dtype=np.float32)
    batch = CellBatch(
        cell_ids=np.asarray(data.obs_names, dtype=str),
        obs=obs,
        X=csr,
        stored_dtype=stored_dtype,
        stored_dense=not sp.issparse(X),
    )
    where = f"{layer or 'X'} of the AnnData"
    return iter([batch]), var_gene_ids(data.var, gene_column), where, [str(c) for c in data.obs.columns]


def _counts(adata: ad.AnnData, layer: str | None) -> Any:
    """The counts matrix ``layer`` names: ``X``, ``raw`` (raw.X) or a layers key; by default raw.X
    when there is a raw with the same genes, else X (as the files are read)."""
    if layer in (None, "raw") and adata.raw is not None and adata.raw.n_vars == adata.n_vars:
        return adata.raw.X
    if layer == "raw":
        raise UsageError("layer = 'raw': the AnnData has no raw with its genes")
    if layer in (None, "X"):
        return adata.X
    if layer not in adata.layers:
        raise UsageError(f"layer = {layer!r}: not a layer of the AnnData (it has {', '.join(adata.layers)})")
    return adata.layers[layer]


def _padded(
    parts: list[TokenizedBatch], cell_ids: np.ndarray, tokenizer: Tokenizer, pad_to: int | None
) -> dict[str, Any]:
    ids = np.concatenate([p.input_ids for p in parts]) if parts else np.zeros(0, np.int32)
    lengths = np.concatenate([np.diff(p.offsets) for p in parts]) if parts else np.zeros(0, np.int64)
    values = None
    if parts and parts[0].values is not None:
        values = np.concatenate([np.asarray(p.values, dtype=np.float32) for p in parts])
    starts = np.cumsum(lengths) - lengths
    part = RaggedRows(rows=np.arange(len(lengths)), starts=starts, lengths=lengths, ids=ids, values=values)
    pad_id = int(tokenizer.tokens.get("<pad>", 0))
    return pad_parts([part], n_rows=len(lengths), pad_id=pad_id, pad_to=pad_to, cell_ids=cell_ids.tolist())


def with_totals(tokenizer: Tokenizer, obs_columns: list[str]) -> Tokenizer:
    """The tokenizer reading the cells' totals as Geneformer does: from the input's column of the
    corpus's name (``n_counts`` by default) when it has one, else the sum of the counts."""
    if tokenizer.scheme != "rank":
        return tokenizer
    name = tokenizer.n_counts_column or "n_counts"
    return replace(tokenizer, n_counts_column=name if name in obs_columns else None)
