"""`align barcodes`: join the modalities of a multimodal experiment on their cell barcodes and
write them as one MuData (``.h5mu``).

Each tool spells a cell's barcode its own way: Cell Ranger adds the GEM well (``AAAC…-1``),
Seurat's merge and ArchR prepend or append the sample (``s1_AAAC…``, ``s1#AAAC…-1``,
``AAAC…_1``), some tools write lower case. A naive join on obs names then matches nothing, or
too little. So every barcode is first reduced to a join key:

1. ``barcode_map`` (a file) wins: a TSV of two columns, no header — a barcode as it appears in
   one of the inputs, then the shared barcode it stands for. Mapped barcodes are used verbatim.
2. Otherwise the key is the barcode's nucleotide core, upper-cased. The core length is
   detected per input as the most common length of each barcode's longest A/C/G/T run (16 for
   10x 3' v3 and Multiome), and must be at least :data:`MIN_CORE_LENGTH`; every barcode must
   then hold exactly one run of exactly that length, bounded by non-nucleotides. Everything
   around it (GEM well, sample prefix or suffix) is dropped.
3. An input whose barcodes have no such core (``cell_1``, ``0``, …) keeps its names,
   upper-cased, without a trailing ``-<digits>``.

Two raw barcodes of one input that end up with the same key are an error naming examples: in
an aggr matrix ``-1`` and ``-2`` are different cells, and two samples may share a barcode
sequence. Give such cells their shared barcodes with ``barcode_map`` (or align one sample at a
time). When an input's barcodes carry several GEM wells without colliding, the join still drops
the well; this is logged, since cells of different wells could then meet.

The join is an inner join by default: only cells present in every modality. ``how="outer"``
keeps every cell; ``obs["<modality>_present"]`` (in the MuData's shared obs) says which
modalities measured it, and each modality holds only its own cells (MuData's per-modality obs
masks). Each modality's obs keeps the input's barcode in ``raw_barcode``; the obs names are the
join keys. A cell is *matched* when its key is in every modality; ``min_match`` fails the run
(exit 1, nothing written) when any modality's matched fraction is below it.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import mudata as md  # type: ignore[import-untyped, unused-ignore]
import numpy as np
import pandas as pd

from atlasprep._io import check_new_output
from atlasprep.align._barcode_keys import (
    MIN_CORE_LENGTH,
    JoinHow,
    NormalizedBarcodes,
    detect_core_length,
    join_keys,
    normalize_barcodes,
    read_barcode_map,
)
from atlasprep.align._output import stored_bytes, write_output
from atlasprep.align.modalities import FIELDS, LoadedModality, Modality, load_modalities
from atlasprep.errors import (
    AtlasprepError,
    EmptyResultError,
    UsageError,
)
from atlasprep.provenance import PROVENANCE_KEY, file_input, hash_ahead, new_step, read_steps, steps_json
from atlasprep.sources.spec import SourceSpec, whole_file

__all__ = [
    "MIN_CORE_LENGTH",
    "RAW_BARCODE",
    "AlignReport",
    "BarcodeMatchError",
    "JoinHow",
    "ModalityMatch",
    "NormalizedBarcodes",
    "align_barcodes",
    "detect_core_length",
    "join_keys",
    "normalize_barcodes",
    "read_barcode_map",
]

log = logging.getLogger("atlasprep.align")

RAW_BARCODE = "raw_barcode"


class BarcodeMatchError(AtlasprepError):
    """Fewer barcodes matched across modalities than ``min_match`` asks for."""

    exit_code = 1

    def __init__(self, message: str, *, matches: tuple[ModalityMatch, ...]) -> None:
        super().__init__(message)
        self.matches = matches


# -- the command ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ModalityMatch:
    """How one modality's barcodes met the others'."""

    modality: Modality
    source: str
    n_barcodes: int
    n_matched: int  # barcodes whose key every other modality has
    n_mapped: int
    core_length: int | None
    gem_wells: tuple[str, ...]
    n_renamed_features: int = 0  # var names another modality also has, now "<modality>:<name>"

    @property
    def n_unmatched(self) -> int:
        return self.n_barcodes - self.n_matched

    @property
    def match_fraction(self) -> float:
        return self.n_matched / self.n_barcodes if self.n_barcodes else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "n_barcodes": self.n_barcodes,
            "n_matched": self.n_matched,
            "n_unmatched": self.n_unmatched,
            "match_fraction": round(self.match_fraction, 6),
            "n_mapped": self.n_mapped,
            "core_length": self.core_length,
            "gem_wells": list(self.gem_wells),
            "n_renamed_features": self.n_renamed_features,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class AlignReport:
    """What `align barcodes` wrote."""

    out: Path
    how: JoinHow
    n_obs: int  # cells written
    n_shared: int  # cells present in every modality
    modalities: tuple[ModalityMatch, ...]
    barcode_map: Path | None = None
    seconds: float = 0.0

    def match(self, modality: Modality) -> ModalityMatch:
        return next(m for m in self.modalities if m.modality == modality)

    def to_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "how": str(self.how),
            "n_obs": self.n_obs,
            "n_shared": self.n_shared,
            "barcode_map": str(self.barcode_map) if self.barcode_map else None,
            "modalities": {m.modality: m.to_json() for m in self.modalities},
            "seconds": round(self.seconds, 3),
        }


def align_barcodes(
    rna: SourceSpec | str | os.PathLike[str],
    *,
    atac: SourceSpec | str | os.PathLike[str] | None = None,
    protein: SourceSpec | str | os.PathLike[str] | None = None,
    out: Path,
    how: JoinHow | str = JoinHow.inner,
    barcode_map: Path | None = None,
    min_match: float = 0.0,
    overwrite: bool = False,
) -> AlignReport:
    """Join RNA with ATAC and/or protein on normalized barcodes and write ``out`` (.h5mu).

    Each modality is a path (``file.h5mu:rna`` picks a MuData modality) or a :class:`SourceSpec`
    naming one file and no selection: modalities are joined whole, cells are selected after."""
    started = time.perf_counter()
    specs = _modality_files(rna, atac, protein)
    out = Path(out)
    _check_arguments(atac=atac, protein=protein, out=out, how=how, min_match=min_match, overwrite=overwrite)
    how = JoinHow(how)
    mapping = read_barcode_map(Path(barcode_map)) if barcode_map is not None else None
    hash_ahead(specs.values())  # the provenance record's digests, while the modalities load
    loaded = load_modalities(specs)
    normalized = {
        m: normalize_barcodes(lm.adata.obs_names, barcode_map=mapping, label=f"{FIELDS[m]} {lm.source}")
        for m, lm in loaded.items()
    }
    renamed = _disambiguate_features(loaded)
    keys = [n.keys for n in normalized.values()]
    shared = join_keys(keys, JoinHow.inner)
    matches = _matches(loaded, normalized, shared, renamed)
    _check_matches(matches, normalized, min_match=min_match, how=how)
    cells = join_keys(keys, how)
    provenance = _provenance(matches, how=how, min_match=min_match, barcode_map=barcode_map)
    adatas = {m: lm.adata for m, lm in loaded.items()}
    del loaded  # each modality's input is freed as soon as its joined cells are copied out
    # mudata 0.3 warns (FutureWarning) unless told not to pull modality columns into the shared obs
    with md.set_options(pull_on_update=False):
        mdata = _build_mudata(adatas, normalized, cells, how)
        mdata.uns["atlasprep_align"] = provenance
        mdata.uns[PROVENANCE_KEY] = _steps(specs, how=how, min_match=min_match, barcode_map=barcode_map)
        _write_h5mu(mdata, out)
    report = AlignReport(
        out=out,
        how=how,
        n_obs=int(mdata.n_obs),
        n_shared=len(shared),
        modalities=matches,
        barcode_map=Path(barcode_map) if barcode_map is not None else None,
        seconds=time.perf_counter() - started,
    )
    log.info(
        "wrote %s: %d cells (%s join); %s",
        out,
        report.n_obs,
        how,
        ", ".join(f"{m.modality} {m.n_matched}/{m.n_barcodes} matched" for m in matches),
    )
    return report


def _steps(specs: Mapping[Modality, Any], **config: Any) -> str:
    """The chain the RNA input carries, and this join (see :mod:`atlasprep.provenance`)."""
    inputs = [file_input(path, modality=m) for m, path in specs.items()]
    step = new_step("align barcodes", {**config, "inputs": [str(p) for p in specs.values()]}, inputs)
    return steps_json([*read_steps(specs["rna"]), step])


def _modality_files(
    rna: SourceSpec | str | os.PathLike[str],
    atac: SourceSpec | str | os.PathLike[str] | None,
    protein: SourceSpec | str | os.PathLike[str] | None,
) -> dict[Modality, str | os.PathLike[str]]:
    """Each given modality's file (a spec must name one file whole)."""
    given: dict[Modality, SourceSpec | str | os.PathLike[str] | None] = {
        "rna": rna,
        "atac": atac,
        "prot": protein,
    }
    return {m: whole_file(f, "align barcodes") for m, f in given.items() if f is not None}


def _provenance(
    matches: tuple[ModalityMatch, ...], *, how: JoinHow, min_match: float, barcode_map: Path | None
) -> dict[str, Any]:
    """``uns["atlasprep_align"]``: the join, its threshold and each modality's match."""
    provenance: dict[str, Any] = {
        "how": how.value,
        "min_match": float(min_match),
        "modalities": {m.modality: {k: v for k, v in m.to_json().items() if v is not None} for m in matches},
    }
    if barcode_map is not None:
        provenance["barcode_map"] = str(barcode_map)
    return provenance


def _matches(
    loaded: Mapping[Modality, LoadedModality],
    normalized: Mapping[Modality, NormalizedBarcodes],
    shared: pd.Index,
    renamed: Mapping[Modality, int],
) -> tuple[ModalityMatch, ...]:
    return tuple(
        ModalityMatch(
            modality=m,
            source=loaded[m].source,
            n_barcodes=len(n.keys),
            n_matched=int(n.keys.isin(shared).sum()),
            n_mapped=n.n_mapped,
            core_length=n.core_length,
            gem_wells=n.gem_wells,
            n_renamed_features=renamed[m],
        )
        for m, n in normalized.items()
    )


def _check_arguments(
    *,
    atac: object,
    protein: object,
    out: Path,
    how: str,
    min_match: float,
    overwrite: bool,
) -> None:
    if how not in ("inner", "outer"):
        raise UsageError(f"how = {how!r}: choose inner or outer")
    if not 0.0 <= min_match <= 1.0:
        raise UsageError(f"min_match = {min_match}: give a fraction between 0 and 1")
    if atac is None and protein is None:
        raise UsageError("nothing to align: set atac or protein besides rna")
    if out.suffix != ".h5mu":
        raise UsageError(f"out {out}: the name must end in .h5mu")
    if out.is_dir():
        raise UsageError(f"out {out}: is a directory")
    check_new_output(out, overwrite=overwrite)


WARN_MATCH = 0.5  # a modality matching fewer of its barcodes than this is warned about


def _check_matches(
    matches: tuple[ModalityMatch, ...],
    normalized: Mapping[Modality, NormalizedBarcodes],
    *,
    min_match: float,
    how: JoinHow,
) -> None:
    low = [m for m in matches if m.match_fraction < min_match]
    if low:
        detail = "; ".join(
            f"{FIELDS[m.modality]} ({m.modality}) {m.match_fraction:.1%}: {m.n_matched} of {m.n_barcodes}"
            for m in low
        )
        raise BarcodeMatchError(
            f"min_match = {min_match:g}: the matched fraction is below it: {detail}; check that the inputs "
            "come from the same cells, or set barcode_map",
            matches=matches,
        )
    if matches[0].n_matched == 0:
        examples = "; ".join(f"{m} {', '.join(n.keys[:2])}" for m, n in normalized.items())
        message = f"no barcode is shared by all modalities (join keys: {examples}); set barcode_map"
        if how == "inner":
            raise EmptyResultError(message)
        log.warning("%s", message)
        return
    for m in matches:  # a real pairing matches most barcodes: a low share is a wrong file or mapping
        if m.match_fraction < WARN_MATCH:
            log.warning(
                "%s (%s): only %.1f%% of its %d barcodes match (below %.0f%%): are the files from the same "
                "cells? Check the inputs or a barcode_map; set min_match to make this an error",
                FIELDS[m.modality],
                m.modality,
                100 * m.match_fraction,
                m.n_barcodes,
                100 * WARN_MATCH,
            )


def _disambiguate_features(loaded: Mapping[Modality, LoadedModality]) -> dict[Modality, int]:
    """Prefix a modality's var names that an earlier modality also has (``CD4`` as a gene symbol
    and as an antibody ID) with ``<modality>:``, so the MuData's var names stay unique."""
    seen = pd.Index([], dtype=object)
    renamed: dict[Modality, int] = {}
    for modality, lm in loaded.items():
        names = lm.adata.var_names
        clash = names.isin(seen)
        renamed[modality] = int(clash.sum())
        if clash.any():
            lm.adata.var_names = names.where(~clash, f"{modality}:" + names.astype(str))
            log.info(
                "%s: %d feature names also name another modality's features; prefixed with '%s:'",
                modality,
                renamed[modality],
                modality,
            )
        seen = seen.append(lm.adata.var_names)
    return renamed


def _build_mudata(
    adatas: dict[Modality, ad.AnnData],
    normalized: Mapping[Modality, NormalizedBarcodes],
    cells: pd.Index,
    how: JoinHow,
) -> Any:
    """The MuData of the joined cells. Takes the loaded modalities out of ``adatas`` one at a
    time, so that at most one input is held beside its joined copy; an input whose cells are
    already the join's, in its order, is not copied (the loaded objects are ours to relabel)."""
    mods = {}
    for modality in list(adatas):
        adata, norm = adatas.pop(modality), normalized[modality]
        raw, keys = norm.raw, norm.keys
        if how == "inner":
            positions = norm.keys.get_indexer(cells)
            if not np.array_equal(positions, np.arange(adata.n_obs)):
                adata, raw, keys = _rows(adata, positions), raw[positions], cells
        if RAW_BARCODE not in adata.obs.columns:  # a re-aligned output keeps the first input's barcode
            adata.obs[RAW_BARCODE] = raw.to_numpy()
        adata.obs_names = keys
        mods[modality] = adata
    mdata = md.MuData(mods)
    for modality, adata in mods.items():
        mdata.obs[f"{modality}_present"] = mdata.obs_names.isin(adata.obs_names)
    if mdata.n_obs != len(cells):
        raise AssertionError(f"MuData has {mdata.n_obs} cells, the join {len(cells)}")
    return mdata


def _rows(adata: ad.AnnData, positions: np.ndarray) -> ad.AnnData:
    """``adata``'s cells at ``positions``, as a new AnnData; ``adata`` is emptied of X. X, the
    bulk, is indexed on its own (one copy: a view's ``.copy()`` holds two at once), the rest
    through a view."""
    X, adata.X = adata.X, None
    subset = adata[positions].copy()
    subset.X = None if X is None else X[positions]
    del X, adata
    gc.collect()  # the input, held in its views' reference cycles until collected
    return subset


def _write_h5mu(mdata: Any, out: Path) -> None:
    write_output(out, lambda tmp: md.write_h5mu(tmp, mdata), n_bytes=stored_bytes(mdata))
