"""The tokenizer as a value: everything that turns a cell into tokens, fitted once, saved with
every store, loaded for inference.

A :class:`Tokenizer` holds the scheme and its parameters, the vocabulary, the rank scheme's gene
medians and gene mapping, the bin scheme's highly variable genes, the context columns (their
value tokens are in the vocabulary) and the paired modalities' segments. It knows nothing of
where cells come from: :meth:`Tokenizer.encoder` binds it to a source's genes (its var, in
column order), and the encoder turns a :class:`~atlasprep.sources.CellBatch` into tokens — the
same tokens whether the batch is on its way into a store, into training, or is new data.

A store holds it as ``tokenizer.json`` beside the ``vocab.json`` and ``gene_medians.parquet``
it names (and ``gene_mapping.json`` where a mapping was given); :meth:`Tokenizer.from_store`
reads them back, checked as everything read from a store is.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from atlasprep.errors import InputFormatError
from atlasprep.sources import CellBatch, SourceSpec
from atlasprep.sources.base import remap_columns
from atlasprep.tokenize.binning import bin_owned, cap_genes, cell_keys
from atlasprep.tokenize.config import Encoded, Scheme, TieOrder, TokenizeConfig
from atlasprep.tokenize.context import context_token, insert_context, unknown_token
from atlasprep.tokenize.encode import cell_totals
from atlasprep.tokenize.rank import RankEncoder
from atlasprep.tokenize.raw import raw_encode
from atlasprep.tokenize.segments import KINDS, Segment, encode_segment, segment_vector, splice
from atlasprep.tokenize.vocab import gene_tokens

__all__ = ["PairedBatch", "PairedModality", "TokenizedBatch", "Tokenizer", "cell_totals"]

log = logging.getLogger("atlasprep.tokenize")

if TYPE_CHECKING:  # tokenizer_files imports this module
    import anndata as ad

    from atlasprep.tokenize.tokenizer_files import TokenizerRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class PairedModality:
    """A modality paired with the RNA (an aligned MuData's ``atac`` or ``prot``): a segment of
    tokens after the RNA, within its budget, or a target stored whole (its features' vector)."""

    modality: str  # "atac" | "prot"
    role: Literal["segment", "target"]
    budget: int  # segment tokens at most (separator not counted)
    features: tuple[str, ...]  # var names, in var order
    idf: tuple[float, ...] | None = None  # ATAC: the corpus IDF per peak


@dataclass(frozen=True, slots=True, kw_only=True)
class PairedBatch:
    """A batch's tokens with its paired segments spliced in: a ``token_type`` per token, and
    each target modality's vector per cell (flat, ``width`` values a cell)."""

    input_ids: np.ndarray
    offsets: np.ndarray
    values: np.ndarray  # float32
    token_type: np.ndarray  # int8: 0 special or context, 1 RNA, 2 ATAC, 3 protein
    targets: dict[str, np.ndarray]  # modality -> (cells × features) float32


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenizedBatch:
    """A batch's cells as tokens: flat ``input_ids`` (and ``values``) cut by ``offsets``, and
    each cell's number of gene tokens (0: a cell with no vocabulary gene)."""

    input_ids: np.ndarray  # int32
    offsets: np.ndarray  # int64, n_cells + 1
    values: np.ndarray | None
    n_genes: np.ndarray  # int64 per cell
    unknown_context: tuple[tuple[str, int], ...] = ()  # (column, cells) given its <unk> token
    truncated: np.ndarray | None = None  # bool per cell: max_len cut some of its genes


@dataclass(frozen=True, slots=True, kw_only=True)
class Tokenizer:
    """Everything that turns a cell into tokens (see the module's docstring)."""

    scheme: Scheme
    tokens: Mapping[str, int]  # the vocabulary: special tokens, genes, context values, features
    max_len: int
    n_bins: int = 51
    special_tokens: bool = True
    seed: int = 0  # bin: which genes a cell longer than max_len keeps (a fixed, hashed sample)
    medians: Mapping[str, float] | None = None  # rank: each vocabulary gene's nonzero median
    gene_mapping: Mapping[str, str] | None = None  # rank: input IDs or symbols -> vocabulary genes
    hvg_genes: tuple[str, ...] | None = None  # bin: the genes binned (all vocabulary genes if None)
    n_counts_column: str | None = None  # rank: obs column of each cell's total, else the sum
    tie_order: TieOrder = TieOrder.numpy  # rank: how genes of equal value are ordered
    context: tuple[str, ...] = ()  # obs columns whose value becomes one token after <cls>
    paired: tuple[PairedModality, ...] = ()  # segments and targets of an aligned MuData

    # -- encoding -------------------------------------------------------------------------------

    @property
    def framed(self) -> bool:
        """Whether cells are framed by ``<cls>`` … ``<eos>`` (rank with special tokens)."""
        return self.scheme == "rank" and self.special_tokens

    def column_tokens(self, gene_ids: Sequence[str]) -> np.ndarray:
        """Each input column's gene token (-1: not in the vocabulary), through the gene mapping
        where there is one (rank), as the encoder matches them."""
        return gene_tokens(gene_ids, self.tokens, self.gene_mapping)

    def encoder(
        self, gene_ids: Sequence[str], *, hvg_columns: np.ndarray | None = None
    ) -> Callable[[CellBatch], TokenizedBatch]:
        """``encode(batch)`` for a source whose var is ``gene_ids`` (column order): a cell's
        tokens depend on the cell alone (bin's fixed sample of genes is keyed by its id)."""
        genes = [str(g) for g in gene_ids]
        base = self._gene_encoder(genes, hvg_columns)
        context = self.context

        def encode(batch: CellBatch) -> TokenizedBatch:
            ids, offsets, values, available = base(batch)
            n_genes = np.diff(offsets) - (2 if self.framed else 0)
            unknown: tuple[tuple[str, int], ...] = ()
            if context:
                context_ids, unknown = self.context_ids(batch.obs)
                ids, offsets, values = insert_context(
                    ids,
                    offsets,
                    context_ids,
                    at=1 if self.framed else 0,
                    max_len=self.max_len,
                    keep_tail=1 if self.framed else 0,
                    values=values,
                )
            kept = np.diff(offsets) - (2 if self.framed else 0) - len(context)  # after the context's room
            return TokenizedBatch(
                input_ids=ids,
                offsets=offsets,
                values=values,
                n_genes=n_genes,
                unknown_context=unknown,
                truncated=available > kept,
            )

        return encode

    def context_ids(self, obs: pa.Table) -> tuple[np.ndarray, tuple[tuple[str, int], ...]]:
        """(cells × context columns) token ids of a batch's context values, and how many cells
        of each column held a value the tokenizer was not fitted on (given the column's
        ``<unk>`` token; a tokenizer saved without one refuses them)."""
        out = np.empty((obs.num_rows, len(self.context)), dtype=np.int32)
        unknown = []
        for j, column in enumerate(self.context):
            values = obs[column].to_pandas().astype("string").fillna("<NA>")
            distinct = values.unique()
            lookup = {v: self.tokens.get(context_token(column, v), -1) for v in distinct}
            ids = values.map(lookup).to_numpy(dtype=np.int32)
            unseen = ids < 0
            if unseen.any():
                fallback = self.tokens.get(unknown_token(column))
                if fallback is None:
                    first = next(v for v in distinct if lookup[v] < 0)
                    raise InputFormatError(
                        f"obs[{column!r}] holds {first!r}, a value this tokenizer has no token for "
                        "(it knows the values of the corpus it was fitted on, and has no <unk> token)"
                    )
                ids[unseen] = fallback
                unknown.append((column, int(unseen.sum())))
            out[:, j] = ids
        return out, tuple(unknown)

    def segment(self, paired: PairedModality, spec: str = "") -> Segment:
        """A paired modality as the segment kernels take it (its tokens from the vocabulary);
        ``spec`` names where a build reads its rows (``file.h5mu:atac``)."""
        prefix = KINDS[paired.modality][0]
        is_segment = paired.role == "segment"
        return Segment(
            modality=paired.modality,
            spec=spec,
            budget=paired.budget,
            sep_id=self.tokens[f"<sep:{paired.modality}>"] if is_segment else -1,
            tokens=np.array(
                [self.tokens[f"{prefix}:{f}"] for f in paired.features] if is_segment else [], np.int32
            ),
            idf=None if paired.idf is None else np.asarray(paired.idf, dtype=np.float64),
            features=paired.features,
        )

    def encode_paired(self, cells: TokenizedBatch, X: Mapping[str, sp.csr_matrix]) -> PairedBatch:
        """Splice each paired segment after the RNA tokens of the same cells (``X``: each paired
        modality's counts, rows aligned with the batch's), and compute the target vectors. For
        many batches, bind once with :meth:`paired_encoder`."""
        return self.paired_encoder()(cells, X)

    def paired_encoder(self) -> Callable[[TokenizedBatch, Mapping[str, sp.csr_matrix]], PairedBatch]:
        """:meth:`encode_paired` with the segments' tokens and the special ids looked up once."""
        segments = [self.segment(p) for p in self.paired if p.role == "segment"]
        targets = [self.segment(p) for p in self.paired if p.role == "target"]
        special = np.array([i for t, i in self.tokens.items() if t.startswith("<")], np.int32)
        keep_tail = 1 if self.framed else 0

        def encode(cells: TokenizedBatch, X: Mapping[str, sp.csr_matrix]) -> PairedBatch:
            values = cells.values
            flat = np.zeros(len(cells.input_ids), np.float32) if values is None else values.astype(np.float32)
            parts = [(s.sep_id, s.token_type, *encode_segment(s, X[s.modality])) for s in segments]
            ids, offsets, spliced, types = splice(
                (cells.input_ids, cells.offsets, flat), parts, keep_tail=keep_tail
            )
            types[np.isin(ids, special)] = 0
            vectors = {
                t.modality: segment_vector(t.modality, X[t.modality], t.idf).astype(np.float32)
                for t in targets
            }
            return PairedBatch(
                input_ids=ids, offsets=offsets, values=spliced, token_type=types, targets=vectors
            )

        return encode

    def _gene_encoder(
        self, gene_ids: list[str], hvg_columns: np.ndarray | None
    ) -> Callable[[CellBatch], Encoded]:
        if self.scheme == "rank":
            return self._rank_encoder(gene_ids)
        column_tokens = self.column_tokens(gene_ids)
        if self.scheme == "raw":

            def encode_raw(batch: CellBatch) -> Encoded:
                cells = raw_encode(batch.X, column_tokens, max_len=self.max_len)
                return cells.input_ids, cells.offsets, cells.values, cells.available

            return encode_raw
        # bins over the vocabulary genes (or the most variable of them), as scGPT; a cell's genes
        # by ascending token id, whatever the input's column order (a corpus-built vocabulary
        # numbers the genes in the corpus's order, so its stores keep that order)
        columns = self._bin_columns(gene_ids, column_tokens) if hvg_columns is None else hvg_columns
        columns = columns[np.argsort(column_tokens[columns], kind="stable")]
        tokens = column_tokens[columns]

        def encode_bin(batch: CellBatch) -> Encoded:
            binned = bin_owned(sp.csr_matrix(batch.X)[:, columns], self.n_bins)  # (a copy: its own)
            available = np.diff(binned.indptr).astype(np.int64)
            if len(available) and available.max() > self.max_len:
                keys = cell_keys(batch.cell_ids)
                binned = cap_genes(binned, self.max_len, seed=self.seed, row_keys=keys, column_keys=tokens)
            ids = tokens[binned.indices]
            offsets = binned.indptr.astype(np.int64)
            return ids.astype(np.int32), offsets, binned.data.astype(np.int32), available

        return encode_bin

    def _bin_columns(self, gene_ids: list[str], column_tokens: np.ndarray) -> np.ndarray:
        if self.hvg_genes is None:
            return np.flatnonzero(column_tokens >= 0)
        return self.hvg_columns(gene_ids)

    def hvg_columns(self, gene_ids: Sequence[str]) -> np.ndarray:
        """The input columns of the tokenizer's highly variable genes, in the tokenizer's order.
        Genes the input lacks are left out with a warning (they would bin to 0, which scGPT
        does not emit); an input with none of them is refused."""
        assert self.hvg_genes is not None
        first: dict[str, int] = {}
        for column, gene in enumerate(gene_ids):
            first.setdefault(str(gene), column)
        present = [first[g] for g in self.hvg_genes if g in first]
        absent = len(self.hvg_genes) - len(present)
        if not present:
            raise InputFormatError(
                f"none of the tokenizer's {len(self.hvg_genes)} highly variable genes is in this input's "
                f"var (e.g. {', '.join(self.hvg_genes[:3])}); are var IDs symbols where it has Ensembl IDs?"
            )
        if absent:
            log.warning(
                "%d of the tokenizer's %d highly variable genes are not in this input's var; "
                "they are left out, as if not expressed",
                absent,
                len(self.hvg_genes),
            )
        return np.array(present, dtype=np.int64)

    def _rank_encoder(self, gene_ids: list[str]) -> Callable[[CellBatch], Encoded]:
        assert self.medians is not None, "the rank scheme needs gene medians"
        ranking = functools.partial(
            RankEncoder.from_dictionaries,
            token_dictionary=self.tokens,
            gene_medians=self.medians,
            gene_mapping=self.gene_mapping,
            max_len=self.max_len,
            special_tokens=self.special_tokens,
            tie_order=self.tie_order,
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

        column = self.n_counts_column

        def encode_rank(batch: CellBatch) -> Encoded:
            n_counts = None if column is None else cell_totals(batch.obs, column)
            X, encoder = batch.X, whole
            if batch.stored_columns is not None:
                own, encoder = own_encoder(np.asarray(batch.stored_columns, dtype=np.int64))
                position = np.full(X.shape[1], -1, dtype=np.int64)
                position[own] = np.arange(len(own))
                X = remap_columns(X, position, len(own))
            ranked = encoder.encode(X, n_counts, x_dtype=batch.stored_dtype, dense=batch.stored_dense)
            assert ranked.available is not None
            return ranked.input_ids, ranked.offsets, None, ranked.available

        return encode_rank

    # -- fitting, saving and loading ------------------------------------------------------------

    @classmethod
    def fit(cls, config: TokenizeConfig | SourceSpec, **fields: Any) -> Tokenizer:
        """Make the corpus passes a build of ``config`` (or of a spec and config ``fields``)
        makes (medians, HVG, context values) on the cells it selects; no store is written."""
        from atlasprep.tokenize.api import fit_tokenizer

        if isinstance(config, SourceSpec):
            config = TokenizeConfig(source=config, out=Path(os.devnull), **fields)
        elif fields:
            config = dataclasses.replace(config, **fields)
        return fit_tokenizer(config)

    def record(self) -> TokenizerRecord:
        """``tokenizer.json``'s content (see :mod:`atlasprep.tokenize.tokenizer_files`)."""
        from atlasprep.tokenize.tokenizer_files import tokenizer_record

        return tokenizer_record(self)

    def save_files(self, directory: Path) -> bytes:
        """Write the tokenizer's files into a store directory; the vocabulary's bytes returned."""
        from atlasprep.tokenize.tokenizer_files import save_tokenizer

        return save_tokenizer(self, directory)

    @classmethod
    def from_store(cls, store: str | Path) -> Tokenizer:
        """The tokenizer a store was built with (its files checked against the manifest)."""
        from atlasprep.tokenize.tokenizer_files import load_tokenizer

        return load_tokenizer(store)

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """A saved tokenizer: a store, a ``tokenizer export`` folder, or its ``tokenizer.json``."""
        from atlasprep.tokenize.tokenizer_files import load_tokenizer_from

        return load_tokenizer_from(path)

    def __call__(
        self,
        data: ad.AnnData | str | Path,
        *,
        gene_column: str | None = None,
        layer: str | None = None,
        pad_to: int | None = None,
        assume_normalized: bool = False,
    ) -> dict[str, Any]:
        """New cells (an AnnData, or an AnnData file's path) as the batch dict the loaders give:
        ``input_ids``, ``attention_mask``, ``values`` (bin, raw) and ``cell_id``, torch tensors
        when torch is installed, else numpy; encoded exactly as the corpus was. For what the
        data lacked (genes, context values), see :func:`atlasprep.tokenize.inference.tokenize_new`."""
        from atlasprep.tokenize.inference import tokenize_new

        batch, _ = tokenize_new(
            self,
            data,
            gene_column=gene_column,
            layer=layer,
            pad_to=pad_to,
            assume_normalized=assume_normalized,
        )
        return batch

    def export(self, out: str | Path, *, overwrite: bool = False) -> Path:
        """Write this tokenizer alone into a new folder (``tokenizer.json``, ``vocab.json`` and
        the medians and mapping it names), which :meth:`load` reads."""
        from atlasprep.tokenize.tokenizer_files import export_tokenizer

        return export_tokenizer(self, out, overwrite=overwrite)
