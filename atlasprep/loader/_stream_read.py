"""One read of a :class:`~atlasprep.loader.stream.StreamDataset`: some cells' counts, checked
and tokenized in one call, held as flat token buffers until their batches are sent.

A shuffle buffer is read ``read_size`` cells a source read, and each source read's tokens stay
the :class:`~atlasprep.loader._window.Piece` the tokenizer made: a batch is gathered from the
few pieces that hold its cells, so a buffer's tokens are never copied into one array (which
held them twice while it was made: 180 MB more at the peak for 32,768 cells of 1,400 tokens)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from atlasprep.loader._gather import Found
from atlasprep.loader._window import Piece, locate
from atlasprep.loader.collate import encode_labels
from atlasprep.sources import CellBatch, CellSource
from atlasprep.sources.counts import check_counts
from atlasprep.tokenize.tokenizer import TokenizedBatch, Tokenizer

__all__ = ["Read", "read_cells"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Read:
    """Distinct cells read once (source order), as one
    :class:`~atlasprep.loader._window.Piece` per source read (its flat tokens; labels encoded
    for batches, text for single cells; ``first``: its first cell's place among the distinct
    cells); ``inverse`` maps each requested place to its distinct cell."""

    pieces: tuple[Piece, ...]
    inverse: np.ndarray

    def found(self, cells: np.ndarray, places: np.ndarray) -> list[Found]:
        """The distinct ``cells`` (indices) as batch rows ``places``: (piece, batch rows, rows
        of the piece) for each piece that holds some of them."""
        if len(self.pieces) == 1:
            return [(self.pieces[0], places, cells)]
        return [(piece, places[rows], within) for piece, rows, within in locate(self.pieces, cells)]


def read_cells(
    source: CellSource,
    positions: np.ndarray,
    *,
    tokenizer: Tokenizer,
    encode: Callable[[CellBatch], TokenizedBatch],
    lookup: Mapping[str, Mapping[str, int]],
    integer: bool,
    read_size: int,
    encode_labels_: bool = True,
) -> Read:
    """The cells at ``positions`` (repeats read once), tokenized; labels of ``lookup``'s columns
    (as int64 labels, or as text with ``encode_labels_=False``). The source reads them
    ``read_size`` cells at a time (its read-ahead threads load the next while this one is
    tokenized), so counts in memory are a few reads, whatever the number of positions."""
    distinct, inverse = np.unique(positions, return_inverse=True)
    totals = [tokenizer.n_counts_column] if tokenizer.n_counts_column else []
    columns = list(dict.fromkeys([*lookup, *tokenizer.context, *totals]))
    pieces = []
    first = 0
    for batch in source.iter_batches(distinct, var_positions=None, batch_size=read_size, obs_columns=columns):
        check_counts(
            batch.X,
            where="the streamed counts",
            integer=integer,
            hint=f"the {tokenizer.scheme} scheme reads raw integer counts; point the spec's layer at "
            "them, or set assume_normalized",
        )
        pieces.append(_piece(encode(batch), batch, first, lookup, encode_labels_))
        first += batch.n_cells
    return Read(pieces=tuple(pieces), inverse=inverse.astype(np.int64))


def _piece(
    encoded: TokenizedBatch,
    batch: CellBatch,
    first: int,
    lookup: Mapping[str, Mapping[str, int]],
    encode_labels_: bool,
) -> Piece:
    """One source read's tokens, cell ids and labels, as the tokenizer made them (no copy)."""
    meta = {}
    for column, table in lookup.items():
        text = _strings(batch.obs[column])
        meta[column] = encode_labels(text, table, column) if encode_labels_ else text
    return Piece(
        first=first,
        n=batch.n_cells,
        ids=encoded.input_ids,
        offsets=np.asarray(encoded.offsets, dtype=np.int64),
        values=encoded.values,
        cell_ids=batch.cell_ids.astype(str).astype(object),
        meta=meta,
    )


def _strings(column: pa.ChunkedArray) -> np.ndarray:
    """A label column's values as the label maps hold them (text; missing as ``<NA>``)."""
    return column.to_pandas().astype("string").fillna("<NA>").to_numpy(dtype=object)
