"""Which cell is which: every cell's dataset, donor, tissue and cell type, as small integer codes.

Cells are laid out as in a Census build: dataset after dataset, each dataset donor by donor and
each donor sample by sample (tissue), cell types mixed within a sample. The integrated atlas
comes last: it re-contains leading runs of cells of a few source donors, so its soma_joinids
map to contiguous primary ranges. The codes of a million cells take a few MB; strings and
counts are made batch by batch from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from atlasprep.demo._catalog import Catalog
from atlasprep.demo._datasets import ATLAS
from atlasprep.errors import UsageError

__all__ = ["MIN_CELLS", "CellPlan", "RowCodes", "largest_remainder", "observation_joinids", "plan_cells"]

MIN_CELLS = 500  # below this some donors get no cells and the atlas cannot be carved out

_I16 = npt.NDArray[np.int16]
_I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True, kw_only=True)
class RowCodes:
    """Codes of the obs rows ``start .. stop - 1``."""

    start: int
    source: _I64  # primary index whose counts and observation_joinid the row carries
    is_primary: npt.NDArray[np.bool_]
    dataset: _I16  # the dataset the row belongs to (the atlas for duplicates)
    donor: _I16
    tissue: _I16
    cell_type: _I16


@dataclass(frozen=True, slots=True, kw_only=True)
class CellPlan:
    n_cells: int
    n_primary: int
    seed: int
    dataset: _I16  # per primary cell
    donor: _I16
    tissue: _I16
    cell_type: _I16
    duplicate_of: _I64  # primary index of each duplicate (soma_joinid n_primary + i)
    atlas_index: int

    def rows(self, start: int, stop: int) -> RowCodes:
        ids = np.arange(start, stop, dtype=np.int64)
        is_primary = ids < self.n_primary
        source = ids.copy()
        source[~is_primary] = self.duplicate_of[ids[~is_primary] - self.n_primary]
        dataset = self.dataset[source]
        dataset[~is_primary] = self.atlas_index
        return RowCodes(
            start=start,
            source=source,
            is_primary=is_primary,
            dataset=dataset,
            donor=self.donor[source],
            tissue=self.tissue[source],
            cell_type=self.cell_type[source],
        )


def largest_remainder(total: int, weights: npt.ArrayLike) -> _I64:
    """Split ``total`` into integers proportional to ``weights`` (ties to the first)."""
    w = np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:short]] += 1
    return counts


def plan_cells(cat: Catalog, n_cells: int, seed: int) -> CellPlan:
    if n_cells < MIN_CELLS:
        raise UsageError(f"the demo atlas needs at least {MIN_CELLS} cells (asked for {n_cells})")
    atlas = ATLAS
    weights = np.array([ds.weight for ds in cat.datasets])
    keys = [ds.key for ds in cat.datasets]
    source_weight = sum(weights[keys.index(k)] for k in {s.dataset for s in atlas.sources})
    dup_share = atlas.duplicate_fraction * source_weight / weights.sum()
    n_primary = round(n_cells / (1 + dup_share))

    ds_cells = largest_remainder(n_primary, weights)
    columns, donor_runs = _primary_cells(cat, ds_cells, seed)
    duplicates = _duplicates(n_cells - n_primary, donor_runs)
    cat_arrays = {k: np.concatenate(v) for k, v in columns.items()}
    return CellPlan(
        n_cells=n_cells,
        n_primary=n_primary,
        seed=seed,
        dataset=cat_arrays["dataset"],
        donor=cat_arrays["donor"],
        tissue=cat_arrays["tissue"],
        cell_type=cat_arrays["cell_type"],
        duplicate_of=np.concatenate(duplicates),
        atlas_index=cat.atlas_index,
    )


def _primary_cells(
    cat: Catalog, ds_cells: _I64, seed: int
) -> tuple[dict[str, list[_I16]], dict[tuple[str, str], tuple[int, int]]]:
    """Each primary cell's codes (runs per dataset, donor and tissue; cell types drawn), and where
    each donor's run starts: (dataset, donor_id) -> (start, length)."""
    columns: dict[str, list[_I16]] = {
        "dataset": [],
        "donor": [],
        "tissue": [],
        "cell_type": [],
    }
    donor_runs: dict[tuple[str, str], tuple[int, int]] = {}  # (dataset, donor_id) -> (start, length)
    ct_index = {t: i for i, t in enumerate(cat.cell_types)}
    tissue_index = {t: i for i, t in enumerate(cat.tissues)}
    donor_base = 0
    position = 0
    for d_idx, (ds, n_ds) in enumerate(zip(cat.datasets, ds_cells, strict=True)):
        types = np.array([ct_index[t] for t, _ in ds.composition], dtype=np.int16)
        p = np.array([w for _, w in ds.composition])
        p /= p.sum()
        per_donor = largest_remainder(int(n_ds), [d.weight for d in ds.donors])
        for k, (donor, n_donor) in enumerate(zip(ds.donors, per_donor, strict=True)):
            donor_runs[(ds.key, donor.donor_id)] = (position, int(n_donor))
            per_tissue = largest_remainder(int(n_donor), [w for _, w in donor.tissues])
            for t_local, ((tissue, _), n) in enumerate(zip(donor.tissues, per_tissue, strict=True)):
                rng = np.random.default_rng([seed, 1, d_idx, k, t_local])
                n = int(n)
                columns["dataset"].append(np.full(n, d_idx, dtype=np.int16))
                columns["donor"].append(np.full(n, donor_base + k, dtype=np.int16))
                columns["tissue"].append(np.full(n, tissue_index[tissue], dtype=np.int16))
                columns["cell_type"].append(types[rng.choice(len(types), size=n, p=p)])
                position += n
        donor_base += len(ds.donors)
    return columns, donor_runs


def _duplicates(n_dup: int, donor_runs: Mapping[tuple[str, str], tuple[int, int]]) -> list[_I64]:
    """The primary cells the integrated atlas re-contains, per source donor."""
    per_source = largest_remainder(n_dup, [s.share for s in ATLAS.sources])
    runs = []
    for source, n in zip(ATLAS.sources, per_source, strict=True):
        start, length = donor_runs[(source.dataset, source.donor_id)]
        if n > length:  # cannot happen at MIN_CELLS or more with the shipped spec
            raise UsageError(f"the demo spec cannot place {n} atlas cells on donor {source.donor_id}")
        runs.append((start, int(n)))
    # in primary order, so that duplicates keep the order of their originals (see _expression)
    return [np.arange(start, start + n, dtype=np.int64) for start, n in sorted(runs)]


# 85 printable characters without quotes, backslash or space, as in Census observation_joinids
_JOINID_ALPHABET = np.frombuffer(
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~", dtype=np.uint8
)
_JOINID_LENGTH = 10


def observation_joinids(seed: int, source: _I64) -> pa.LargeStringArray:
    """Ten-character IDs hashed (splitmix64) from the build seed and the primary cell index.

    A duplicate carries its original's ID, as non-primary cells do in the Census.
    """
    with np.errstate(over="ignore"):
        z = source.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    chars = np.empty((len(source), _JOINID_LENGTH), dtype=np.uint8)
    base = np.uint64(len(_JOINID_ALPHABET))
    for i in range(_JOINID_LENGTH):
        z, digit = np.divmod(z, base)
        chars[:, i] = _JOINID_ALPHABET[digit.astype(np.intp)]
    offsets = np.arange(0, (len(source) + 1) * _JOINID_LENGTH, _JOINID_LENGTH, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(len(source), pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))
