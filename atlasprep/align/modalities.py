"""Load one modality of an input file as AnnData, whatever the file is.

An input is a path, optionally followed by ``:NAME`` for an ``.h5mu`` (``data.h5mu:atac``).
What each kind of file gives for the requested modality (``rna``, ``atac`` or ``prot``):

* 10x output (``filtered_feature_bc_matrix`` directory, a ``.tar.gz`` of one, or a ``.h5``):
  the features of the modality's type — "Gene Expression", "Peaks", "Antibody Capture".
  One file may serve several modalities (``rna=m.tar.gz, protein=m.tar.gz``); it is read
  once.
* ``.h5mu``: the modality named after the colon, else the first of ``rna``/``gex``,
  ``atac``/``peaks``, ``prot``/``protein``/``adt`` that the file has.
* ``.h5ad`` or ``.zarr`` AnnData: for protein, ``obsm["protein_expression"]`` when present
  (CITE-seq files from scvi-tools keep ADT counts there, names in ``uns["protein_names"]``
  or as DataFrame columns); otherwise X.

Whenever ``var["feature_types"]`` mixes types, only the requested type is kept.

Each modality's features must then look like what its argument says (:func:`feature_kind`): peaks for
``atac``, genes for ``rna``, antibodies for ``protein``. A swap (``rna="f.h5mu:atac"``) is
refused; features that look like nothing in particular (``g0``, ``feature_1``) pass.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anndata as ad
import h5py
import mudata as md  # type: ignore[import-untyped, unused-ignore]
import numpy as np
import pandas as pd
import zarr
from anndata import OldFormatWarning
from anndata.io import read_elem

from atlasprep.align.tenx import FeatureType, is_10x_dir, is_10x_tar, read_10x, select_feature_type
from atlasprep.errors import InputFormatError, SourceError
from atlasprep.reference.genes import GENE_ANNOTATIONS, gene_table
from atlasprep.sources.anndata import split_modality

__all__ = [
    "FEATURE_TYPES",
    "FIELDS",
    "H5MU_NAMES",
    "FeatureKind",
    "InputKind",
    "LoadedModality",
    "Modality",
    "ModalityInput",
    "feature_kind",
    "load_modalities",
    "load_modality",
    "parse_input",
]

log = logging.getLogger("atlasprep.align")

Modality = Literal["rna", "atac", "prot"]
InputKind = Literal["10x", "h5mu", "h5ad", "zarr"]

# the argument (and config field) that names each modality's input; errors start with it
FIELDS: dict[Modality, str] = {"rna": "rna", "atac": "atac", "prot": "protein"}
FEATURE_TYPES: dict[Modality, FeatureType] = {
    "rna": "Gene Expression",
    "atac": "Peaks",
    "prot": "Antibody Capture",
}
H5MU_NAMES: dict[Modality, tuple[str, ...]] = {
    "rna": ("rna", "gex"),
    "atac": ("atac", "peaks"),
    "prot": ("prot", "protein", "adt"),
}
PROTEIN_OBSM = "protein_expression"
PROTEIN_NAMES = "protein_names"

FeatureKind = Literal["peaks", "genes", "antibodies"]
_KIND: dict[Modality, FeatureKind] = {"rna": "genes", "atac": "peaks", "prot": "antibodies"}
_KIND_OF_TYPE: dict[str, FeatureKind] = {v: _KIND[k] for k, v in FEATURE_TYPES.items()}
_KIND_WORDS: dict[FeatureKind, str] = {
    "peaks": "ATAC peaks",
    "genes": "RNA genes",
    "antibodies": "antibodies (protein)",
}
_FIELD_OF_KIND: dict[FeatureKind, str] = {_KIND[m]: field for m, field in FIELDS.items()}
# names: chr1:100-200, chr1-100-200, chr1_100_200, GL000194.1:100-200
_PEAK_NAME = re.compile(r"^[A-Za-z0-9_.]+[:_-]\d+[-_:]\d+$")
_ENSEMBL_GENE = re.compile(r"^ENS[A-Z]*G\d{6,}(?:\.\d+)?$")
_ANTIBODY_NAME = re.compile(r"totalseq|^adt[_-]|[_-]adt$", re.IGNORECASE)
_NAME_SAMPLE = 2_000  # names looked at, spread over the features
_PANEL_MAX = 1_000  # more features than any antibody panel: a majority of gene symbols is RNA


@dataclass(frozen=True, slots=True, kw_only=True)
class ModalityInput:
    """Where one modality comes from."""

    modality: Modality
    path: Path
    kind: InputKind
    h5mu_modality: str | None = None  # the ``:NAME`` suffix, for h5mu only

    @property
    def field(self) -> str:
        return FIELDS[self.modality]

    def describe(self) -> str:
        return f"{self.path}:{self.h5mu_modality}" if self.h5mu_modality else str(self.path)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class LoadedModality:
    """One modality's cells (obs names are the file's raw barcodes) and where they came from."""

    input: ModalityInput
    adata: ad.AnnData
    source: str  # what was read, for the report: "x.h5mu:rna", "x.h5ad obsm['protein_expression']"


def parse_input(spec: str | os.PathLike[str], modality: Modality) -> ModalityInput:
    """Split ``path[:name]`` and tell the kind of file; errors name the argument."""
    field = FIELDS[modality]
    path, name = split_modality(spec)
    if name == "":
        raise InputFormatError(f"{field} {spec}: empty modality name after ':'")
    if not path.exists():
        raise SourceError(f"{field} {path}: no such file or directory")
    kind = _kind_of(path, field)
    if name is not None and kind != "h5mu":
        raise InputFormatError(f"{field} {spec}: ':{name}' picks a modality of an .h5mu file only")
    return ModalityInput(modality=modality, path=path, kind=kind, h5mu_modality=name)


def _kind_of(path: Path, field: str) -> InputKind:
    if path.suffix == ".h5mu":
        return "h5mu"
    if path.suffix == ".h5ad":
        return "h5ad"
    if path.suffix == ".zarr" or path.name.endswith(".zarr.zip"):
        return "zarr"
    if path.suffix == ".h5" or is_10x_tar(path):
        return "10x"
    if path.is_dir() and (is_10x_dir(path) or is_10x_dir(path / "filtered_feature_bc_matrix")):
        return "10x"
    raise InputFormatError(
        f"{field} {path}: unknown input; give an .h5ad, .zarr, .h5mu[:modality], a 10x .h5, "
        "a filtered_feature_bc_matrix directory or a .tar.gz of one"
    )


def load_modality(spec: str | os.PathLike[str], modality: Modality) -> LoadedModality:
    return load_modalities({modality: spec})[modality]


def load_modalities(specs: Mapping[Modality, str | os.PathLike[str]]) -> dict[Modality, LoadedModality]:
    """Each requested modality; a 10x file named for several modalities is read once."""
    inputs = {modality: parse_input(spec, modality) for modality, spec in specs.items()}
    tenx_cache: dict[Path, ad.AnnData] = {}
    loaded: dict[Modality, LoadedModality] = {}
    for modality, inp in inputs.items():
        if inp.kind == "10x":
            key = inp.path.resolve()
            if key not in tenx_cache:
                tenx_cache[key] = read_10x(inp.path)
            adata = select_feature_type(
                tenx_cache[key], FEATURE_TYPES[modality], where=f"{inp.field} {inp.path}"
            )
            source = f"{inp.path} [{FEATURE_TYPES[modality]}]"
        elif inp.kind == "h5mu":
            adata, source = _load_h5mu(inp)
        else:
            adata, source = _load_anndata(inp)
        if adata.n_obs == 0:
            raise InputFormatError(f"{inp.field} {source}: no cells")
        if inp.kind != "10x":  # a 10x matrix was split by its own feature types
            _check_feature_kind(adata, modality, f"{inp.field} {source}")
        loaded[modality] = LoadedModality(input=inp, adata=adata, source=source)
        log.info("%s: %d cells × %d features from %s", modality, adata.n_obs, adata.n_vars, source)
    return loaded


def _load_h5mu(inp: ModalityInput) -> tuple[ad.AnnData, str]:
    try:
        with h5py.File(inp.path, "r") as handle:
            present = list(handle["mod"].keys()) if "mod" in handle else []
    except OSError as exc:
        raise SourceError(f"{inp.field} {inp.path}: cannot open as HDF5 ({exc})") from None
    if not present:
        raise InputFormatError(f"{inp.field} {inp.path}: no modalities under /mod; is it a MuData file?")
    if inp.h5mu_modality is not None:
        name = inp.h5mu_modality
        if name not in present:
            raise InputFormatError(
                f"{inp.field} {inp.describe()}: no modality {name!r} in the file "
                f"(it has {', '.join(present)})"
            )
    else:
        found = [n for n in H5MU_NAMES[inp.modality] if n in present]
        if not found:
            raise InputFormatError(
                f"{inp.field} {inp.path}: no modality called {' or '.join(H5MU_NAMES[inp.modality])} "
                f"(it has {', '.join(present)}); name one as {inp.path}:NAME"
            )
        name = found[0]
    with warnings.catch_warnings():
        # files written by older muon lack encoding attributes; anndata reads them fine
        warnings.simplefilter("ignore", OldFormatWarning)
        adata = md.read_h5ad(inp.path, name)
    source = f"{inp.path}:{name}"
    return _only_feature_type(adata, inp.modality, source), source


def _load_anndata(inp: ModalityInput) -> tuple[ad.AnnData, str]:
    if inp.modality == "prot":
        protein = _obsm_protein(inp)
        if protein is not None:
            return protein, f"{inp.path} obsm[{PROTEIN_OBSM!r}]"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OldFormatWarning)
        try:
            if inp.kind == "h5ad":
                adata = ad.read_h5ad(inp.path)
            elif inp.path.name.endswith(".zip"):
                store = zarr.storage.ZipStore(inp.path, mode="r")
                try:
                    adata = ad.read_zarr(store)
                finally:
                    store.close()
            else:
                adata = ad.read_zarr(inp.path)
        except (OSError, KeyError) as exc:
            raise SourceError(f"{inp.field} {inp.path}: cannot read as AnnData ({exc})") from None
    return _only_feature_type(adata, inp.modality, str(inp.path)), str(inp.path)


def _obsm_protein(inp: ModalityInput) -> ad.AnnData | None:
    """ADT counts kept beside RNA in ``obsm["protein_expression"]``; None when there are none.
    Reads only obs names, that matrix and the names, never X."""
    if inp.kind != "h5ad":
        return None
    try:
        handle = h5py.File(inp.path, "r")
    except OSError as exc:
        raise SourceError(f"{inp.field} {inp.path}: cannot open as HDF5 ({exc})") from None
    with handle, warnings.catch_warnings():
        warnings.simplefilter("ignore", OldFormatWarning)
        if "obsm" not in handle or PROTEIN_OBSM not in handle["obsm"]:
            return None
        values: Any = read_elem(handle["obsm"][PROTEIN_OBSM])
        obs_names = read_elem(handle["obs"]).index
        names: Any = None
        if "uns" in handle and PROTEIN_NAMES in handle["uns"]:
            names = read_elem(handle["uns"][PROTEIN_NAMES])
    if isinstance(values, pd.DataFrame):
        names = values.columns if names is None else names
        values = values.to_numpy()
    matrix = np.asarray(values)
    if names is None:
        raise InputFormatError(
            f"{inp.field} {inp.path}: obsm[{PROTEIN_OBSM!r}] has no protein names; "
            f"store them in uns[{PROTEIN_NAMES!r}]"
        )
    var_names = pd.Index(np.asarray(names).astype(str))
    if matrix.ndim != 2 or matrix.shape != (len(obs_names), len(var_names)):
        raise InputFormatError(
            f"{inp.field} {inp.path}: obsm[{PROTEIN_OBSM!r}] is {matrix.shape}, but there are "
            f"{len(obs_names)} cells and {len(var_names)} names in uns[{PROTEIN_NAMES!r}]"
        )
    return ad.AnnData(
        X=matrix.astype(np.float32),
        obs=pd.DataFrame(index=pd.Index(obs_names.astype(str))),
        var=pd.DataFrame(
            {"feature_types": pd.Categorical(["Antibody Capture"] * len(var_names))}, index=var_names
        ),
    )


def _only_feature_type(adata: ad.AnnData, modality: Modality, source: str) -> ad.AnnData:
    """Drop other modalities' features when ``var["feature_types"]`` mixes them."""
    if "feature_types" not in adata.var.columns:
        return adata
    types = adata.var["feature_types"].astype(str)
    wanted = FEATURE_TYPES[modality]
    if types.nunique() > 1 and (types == wanted).any():
        return select_feature_type(adata, wanted, where=source)
    return adata


def feature_kind(
    var: pd.DataFrame, names: pd.Index, *, symbols: bool = False
) -> tuple[FeatureKind | None, str]:
    """What a modality's features look like, with the evidence, by a majority of up to 2,000
    features spread over them: ``var["feature_types"]`` when present, else the names (genomic
    intervals are peaks, Ensembl gene IDs genes, TotalSeq/ADT names antibodies; with ``symbols``,
    GENCODE gene symbols are genes too). None when nothing stands out."""
    n = len(names)
    if n == 0:
        return None, ""
    take = np.unique(np.linspace(0, n - 1, min(n, _NAME_SAMPLE)).astype(np.int64))
    if "feature_types" in var.columns:
        types = var["feature_types"].iloc[take].astype(str).value_counts()
        kind = _KIND_OF_TYPE.get(str(types.index[0]))
        if kind is not None and types.iloc[0] * 2 > len(take):
            return kind, f"var['feature_types'] is {types.index[0]!r}"
    sample = pd.Series(names[take].astype(str))
    tests: list[tuple[FeatureKind, Any, str]] = [
        ("peaks", _PEAK_NAME, "genomic intervals"),
        ("genes", _ENSEMBL_GENE, "Ensembl gene IDs"),
        ("antibodies", _ANTIBODY_NAME, "antibody names"),
    ]
    for kind, pattern, what in tests:
        hits = sample.str.contains(pattern)
        if hits.sum() * 2 > len(sample):
            return kind, f"{what} such as {', '.join(sample[hits].head(2))}"
    if symbols:
        hits = sample.str.upper().isin(_gene_symbols())
        if hits.sum() * 2 > len(sample):
            return "genes", f"gene symbols such as {', '.join(sample[hits].head(2))}"
    return None, ""


@functools.cache
def _gene_symbols() -> pd.Index:
    """Upper-cased GENCODE symbols of every organism atlasprep ships."""
    names = [gene_table(o).genes["feature_name"].str.upper() for o in GENE_ANNOTATIONS]
    return pd.Index(pd.concat(names).unique())


def _check_feature_kind(adata: ad.AnnData, modality: Modality, where: str) -> None:
    """Refuse a modality whose features look like another one's (``rna`` given peaks)."""
    expected = _KIND[modality]
    # symbols only tell genes from peaks, or from a panel far larger than any antibody panel
    symbols = modality == "atac" or (modality == "prot" and adata.n_vars > _PANEL_MAX)
    kind, evidence = feature_kind(adata.var, adata.var_names, symbols=symbols)
    if kind is None or kind == expected:
        return
    raise InputFormatError(
        f"{where}: its {adata.n_vars:,} features look like {_KIND_WORDS[kind]} ({evidence}), not "
        f"{_KIND_WORDS[expected]}; were the inputs swapped? set {_FIELD_OF_KIND[kind]} = "
        f"{where.partition(' ')[2]} instead"
    )
