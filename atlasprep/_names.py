"""The choices and defaults the command line's options show, in a module that imports nothing.

typer reads a command's options (their types, choices and defaults) when the command's module
is imported, and the library modules that use these names (``tokenize.config``,
``sources.spec``, ``shard.format``, …) import numpy, pandas, pyarrow or zarr, which take about a
second; ``atlasprep --help`` and every ``--help`` would pay for them. So the choice enums are
defined here, once, and the library imports them from here (``atlasprep.tokenize.config.Scheme``
is this ``Scheme``), and so are the constants below. The dataclass defaults are copies of the
library's (a dataclass's defaults live on the dataclass): ``tests/test_startup.py`` checks that
each equals the library's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "DEFAULT_OBS_COLUMNS",
    "DEFAULT_ONTOLOGIES",
    "SCHEMA_VERSION",
    "SOURCE_DEFAULTS",
    "TOKENIZE_BATCH_SIZE",
    "TOKENIZE_DEFAULTS",
    "Embedding",
    "Executor",
    "JoinHow",
    "Profile",
    "Scheme",
    "ShardFormatName",
    "SourceDefaults",
    "TieOrder",
    "TokenizeDefaults",
]


class Scheme(StrEnum):
    """How a cell becomes tokens: Geneformer's rank value encoding, scGPT's value bins, or raw
    log1p-normalized values."""

    rank = "rank"
    bin = "bin"
    raw = "raw"


class TieOrder(StrEnum):
    """How the rank scheme orders genes of equal normalized value. ``numpy``: as Geneformer's
    ``np.argsort(-values)`` does, over the input's columns; Geneformer's exact tokens, on a
    CPU whose numpy sort breaks ties as the model's did (AVX-512 and other CPUs differ).
    ``stable``: by ascending token id (the gene's id in the vocabulary); the same tokens on
    every CPU, whatever the input's column order, batch size or thread count."""

    numpy = "numpy"
    stable = "stable"


class ShardFormatName(StrEnum):
    """The shard formats a store can use (what configs and manifests name)."""

    arrow = "arrow"
    zarr = "zarr"


class JoinHow(StrEnum):
    """Which cells a join keeps: those in every modality, or all (each marked present or not)."""

    inner = "inner"
    outer = "outer"


class Embedding(StrEnum):
    """The embedding harmonize computes: ``pca`` (obsm X_pca) or ``umap`` (obsm X_umap)."""

    pca = "pca"
    umap = "umap"

    @property
    def key(self) -> str:
        """Where the embedding goes in ``obsm``."""
        return f"X_{self.value}"


class Executor(StrEnum):
    """Where tokenize's encode pass runs: in this process, or on a Dask cluster."""

    local = "local"
    dask = "dask"


class Profile(StrEnum):
    """The rules a slice is validated against: the CELLxGENE schema (``cellxgene``), that schema plus
    HCA Tier 1 (``hca``), or that schema without its upload-only rules (``atlasprep``: no title and no
    embedding needed, for files meant only for training)."""

    cellxgene = "cellxgene"
    hca = "hca"
    atlasprep = "atlasprep"


# atlasprep.ontology: the pinned CELLxGENE schema, and the ontologies searched, in this order,
# when no ontology is named. NCBITaxon and the other supported ontologies are left out: they are
# not Census obs fields, and NCBITaxon takes ~16 s to load.
SCHEMA_VERSION = "7.1.0"
DEFAULT_ONTOLOGIES: tuple[str, ...] = (
    "CL",
    "UBERON",
    "MONDO",
    "EFO",
    "PATO",
    "HsapDv",
    "HANCESTRO",
    "MmusDv",
)

# atlasprep.tokenize.config: the obs columns a token store keeps by default, and the cells per
# batch for `atlasprep tokenize` (slice streams 4,096): twice as many cells share a length, so the
# rank kernel makes fewer sort calls, and a shard gathers from half as many spills; a batch of
# dense cells still closes at the value budget (batch size × 2,000 stored values).
DEFAULT_OBS_COLUMNS: tuple[str, ...] = (
    "dataset_id",
    "donor_id",
    "cell_type_ontology_term_id",
    "tissue_ontology_term_id",
    "assay_ontology_term_id",
)
TOKENIZE_BATCH_SIZE = 8_192


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceDefaults:
    """The defaults of :class:`atlasprep.sources.SourceSpec` that options show."""

    organism: str = "Homo sapiens"
    seed: int = 0
    batch_size: int = 4_096


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenizeDefaults:
    """The defaults of :class:`atlasprep.tokenize.config.TokenizeConfig` that options show."""

    source: SourceDefaults = field(default_factory=SourceDefaults)
    scheme: Scheme = Scheme.rank
    tie_order: TieOrder = TieOrder.numpy
    max_len: int = 4096
    n_bins: int = 51
    special_tokens: bool = True
    n_counts_column: str | None = "n_counts"
    min_gene_match: float = 0.0
    shard_cells: int = 10_000
    seed: int = 0
    holdout_exact: bool = False
    stratify: str | None = None
    split_fallback: bool = False
    format: ShardFormatName = ShardFormatName.arrow


SOURCE_DEFAULTS = SourceDefaults()
TOKENIZE_DEFAULTS = TokenizeDefaults()
