"""`atlasprep tokenize`'s options (one ``Annotated`` alias each, so the command lists them one per
line) and the parsing of the text ones into a :class:`TokenizeConfig` (the config checks the values)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from atlasprep._checks import invalid

# the choices and defaults the options show, from a module that imports nothing: the library's
# modules (numpy, pandas, zarr) are imported when the command runs, not for --help
from atlasprep._names import (
    DEFAULT_OBS_COLUMNS,
    TOKENIZE_BATCH_SIZE,
    TOKENIZE_DEFAULTS,
    Scheme,
    ShardFormatName,
    TieOrder,
)
from atlasprep.cli import _source as opt
from atlasprep.errors import UsageError

if TYPE_CHECKING:
    from atlasprep.tokenize.config import TokenizeConfig

__all__ = ["DEFAULTS", "tokenize_config"]

DEFAULTS = TOKENIZE_DEFAULTS  # TokenizeConfig's defaults (tests/test_startup.py checks they agree)
_D = DEFAULTS

Out = Annotated[
    str,
    typer.Option(
        "--out", "-o", help="The token store directory, or a URL: s3://bucket/prefix (any fsspec URL)."
    ),
]
SchemeOption = Annotated[
    Scheme, typer.Option("--scheme", help="rank (Geneformer), bin (scGPT) or raw (log1p values).")
]
MaxLen = Annotated[
    str,
    typer.Option(
        "--max-len",
        help="Tokens per cell at most (incl. special); with --modalities a budget each: rna=1536,atac=512.",
    ),
]
Modalities = Annotated[
    list[str] | None,
    typer.Option(
        "--modalities", help="An aligned .h5mu: rna,atac or rna,prot (one token segment per modality)."
    ),
]
Targets = Annotated[
    list[str] | None, typer.Option("--targets", help="An aligned .h5mu: modalities as target columns.")
]
NBins = Annotated[int, typer.Option("--n-bins", help="Bins for --scheme bin.")]
NHvg = Annotated[
    int | None,
    typer.Option("--n-hvg", help="bin: keep the N most variable genes (Seurat v3, two streaming passes)."),
]
TokenizerOption = Annotated[
    Path | None,
    typer.Option(
        "--tokenizer",
        help=(
            "A saved tokenizer (a token store, a `tokenizer export` folder or its tokenizer.json): "
            "tokenize new data exactly as that corpus was (same vocabulary, medians, bins, context "
            "tokens); no refit. Unseen context values become the column's <unk> token."
        ),
    ),
]
TokenDictionary = Annotated[Path | None, typer.Option("--token-dictionary", help="JSON gene -> id.")]
GeneMedians = Annotated[Path | None, typer.Option("--gene-medians", help="JSON gene -> median (rank).")]
GeneMapping = Annotated[Path | None, typer.Option("--gene-mapping", help="JSON id/symbol -> Ensembl ID.")]
SpecialTokens = Annotated[
    bool, typer.Option("--special-tokens/--no-special-tokens", help="<cls> first, <eos> last (rank).")
]
GeneColumn = Annotated[str | None, typer.Option("--gene-column", help="var column with Ensembl IDs.")]
NCountsColumn = Annotated[
    str,
    typer.Option(
        "--n-counts-column",
        help="rank: obs column with each cell's total (read as Geneformer reads obs['n_counts']) "
        "when the input has it; none: always the sum of the counts over all genes.",
    ),
]
TieOrderOption = Annotated[
    TieOrder,
    typer.Option(
        "--tie-order",
        help="rank: how genes of equal value are ordered. numpy: as Geneformer's argsort (its exact "
        "tokens, to reuse a pretrained model; CPU-dependent); stable: by ascending token id (the "
        "same tokens on every CPU, for a new corpus).",
    ),
]
AssumeNormalized = Annotated[bool, typer.Option("--assume-normalized", help="Accept non-integer X.")]
CountsLayer = opt.CountsLayer
MinGeneMatch = Annotated[float, typer.Option("--min-gene-match", help="Fail below this share.")]
ObsColumns = Annotated[
    list[str] | None,
    typer.Option(
        "--obs-columns",
        help=f"Metadata to keep (comma-separated or repeated) [default: {','.join(DEFAULT_OBS_COLUMNS)}].",
        show_default=False,
    ),
]
Context = Annotated[
    list[str] | None,
    typer.Option("--context", help="obs columns, e.g. tissue_general,assay: a token each (or repeated)."),
]
StoreFormat = Annotated[
    ShardFormatName, typer.Option("--format", help="arrow (IPC streams) or zarr (v3 groups).")
]
ShardCells = Annotated[
    int | None, typer.Option("--shard-cells", help=f"Cells per shard [default: {_D.shard_cells}].")
]
ShardSize = Annotated[
    str | None,
    typer.Option("--shard-size", help="Cut shards by size instead, e.g. 256MB (uncompressed Arrow bytes)."),
]
NoShuffle = Annotated[bool, typer.Option("--no-shuffle", help="Keep source order.")]
Seed = Annotated[int, typer.Option("--seed", help="Shuffle, split and sampling seed.")]
SplitBy = Annotated[
    str | None,
    typer.Option(
        "--split-by",
        help="obs column(s) whose groups split whole, e.g. donor_id,dataset_id: cells sharing a value "
        "in any are linked, and each linked group goes to one split.",
    ),
]
Split = Annotated[
    str | None,
    typer.Option("--split", help="train,val,test fractions of --split-by's groups [default: 0.8,0.1,0.1]"),
]
Holdout = Annotated[
    list[str] | None,
    typer.Option(
        "--holdout",
        help="COLUMN=VALUE (repeatable): those cells and their linked groups to test; an ontology "
        "field takes the term and its descendants (tissue=lung, cell_type=T cell, "
        "anatomical_structure_ontology_term_id=UBERON:0002094).",
    ),
]
HoldoutExact = Annotated[
    bool, typer.Option("--holdout-exact", help="Hold out the --holdout terms only, not their descendants.")
]
Stratify = Annotated[
    str | None,
    typer.Option(
        "--stratify",
        help="obs column (e.g. cell_type_ontology_term_id) whose composition each split keeps close "
        "to the whole's; the manifest records it per split.",
    ),
]
SplitFallback = Annotated[
    bool,
    typer.Option(
        "--split-fallback",
        help="A linked group too large for the fractions: keep it whole anyway, and say which "
        "fraction was not met (by default it is an error naming the group).",
    ),
]
BatchSize = Annotated[
    int, typer.Option("--batch-size", help="Cells per streamed batch (fewer when cells are dense).")
]
DropEmpty = Annotated[
    bool,
    typer.Option(
        "--drop-empty",
        help="Leave out cells without a single vocabulary gene, as Geneformer's tokenizer does "
        "(by default they are kept with special tokens only; either way the manifest counts them).",
    ),
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace a complete store.")]
Json = Annotated[bool, typer.Option("--json", help="Print the manifest as one JSON document.")]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Resolve the filters, select the cells and plan the splits; print cells, groups and "
        "shards per split and a bound on the tokens; write nothing.",
    ),
]

DEFAULT_MAX_LEN = str(_D.max_len)
DEFAULT_N_COUNTS_COLUMN = _D.n_counts_column or "none"
DEFAULT_OBS = ",".join(DEFAULT_OBS_COLUMNS)
DEFAULT_BATCH_SIZE = TOKENIZE_BATCH_SIZE


def tokenize_config(values: Mapping[str, Any]) -> TokenizeConfig:
    """The config of the command's options (``locals()``): text options parsed here, every
    value checked by the configs (whose messages the command turns into flags)."""
    from atlasprep.shard.sizes import parse_size
    from atlasprep.tokenize.config import TokenizeConfig

    split_by, held = _holdouts(values["holdout"] or [], values["split_by"])
    budgets, segment_names, input_specs = _multimodal(
        values["max_len"], values["modalities"], values["targets"], opt.input_files(values)
    )
    counts = values["n_counts_column"]
    return TokenizeConfig(
        source=opt.source_spec(values, inputs=input_specs),
        out=_out_path(values["out"]),
        scheme=values["scheme"],
        max_len=budgets.pop("rna"),
        segment_max_len=tuple(budgets.items()),
        modalities=segment_names,
        targets=opt.list_names(values["targets"]),
        n_bins=values["n_bins"],
        n_hvg=values["n_hvg"],
        token_dictionary=values["token_dictionary"],
        gene_medians=values["gene_medians"],
        gene_mapping=values["gene_mapping"],
        special_tokens=values["special_tokens"],
        min_gene_match=values["min_gene_match"],
        gene_column=values["gene_column"],
        n_counts_column=None if counts.lower() == "none" else counts,
        tie_order=values.get("tie_order", "numpy"),
        assume_normalized=values["assume_normalized"],
        drop_empty=values["drop_empty"],
        context=opt.list_names(values["context"]),
        format=values["store_format"],
        obs_columns=DEFAULT_OBS_COLUMNS
        if values["obs_columns"] is None
        else opt.list_names(values["obs_columns"]),
        shard_cells=_D.shard_cells if values["shard_cells"] is None else values["shard_cells"],
        shard_bytes=None if values["shard_size"] is None else parse_size(values["shard_size"]),
        shuffle=not values["no_shuffle"],
        seed=values["seed"],
        split_by=split_by,
        split=_given_split(values["split"], split_by),
        holdout=held,
        # .get: options the command may not list yet take their defaults
        holdout_exact=values.get("holdout_exact", _D.holdout_exact),
        stratify=values.get("stratify", _D.stratify),
        split_fallback=values.get("split_fallback", _D.split_fallback),
        overwrite=values["overwrite"],
        tokenizer=values["tokenizer"],
    )


def out_url(out: str) -> str | None:
    """``--out`` when it names object storage (``s3://…``), else None."""
    from atlasprep._remote import is_url

    return out if is_url(out) else None


def _out_path(out: str | Path) -> Path:
    """``--out`` as the config takes it: a directory, or for a URL the local directory the store
    is built in before it is uploaded."""
    from atlasprep._remote import is_url, staging_dir

    return staging_dir(out) if isinstance(out, str) and is_url(out) else Path(out)


def _holdouts(items: list[str], split_by: str | None) -> tuple[str | tuple[str, ...] | None, tuple[str, ...]]:
    """``--split-by`` (``a,b``: several columns) and ``--holdout COLUMN=VALUE`` (repeatable), as
    the config takes them. Without ``--split-by``, holdouts of one plain column (not an ontology
    field) split by that column, as ``--holdout donor_id=D1`` always has."""
    from atlasprep.ontology import FIELD_ONTOLOGIES

    columns: str | tuple[str, ...] | None = split_by
    if split_by is not None and "," in split_by:
        columns = opt.list_names(split_by)
    for item in items:
        column, sep, value = item.partition("=")
        if not sep or not column.strip() or not value.strip():
            raise UsageError(f"--holdout {item!r}: expected COLUMN=VALUE, e.g. tissue=lung or donor_id=D1")
    named = {item.partition("=")[0].strip() for item in items}
    if columns is None and len(named) == 1:
        (column,) = named
        if column not in FIELD_ONTOLOGIES and not column.endswith("_ontology_term_id"):
            columns = column
    return columns, tuple(f"{k.strip()}={v.strip()}" for k, _, v in (i.partition("=") for i in items))


def _given_split(value: str | None, split_by: object) -> tuple[float, float, float]:
    """``--split``'s fractions; given without ``--split-by`` (even as the default ones) it is
    refused, as a recipe's ``split`` is: every cell would go to train."""
    fractions = _fractions(value)
    if value is not None and split_by is None:  # (the config's own refusal, for any fractions)
        raise invalid(
            "split",
            fractions,
            "applies to a column's groups (a column such as donor_id): name it, pass --split-by",
        )
    return fractions


def _fractions(value: str | None) -> tuple[float, float, float]:
    if value is None:
        value = "0.8,0.1,0.1"  # (the config's default)
    try:
        parts = tuple(float(p) for p in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise UsageError(f"--split {value!r}: expected three fractions, e.g. 0.8,0.1,0.1")
    return parts[0], parts[1], parts[2]


def _multimodal(
    max_len: str, modalities: list[str] | None, targets: list[str] | None, inputs: list[str] | None
) -> tuple[dict[str, int], tuple[str, ...], tuple[str, ...]]:
    """(budget per modality, paired modalities, input specs) from --max-len/--modalities/--targets."""
    from atlasprep.sources._paths import split_modality
    from atlasprep.tokenize.config import parse_max_len

    budgets = parse_max_len(max_len)
    names = opt.list_names(modalities)
    specs = tuple(str(p) for p in inputs or ())
    if not names and not targets:
        if set(budgets) != {"rna"}:
            raise UsageError("per-modality --max-len budgets need --modalities")
        return budgets, (), specs
    if names and names[0] != "rna":
        raise UsageError(f"--modalities {','.join(names)!r}: the RNA comes first (rna,atac or rna,prot)")
    path, modality = split_modality(specs[0]) if len(specs) == 1 else (None, None)
    if path is None or path.suffix != ".h5mu":
        raise UsageError("--modalities/--targets need one aligned MuData --input (atlasprep align barcodes)")
    if "rna" not in budgets:
        budgets["rna"] = _D.max_len
    unknown = set(budgets) - {"rna", *names}
    if unknown:
        raise UsageError(f"--max-len names {', '.join(sorted(unknown))}, not in --modalities")
    return budgets, names[1:], (specs[0] if modality else f"{specs[0]}:rna",)
