"""The spatial rules of CELLxGENE schema 7.1.0, as cellxgene-schema 7.1.2 enforces them: for Visium
(a descendant of EFO:0010961, not the generic term itself) and bead-based spatial assays one assay
per dataset and ``uns['spatial']['is_single']``; for Visium with ``is_single`` True one library in
``uns['spatial']`` with its ``hires`` image and scale factors, the tissue positions
(``array_row``, ``array_col``, ``in_tissue``) in obs, spots out of tissue of unknown cell type, and
the unfiltered spot matrix (4,992 spots; 14,336 for the 11 mm slide) as raw counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from atlasprep.harmonize._report import Found
from atlasprep.harmonize._schema_rules import VISIUM
from atlasprep.harmonize._term_rules import below, is_spatial_assay

VISIUM_11MM = "EFO:0022860"
# (spots, max array_row, max array_col, largest hires side) of the standard and the 11 mm slide
_SLIDES = {False: (4992, 77, 127, 2000), True: (14336, 127, 223, 4000)}
_POSITIONS = ("array_col", "array_row", "in_tissue")
_SINGLE = "uns['spatial']['is_single']"


@dataclass(frozen=True, slots=True, kw_only=True)
class SpatialKind:
    """What the assays and uns['spatial'] make of a dataset."""

    spatial: bool  # a spatial assay: uns['spatial'] needed, no X_ embedding needed
    visium: bool
    is_single: bool | None
    eleven_mm: bool

    @property
    def visium_single(self) -> bool:
        return self.visium and bool(self.is_single)

    @property
    def slide(self) -> tuple[int, int, int, int]:
        return _SLIDES[self.eleven_mm]


def spatial_kind(obs: pd.DataFrame, uns: Mapping[str, Any]) -> SpatialKind:
    assays = (
        [str(a) for a in pd.unique(obs["assay_ontology_term_id"].astype(str))]
        if "assay_ontology_term_id" in obs
        else []
    )
    spatial = uns.get("spatial")
    single = spatial.get("is_single") if isinstance(spatial, Mapping) else None
    return SpatialKind(
        spatial=any(is_spatial_assay(a) for a in assays),
        visium=any(below(a, VISIUM) for a in assays),
        is_single=bool(single) if isinstance(single, bool | np.bool_) else None,
        eleven_mm=any(a == VISIUM_11MM or below(a, VISIUM_11MM) for a in assays),
    )


def check_spatial(obs: pd.DataFrame, uns: Mapping[str, Any], kind: SpatialKind, problems: Found) -> None:
    n = len(obs)
    if "assay_ontology_term_id" not in obs:
        return
    if (obs["assay_ontology_term_id"].astype(str) == VISIUM).any():
        problems.add(
            "assay_ontology_term_id", f"must be a descendant of {VISIUM} (Visium), not the term itself", n
        )
    if kind.spatial and obs["assay_ontology_term_id"].nunique() > 1:
        problems.add("assay_ontology_term_id", "a spatial dataset holds one assay", n)
    if "spatial" in uns and not kind.spatial:
        problems.add("uns['spatial']", "only allowed for spatial assays (Visium, bead-based spatial)", n)
    elif kind.spatial:
        _check_uns_spatial(uns.get("spatial"), kind, problems, n)
    for column in _POSITIONS:
        _check_position(obs, column, kind, problems)
    if kind.visium_single and {"in_tissue", "cell_type_ontology_term_id"} <= set(obs.columns):
        out = (obs["in_tissue"] == 0) & (obs["cell_type_ontology_term_id"].astype(str) != "unknown")
        if out.any():
            problems.add(
                "cell_type_ontology_term_id",
                "must be 'unknown' for spots out of tissue (in_tissue 0)",
                int(out.sum()),
            )
    if kind.is_single is False and "is_primary_data" in obs and obs["is_primary_data"].astype(bool).any():
        problems.add("is_primary_data", f"must be False for every cell when {_SINGLE} is False", n)


def _check_uns_spatial(spatial: Any, kind: SpatialKind, problems: Found, n: int) -> None:
    if not isinstance(spatial, Mapping):
        problems.add("uns['spatial']", "a dict is required for spatial assays", n)
        return
    if "is_single" not in spatial or kind.is_single is None:
        problems.add(_SINGLE, "required, and it must be a boolean", n)
        return
    libraries = [k for k in spatial if k != "is_single"]
    if len(libraries) > 1:
        problems.add("uns['spatial']", "holds is_single and at most one library_id", n, libraries[:3])
    elif libraries and not kind.visium_single:
        problems.add("uns['spatial'][library_id]", f"only allowed for Visium with {_SINGLE} True", n)
    elif not libraries and kind.visium_single:
        problems.add("uns['spatial'][library_id]", f"required for Visium with {_SINGLE} True", n)
    elif libraries:
        _check_library(spatial[libraries[0]], kind, problems, n)


def _check_library(library: Any, kind: SpatialKind, problems: Found, n: int) -> None:
    where = "uns['spatial'][library_id]"
    if not isinstance(library, Mapping):
        problems.add(where, "must be a dict of images and scalefactors", n)
        return
    if not set(library) <= {"images", "scalefactors"}:
        problems.add(where, "holds only 'images' and 'scalefactors'", n, sorted(library)[:3])
    images, factors = library.get("images"), library.get("scalefactors")
    if not isinstance(images, Mapping) or "hires" not in images or not set(images) <= {"hires", "fullres"}:
        problems.add(f"{where}['images']", "a dict with 'hires' (and optionally 'fullres') is required", n)
    else:
        _check_image(images["hires"], "hires", kind.slide[3], problems, n)
        if "fullres" in images:
            _check_image(images["fullres"], "fullres", None, problems, n)
    keys = ("spot_diameter_fullres", "tissue_hires_scalef")
    if not isinstance(factors, Mapping) or set(factors) != set(keys):
        problems.add(f"{where}['scalefactors']", f"a dict of exactly {' and '.join(keys)} is required", n)
    elif not all(isinstance(factors[k], float) for k in keys):
        problems.add(f"{where}['scalefactors']", f"{' and '.join(keys)} must be floats", n)


def _check_image(image: Any, name: str, largest: int | None, problems: Found, n: int) -> None:
    where = f"uns['spatial'][library_id]['images']['{name}']"
    if not isinstance(image, np.ndarray):
        problems.add(where, "must be a numpy array", n)
        return
    if image.dtype != np.uint8:
        problems.add(where, f"must be uint8, not {image.dtype}", n)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        problems.add(where, f"must be height x width x 3 (RGB) or 4 (RGBA), not {image.shape}", n)
    if largest is not None and max(image.shape) != largest:
        problems.add(where, f"its largest side must be {largest} pixels, not {max(image.shape)}", n)


def _check_position(obs: pd.DataFrame, column: str, kind: SpatialKind, problems: Found) -> None:
    n, where = len(obs), column
    if column in obs and not kind.visium_single:
        problems.add(where, f"only allowed for Visium with {_SINGLE} True", n)
        return
    if not kind.visium_single:
        return
    if column not in obs:
        problems.add(where, f"required for Visium with {_SINGLE} True", n)
    elif obs[column].isna().any():
        problems.add(where, "has missing values", int(obs[column].isna().sum()))
    elif not pd.api.types.is_integer_dtype(obs[column]):
        problems.add(where, f"must be integers, not {obs[column].dtype}", n)
    else:
        top = {"in_tissue": 1, "array_row": kind.slide[1], "array_col": kind.slide[2]}[column]
        outside = (obs[column] < 0) | (obs[column] > top)
        if outside.any():
            problems.add(where, f"must lie in 0…{top}", int(outside.sum()))


def needs_counts(obs: pd.DataFrame, kind: SpatialKind) -> npt.NDArray[np.bool_]:
    """The cells that need a nonzero count: every cell, but for Visium with is_single True only
    the spots in tissue."""
    if kind.visium_single and "in_tissue" in obs:
        return np.asarray(obs["in_tissue"] != 0)
    return np.ones(len(obs), bool)


def check_spot_counts(
    obs: pd.DataFrame, has_value: npt.NDArray[np.bool_], name: str, kind: SpatialKind, problems: Found
) -> None:
    """For Visium with is_single True: the unfiltered spot matrix, and at least one spot out of
    tissue with counts when there are any."""
    if not kind.visium_single:
        return
    spots = kind.slide[0]
    if len(obs) != spots:
        problems.add(name, f"must be the unfiltered spot matrix: {spots:,} spots, not {len(obs):,}", len(obs))
    out = np.asarray(obs["in_tissue"] == 0) if "in_tissue" in obs else np.zeros(len(obs), bool)
    if out.any() and not has_value[out].any():
        problems.add(name, "no spot out of tissue (in_tissue 0) has a count: one must", int(out.sum()))
