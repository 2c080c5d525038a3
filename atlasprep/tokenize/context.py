"""Context tokens (tissue, assay, …): one per named obs column, inserted where a cell begins."""

from __future__ import annotations

import numpy as np

__all__ = ["UNKNOWN_VALUE", "context_token", "insert_context", "unknown_token"]

UNKNOWN_VALUE = "<unk>"  # a value the corpus never had: its column's <unk> token at inference


def context_token(column: str, value: str) -> str:
    """The vocabulary entry of one obs value, e.g. ``<tissue_general:lung>``."""
    return f"<{column}:{value}>"


def unknown_token(column: str) -> str:
    """The token of a value of ``column`` the tokenizer was not fitted on, ``<assay:<unk>>``."""
    return context_token(column, UNKNOWN_VALUE)


def insert_context(
    ids: np.ndarray,
    offsets: np.ndarray,
    context: np.ndarray,
    *,
    at: int,
    max_len: int,
    keep_tail: int = 0,
    values: np.ndarray | None = None,
    fill: float = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Insert ``context[i]`` (m tokens) at position ``at`` of cell ``i``.

    Cells stay within ``max_len``: genes are dropped from the end of the body, before the last
    ``keep_tail`` tokens (``<eos>``). ``values``, when given, get ``fill`` at the new positions.
    """
    n, m = context.shape
    lengths = np.diff(offsets)
    new_lengths = np.minimum(lengths + m, max_len)
    drop = lengths + m - new_lengths
    local = np.arange(len(ids)) - np.repeat(offsets[:-1], lengths)
    cell_len = np.repeat(lengths, lengths)
    keep = (local < cell_len - keep_tail - np.repeat(drop, lengths)) | (local >= cell_len - keep_tail)
    kept_ids = ids[keep]
    kept_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths - drop, out=kept_offsets[1:])
    where = np.repeat(kept_offsets[:-1] + np.minimum(at, lengths - drop), m)
    out_ids = np.insert(kept_ids, where, context.ravel().astype(ids.dtype))
    out_values = None
    if values is not None:
        out_values = np.insert(values[keep], where, np.full(n * m, fill, dtype=values.dtype))
    new_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(new_lengths, out=new_offsets[1:])
    return out_ids, new_offsets, out_values
