"""Multimodal tokens: after the RNA tokens, one segment per paired modality, or target columns.

A cell of an aligned MuData (``atlasprep align barcodes``) becomes
``<cls> [context] rna… <sep:atac> atac… <eos>`` (``<cls>``/``<eos>`` where the RNA scheme has
them), each segment cut to its own budget, with ``token_type`` per token (0 special or context,
1 RNA, 2 ATAC, 3 protein) and ``values`` aligned with ``input_ids``.

* **ATAC**: peaks ranked by TF-IDF, highest first, as Signac/ArchR LSI weight them:
  ``tf = count / cell total``, ``idf = log(1 + N / (1 + n_cells_with_peak))`` over the corpus
  (a first streaming pass), ``score = log1p(tf · 10⁴) · idf``; equal scores keep peak order.
  Tokens ``peak:<var name>``; values the scores.
* **Protein**: CLR per cell, across the cell's proteins, the CITE-seq convention (Seurat's
  ``NormalizeData(method="CLR", margin=2)``): ``log1p(x) − mean(log1p(x))``; ranked highest first
  (equal values keep panel order). Tokens ``prot:<var name>``; values the CLR values.
* ``targets``: a modality stored whole as ``target_<modality>`` (list<float32>, the CLR or TF-IDF
  vector over all its features in var order) instead of as tokens, for multi-task heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from atlasprep.errors import UsageError
from atlasprep.tokenize._groups import length_groups

__all__ = [
    "KINDS",
    "Segment",
    "atac_idf",
    "clr",
    "encode_segment",
    "segment_vector",
    "splice",
]

KINDS = {"atac": ("peak", 2), "prot": ("prot", 3)}  # modality -> (token prefix, token type)


@dataclass(frozen=True, slots=True, kw_only=True)
class Segment:
    """One paired modality's tokens: where its rows come from and how they are ranked."""

    modality: str  # "atac" | "prot"
    spec: str  # "file.h5mu:atac": opened by each encode job
    budget: int  # tokens at most, separator not counted
    sep_id: int
    tokens: np.ndarray  # int32 per feature (var order); empty for a target
    idf: np.ndarray | None  # ATAC only
    features: tuple[str, ...] = ()

    @property
    def token_type(self) -> int:
        return KINDS[self.modality][1]


def atac_idf(cells_with_peak: np.ndarray, n_cells: int) -> np.ndarray:
    """Inverse document frequency per peak: ``log(1 + N / (1 + n_cells_with_peak))``."""
    return np.log1p(n_cells / (1.0 + np.asarray(cells_with_peak, dtype=np.float64)))


def clr(X: sp.csr_matrix | np.ndarray) -> np.ndarray:
    """Centered log-ratio per cell across its features: ``log1p(x) - mean(log1p(x))``."""
    dense = np.asarray(sp.csr_matrix(X).toarray() if sp.issparse(X) else X, dtype=np.float64)
    logged = np.log1p(dense)
    return logged - logged.mean(axis=1, keepdims=True)


def segment_vector(segment_modality: str, X: sp.csr_matrix, idf: np.ndarray | None) -> np.ndarray:
    """The per-cell vector a modality is ranked by (dense, cells × features)."""
    if segment_modality == "prot":
        return clr(X)
    if idf is None:
        raise UsageError("ATAC scores need the corpus IDF")
    X = sp.csr_matrix(X, dtype=np.float64)
    totals = np.asarray(X.sum(axis=1)).ravel()
    totals[totals == 0] = 1.0
    scores = X.multiply(1.0 / totals[:, None]).tocsr()
    scores.data = np.log1p(scores.data * 1e4) * idf[scores.indices]
    return np.asarray(scores.toarray())


def encode_segment(segment: Segment, X: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, offsets, values) of one segment for a batch: features ranked highest first.

    ATAC keeps the cell's accessible peaks only; protein ranks the whole panel."""
    if segment.modality == "prot":
        values = clr(X)
        order = np.argsort(-values, axis=1, kind="stable")[:, : segment.budget]
        n, width = order.shape
        offsets = np.arange(n + 1, dtype=np.int64) * width
        ids = segment.tokens[order].ravel().astype(np.int32)
        return ids, offsets, np.take_along_axis(values, order, axis=1).ravel().astype(np.float32)
    X = sp.csr_matrix(X, dtype=np.float64)
    X.sum_duplicates()
    X.eliminate_zeros()
    totals = np.asarray(X.sum(axis=1)).ravel()
    lengths = np.diff(X.indptr)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.minimum(lengths, segment.budget), out=offsets[1:])
    ids = np.empty(offsets[-1], dtype=np.int32)
    values = np.empty(offsets[-1], dtype=np.float32)
    assert segment.idf is not None
    for k, rows in length_groups(lengths):  # one sort per distinct number of peaks
        at = X.indptr[rows][:, None] + np.arange(k)
        scores = np.log1p(X.data[at] / totals[rows][:, None] * 1e4) * segment.idf[X.indices[at]]
        order = np.argsort(-scores, axis=1, kind="stable")[:, : segment.budget]
        dest = offsets[rows][:, None] + np.arange(min(k, segment.budget))
        ids[dest] = segment.tokens[np.take_along_axis(X.indices[at], order, axis=1)]
        values[dest] = np.take_along_axis(scores, order, axis=1)
    return ids, offsets, values


def splice(
    main: tuple[np.ndarray, np.ndarray, np.ndarray],
    segments: list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]],
    *,
    keep_tail: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Put each segment (sep id, token type, ids, offsets, values) after the main tokens, before
    the main sequence's last ``keep_tail`` tokens (``<eos>``). Returns ids, offsets, values and
    token types (main tokens get type 1; the caller marks specials)."""
    main_ids, main_offsets, main_values = main
    n = len(main_offsets) - 1
    main_len = np.diff(main_offsets)
    body_len = np.maximum(main_len - keep_tail, 0)
    tail_len = main_len - body_len
    # pieces in cell order: (lengths, flat ids, flat starts per cell, values, type)
    pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]] = [
        (body_len, main_ids, main_offsets[:-1], main_values, 1)
    ]
    for sep_id, kind, ids, offsets, values in segments:
        seps = np.full(n, sep_id, dtype=np.int32)
        pieces.append((np.ones(n, dtype=np.int64), seps, np.arange(n), np.zeros(n, np.float32), 0))
        pieces.append((np.diff(offsets), ids, offsets[:-1], values, kind))
    pieces.append((tail_len, main_ids, main_offsets[:-1] + body_len, main_values, 0))
    total = np.sum([p[0] for p in pieces], axis=0)
    offsets_out = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(total, out=offsets_out[1:])
    ids_out = np.empty(offsets_out[-1], dtype=np.int32)
    values_out = np.empty(offsets_out[-1], dtype=np.float32)
    types_out = np.empty(offsets_out[-1], dtype=np.int8)
    before = offsets_out[:-1].copy()
    for lengths, ids, starts, values, kind in pieces:
        cell = np.repeat(np.arange(n), lengths)
        local = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        dest = before[cell] + local
        src = starts[cell] + local
        ids_out[dest] = ids[src]
        values_out[dest] = values[src]
        types_out[dest] = kind
        before += lengths
    return ids_out, offsets_out, values_out, types_out
