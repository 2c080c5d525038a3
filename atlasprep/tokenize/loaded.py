"""New data tokenized with a saved tokenizer: exactly as its corpus was, with no corpus pass.

A build given ``tokenizer`` (a store, a ``tokenizer export`` folder, or a ``tokenizer.json``)
takes the encoding fields from it (:func:`with_tokenizer`) and binds it to the new source's
genes (:func:`fit_loaded`) where a fresh build would fit: the same vocabulary, gene medians,
gene mapping, bins and highly variable genes, context tokens and paired segments. What the new
data lacks is reported, never fatal: genes outside the vocabulary (the coverage, as
``min_gene_match`` reads it), highly variable genes absent from its var, context values the
corpus never had (each becomes its column's ``<unk>`` token, counted in the manifest's
coverage). The cells' totals for ``rank`` are read as Geneformer reads them, from this input's
``n_counts`` when it has the column.
"""

from __future__ import annotations

from dataclasses import replace

from atlasprep.errors import UsageError
from atlasprep.sources import CellSource
from atlasprep.sources.anndata import AnnDataSource, split_modality
from atlasprep.tokenize.config import TokenizeConfig
from atlasprep.tokenize.fit import (
    Fitted,
    Vocab,
    gene_ids_of,
    n_counts_column_of,
    stored_obs_columns,
)
from atlasprep.tokenize.segments import Segment
from atlasprep.tokenize.tokenizer import Tokenizer

__all__ = ["fit_loaded", "with_tokenizer"]


def with_tokenizer(config: TokenizeConfig, tokenizer: Tokenizer) -> TokenizeConfig:
    """``config`` with the encoding fields a saved tokenizer fixes (scheme, lengths, bins,
    special tokens, context, paired modalities): the config the build then runs with."""
    segments = [p for p in tokenizer.paired if p.role == "segment"]
    return replace(
        config,
        tokenizer=None,
        scheme=tokenizer.scheme,
        max_len=tokenizer.max_len,
        n_bins=tokenizer.n_bins,
        special_tokens=tokenizer.special_tokens,
        tie_order=tokenizer.tie_order,
        context=tokenizer.context,
        modalities=tuple(p.modality for p in segments),
        segment_max_len=tuple((p.modality, p.budget) for p in segments),
        targets=tuple(p.modality for p in tokenizer.paired if p.role == "target"),
    )


def fit_loaded(config: TokenizeConfig, source: CellSource, tokenizer: Tokenizer, origin: str) -> Fitted:
    """What :func:`~atlasprep.tokenize.fit.fit` would give, from a saved tokenizer bound to
    ``source``'s genes (``config`` from :func:`with_tokenizer`)."""
    gene_ids = gene_ids_of(source, config)
    medians = None if tokenizer.medians is None else dict(tokenizer.medians)
    vocab = Vocab(
        tokens=dict(tokenizer.tokens),
        column_tokens=tokenizer.column_tokens(gene_ids),
        source=f"tokenizer {origin}",
        medians=medians,
    )
    hvg = tokenizer.hvg_columns(gene_ids) if tokenizer.hvg_genes is not None else None
    segments, targets = _paired(config, tokenizer)
    return Fitted(
        gene_ids=gene_ids,
        vocab=vocab,
        hvg=hvg,
        obs_columns=stored_obs_columns(config, source),
        segments=segments,
        targets=targets,
        tokenizer=replace(tokenizer, n_counts_column=n_counts_column_of(config, source)),
    )


def _paired(config: TokenizeConfig, tokenizer: Tokenizer) -> tuple[tuple[Segment, ...], tuple[Segment, ...]]:
    """The tokenizer's paired modalities, read from this input's modalities of the same names,
    whose features must be the corpus's (a segment's tokens and a target's vector are per feature)."""
    if not tokenizer.paired:
        return (), ()
    inputs = config.source.inputs
    path, main = split_modality(inputs[0]) if len(inputs) == 1 else (None, None)
    if path is None or main is None:
        raise UsageError(
            f"inputs = {inputs!r}: this tokenizer pairs the RNA with "
            f"{', '.join(p.modality for p in tokenizer.paired)}; give one aligned MuData (file.h5mu:rna)"
        )
    found: dict[str, list[Segment]] = {"segment": [], "target": []}
    for paired in tokenizer.paired:
        spec = f"{path}:{paired.modality}"
        other = AnnDataSource([spec])
        try:
            features = tuple(str(f) for f in other.var().index)
        finally:
            other.close()
        if features != paired.features:
            raise UsageError(
                f"inputs = {inputs!r}: modality {paired.modality!r} has {len(features):,} features, not the "
                f"{len(paired.features):,} of the tokenizer's corpus in its order; its tokens are per "
                "feature, so the new data's features must be the corpus's (re-count on its peaks/panel)"
            )
        found[paired.role].append(tokenizer.segment(paired, spec))
    return tuple(found["segment"]), tuple(found["target"])
