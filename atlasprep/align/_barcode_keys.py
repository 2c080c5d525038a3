"""`align barcodes`, barcode → join key: read ``barcode_map``, detect a nucleotide core's length,
reduce each input's barcodes to join keys (the rules are in :mod:`atlasprep.align.barcodes`), and
join the keys of several inputs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from atlasprep._names import JoinHow
from atlasprep.errors import InputFormatError, SourceError

log = logging.getLogger("atlasprep.align")


MIN_CORE_LENGTH = 8  # shorter A/C/G/T runs are letters of sample names, not a cell barcode
_RUN = "[ACGT]+"
_TRAILING_NUMBER = r"-(\d+)$"
_EXAMPLES = 3
_LENGTH_SAMPLE = 20_000  # barcodes looked at to detect the core length (every one is checked after)


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
