"""One read of a :class:`~atlasprep.loader.stream.StreamDataset`: some cells' counts, checked
and tokenized in one call, held as flat token buffers until their batches are sent."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from atlasprep.loader._window import Piece
from atlasprep.loader.collate import encode_labels
from atlasprep.sources import CellBatch, CellSource
from atlasprep.sources.counts import check_counts
from atlasprep.tokenize.tokenizer import TokenizedBatch, Tokenizer

__all__ = ["Read", "read_cells"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Read:
    """Distinct cells read once (source order), as a :class:`~atlasprep.loader._window.Piece`
    (its flat tokens; labels encoded for batches, text for single cells); ``inverse`` maps each
    requested place to its row in the piece."""

    piece: Piece
    inverse: np.ndarray


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
    ids, lengths, values, cell_ids = [], [], [], []
    labels: dict[str, list[np.ndarray]] = {c: [] for c in lookup}
    for batch in source.iter_batches(distinct, var_positions=None, batch_size=read_size, obs_columns=columns):
        check_counts(
            batch.X,
            where="the streamed counts",
            integer=integer,
            hint=f"the {tokenizer.scheme} scheme reads raw integer counts; point the spec's layer at "
            "them, or set assume_normalized",
        )
        encoded = encode(batch)
        ids.append(encoded.input_ids)
        lengths.append(np.diff(encoded.offsets))
        if encoded.values is not None:
            values.append(encoded.values)
        cell_ids.append(batch.cell_ids.astype(str))
        for column, table in lookup.items():
            text = _strings(batch.obs[column])
            labels[column].append(encode_labels(text, table, column) if encode_labels_ else text)
    offsets = np.zeros(len(distinct) + 1, dtype=np.int64)
    np.cumsum(np.concatenate(lengths), out=offsets[1:])
    piece = Piece(
        first=0,
        n=len(distinct),
        ids=np.concatenate(ids),
        offsets=offsets,
        values=np.concatenate(values) if values else None,
        cell_ids=np.concatenate(cell_ids).astype(object),
        meta={c: np.concatenate(v) for c, v in labels.items()},
    )
    return Read(piece=piece, inverse=inverse.astype(np.int64))


def _strings(column: pa.ChunkedArray) -> np.ndarray:
    """A label column's values as the label maps hold them (text; missing as ``<NA>``)."""
    return column.to_pandas().astype("string").fillna("<NA>").to_numpy(dtype=object)
