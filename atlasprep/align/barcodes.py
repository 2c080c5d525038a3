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

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import mudata as md  # type: ignore[import-untyped, unused-ignore]
import numpy as np
import pandas as pd

from atlasprep._io import check_output
from atlasprep.align._output import stored_bytes, write_output
from atlasprep.align.modalities import FIELDS, LoadedModality, Modality, load_modalities
from atlasprep.errors import (
    AtlasprepError,
    EmptyResultError,
    InputFormatError,
    SourceError,
    UsageError,
)

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

JoinHow = Literal["inner", "outer"]
MIN_CORE_LENGTH = 8  # shorter A/C/G/T runs are letters of sample names, not a cell barcode
RAW_BARCODE = "raw_barcode"
_RUN = "[ACGT]+"
_TRAILING_NUMBER = r"-(\d+)$"
_EXAMPLES = 3
_LENGTH_SAMPLE = 20_000  # barcodes looked at to detect the core length (every one is checked after)


class BarcodeMatchError(AtlasprepError):
    """Fewer barcodes matched across modalities than ``min_match`` asks for."""

    exit_code = 1

    def __init__(self, message: str, *, matches: tuple[ModalityMatch, ...]) -> None:
        super().__init__(message)
        self.matches = matches


# -- normalization -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class NormalizedBarcodes:
    """One input's barcodes and their join keys, position for position."""

    raw: pd.Index
    keys: pd.Index
    core_length: int | None  # None: no nucleotide core, names were only upper-cased
    n_mapped: int  # keys taken from barcode_map
    gem_wells: tuple[str, ...]  # distinct GEM-well numbers seen after the core


def read_barcode_map(path: Path) -> pd.Series:
    """``barcode_map``: barcode (as in an input) → shared barcode, as a Series indexed by the first."""
    if not path.is_file():
        raise SourceError(f"barcode_map {path}: no such file")
    try:
        frame = pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise InputFormatError(f"barcode_map {path}: the file is empty") from None
    except pd.errors.ParserError as exc:
        reason = str(exc).strip().splitlines()[-1]
        raise InputFormatError(f"barcode_map {path}: not a two-column TSV ({reason})") from None
    if frame.shape[1] != 2:
        raise InputFormatError(
            f"barcode_map {path}: expected 2 tab-separated columns (barcode, shared barcode), "
            f"found {frame.shape[1]}"
        )
    source, target = frame[0].str.strip(), frame[1].str.strip()
    blank = (source == "") | (target == "")
    if blank.any():
        raise InputFormatError(
            f"barcode_map {path}: line {int(np.argmax(blank.to_numpy())) + 1} has an empty field"
        )
    pairs = pd.DataFrame({"source": source, "target": target}).drop_duplicates()
    conflicting = pairs["source"].duplicated(keep=False)
    if conflicting.any():
        example = pairs.loc[conflicting, "source"].iloc[0]
        targets = ", ".join(pairs.loc[pairs["source"] == example, "target"].head(_EXAMPLES))
        raise InputFormatError(f"barcode_map {path}: {example} is mapped to several barcodes ({targets})")
    return pd.Series(pairs["target"].to_numpy(), index=pd.Index(pairs["source"].to_numpy()), name="shared")


def detect_core_length(barcodes: pd.Series) -> int | None:
    """The most common length of each barcode's longest A/C/G/T run (upper-case input; up to
    20,000 barcodes spread over the input are looked at); the longer one on a tie; None when that
    is shorter than :data:`MIN_CORE_LENGTH`."""
    if len(barcodes) > _LENGTH_SAMPLE:
        barcodes = barcodes.iloc[np.linspace(0, len(barcodes) - 1, _LENGTH_SAMPLE).astype(np.int64)]
    runs = barcodes.reset_index(drop=True).str.findall(_RUN).explode().dropna()
    if runs.empty:
        return None
    longest = runs.str.len().groupby(level=0).max()
    counts = longest.value_counts()
    length = int(counts.index[counts == counts.max()].max())
    return length if length >= MIN_CORE_LENGTH else None


def normalize_barcodes(
    barcodes: pd.Index | pd.Series | list[str],
    *,
    barcode_map: pd.Series | None = None,
    label: str = "barcodes",
) -> NormalizedBarcodes:
    """The join key of each barcode (rules in the module docstring); ``label`` names the input in
    errors (``rna``)."""
    raw = pd.Index(barcodes, dtype=object).astype(str)
    if not raw.is_unique:
        repeated = ", ".join(raw[raw.duplicated()].unique()[:_EXAMPLES])
        raise InputFormatError(
            f"{label}: barcodes repeat in the input ({repeated}); make obs names unique first"
        )
    series = pd.Series(raw.to_numpy(), dtype=object)
    keys = series.map(barcode_map) if barcode_map is not None else pd.Series(np.nan, index=series.index)
    mapped = keys.notna().to_numpy()
    upper = series[~mapped].str.upper()
    length = detect_core_length(upper)
    if length is None:
        core = upper.str.replace(_TRAILING_NUMBER, "", regex=True)
        wells = upper.str.extract(_TRAILING_NUMBER, expand=False)
    else:
        core, wells = _nucleotide_cores(upper, length, label)
    keys = keys.astype(object)
    keys[~mapped] = core
    gem_wells = tuple(sorted(pd.unique(wells.dropna()), key=int))
    _check_collisions(series, keys, mapped, length, label)
    if len(gem_wells) > 1:
        log.warning(
            "%s: barcodes carry GEM wells %s; the join ignores the well (set barcode_map if the "
            "other inputs number wells differently)",
            label,
            ", ".join(f"-{w}" for w in gem_wells),
        )
    return NormalizedBarcodes(
        raw=raw,
        keys=pd.Index(keys.to_numpy(dtype=object)),
        core_length=length,
        n_mapped=int(mapped.sum()),
        gem_wells=gem_wells,
    )


def _core_pattern(length: int) -> str:
    return rf"(?<![ACGT])([ACGT]{{{length}}})(?![ACGT])"


def _nucleotide_cores(upper: pd.Series, length: int, label: str) -> tuple[pd.Series, pd.Series]:
    """(core, GEM well or NaN) of barcodes that must hold exactly one ``length``-nt core."""
    pattern = _core_pattern(length)
    n_cores = upper.str.count(pattern)
    bad = n_cores != 1
    if bad.any():
        examples = ", ".join(upper[bad].head(_EXAMPLES))
        what = "no" if (n_cores[bad] == 0).all() else "no or several"
        raise InputFormatError(
            f"{label}: {int(bad.sum())} of {len(upper)} barcodes have {what} {length}-nt core "
            f"(e.g. {examples}); give them their shared barcode with barcode_map"
        )
    parts = upper.str.extract(pattern + r"(?:-(\d+)(?![0-9]))?")
    return parts[0], parts[1]


def _without_well(upper: pd.Series, length: int | None) -> pd.Series:
    if length is None:
        return upper.str.replace(_TRAILING_NUMBER, "", regex=True)
    return upper.str.replace(_core_pattern(length) + r"-\d+(?![0-9])", r"\1", regex=True)


def _check_collisions(
    raw: pd.Series, keys: pd.Series, mapped: np.ndarray, length: int | None, label: str
) -> None:
    collided = keys.duplicated(keep=False).to_numpy()
    if not collided.any():
        return
    frame = pd.DataFrame({"raw": raw[collided], "key": keys[collided]})
    n_keys = frame["key"].nunique()
    first_keys = frame["key"].drop_duplicates().head(_EXAMPLES)
    shown = frame[frame["key"].isin(first_keys)].groupby("key", sort=False)["raw"].agg(", ".join)
    examples = "; ".join(f"{raws} → {key}" for key, raws in shown.items())
    head = f"{label}: {int(collided.sum())} barcodes collapse onto {n_keys} join keys ({examples})"
    if mapped[collided].any():
        raise InputFormatError(
            f"{head}; barcode_map sends them onto a join key another barcode of this input has"
        )
    # what is left of each barcode once its well is dropped: equal stems mean only the well differs
    frame["stem"] = _without_well(frame["raw"].str.upper(), length)
    if frame.groupby("key")["stem"].nunique().eq(1).all():
        raise InputFormatError(
            f"{head}: they differ only by GEM well, and in an aggr matrix -1 and -2 are different cells; "
            "give each its shared barcode with barcode_map"
        )
    raise InputFormatError(
        f"{head}: they differ by sample prefix or suffix; align one sample at a time, "
        "or give each its shared barcode with barcode_map"
    )


def join_keys(keys: Sequence[pd.Index], how: JoinHow) -> pd.Index:
    """The output's cells: for ``inner`` the keys every input has, in the first input's order; for
    ``outer`` all keys, first input's first, then each next input's new ones."""
    indexes = list(keys)
    if how == "inner":
        common = indexes[0]
        for other in indexes[1:]:
            common = common[common.isin(other)]
        return common
    return pd.Index(pd.concat([i.to_series() for i in indexes]).drop_duplicates().to_numpy(dtype=object))


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
            "how": self.how,
            "n_obs": self.n_obs,
            "n_shared": self.n_shared,
            "barcode_map": str(self.barcode_map) if self.barcode_map else None,
            "modalities": {m.modality: m.to_json() for m in self.modalities},
            "seconds": round(self.seconds, 3),
        }


def align_barcodes(
    rna: str | os.PathLike[str],
    *,
    atac: str | os.PathLike[str] | None = None,
    protein: str | os.PathLike[str] | None = None,
    out: Path,
    how: JoinHow = "inner",
    barcode_map: Path | None = None,
    min_match: float = 0.0,
    overwrite: bool = False,
) -> AlignReport:
    """Join RNA with ATAC and/or protein on normalized barcodes and write ``out`` (.h5mu)."""
    started = time.perf_counter()
    out = Path(out)
    _check_arguments(atac=atac, protein=protein, out=out, how=how, min_match=min_match, overwrite=overwrite)
    mapping = read_barcode_map(Path(barcode_map)) if barcode_map is not None else None
    specs: dict[Modality, str | os.PathLike[str]] = {"rna": rna}
    if atac is not None:
        specs["atac"] = atac
    if protein is not None:
        specs["prot"] = protein
    loaded = load_modalities(specs)
    normalized = {
        m: normalize_barcodes(lm.adata.obs_names, barcode_map=mapping, label=f"{FIELDS[m]} {lm.source}")
        for m, lm in loaded.items()
    }
    renamed = _disambiguate_features(loaded)
    keys = [n.keys for n in normalized.values()]
    shared = join_keys(keys, "inner")
    matches = _matches(loaded, normalized, shared, renamed)
    _check_matches(matches, normalized, min_match=min_match, how=how)
    cells = join_keys(keys, how)
    provenance: dict[str, Any] = {
        "how": how,
        "min_match": float(min_match),
        "modalities": {m.modality: {k: v for k, v in m.to_json().items() if v is not None} for m in matches},
    }
    if barcode_map is not None:
        provenance["barcode_map"] = str(barcode_map)
    # mudata 0.3 warns (FutureWarning) unless told not to pull modality columns into the shared obs
    with md.set_options(pull_on_update=False):
        mdata = _build_mudata(loaded, normalized, cells, how)
        mdata.uns["atlasprep_align"] = provenance
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
    check_output(out, overwrite=overwrite)
    if not out.parent.is_dir():
        raise UsageError(f"out {out}: directory {out.parent} does not exist")


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
    loaded: Mapping[Modality, LoadedModality],
    normalized: Mapping[Modality, NormalizedBarcodes],
    cells: pd.Index,
    how: JoinHow,
) -> Any:
    mods = {}
    for modality, lm in loaded.items():
        norm = normalized[modality]
        if how == "inner":
            positions = norm.keys.get_indexer(cells)
            adata, raw, keys = lm.adata[positions].copy(), norm.raw[positions], cells
        else:  # every cell of the input stays; the loaded object is ours to relabel
            adata, raw, keys = lm.adata, norm.raw, norm.keys
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


def _write_h5mu(mdata: Any, out: Path) -> None:
    write_output(out, lambda tmp: md.write_h5mu(tmp, mdata), n_bytes=stored_bytes(mdata))
