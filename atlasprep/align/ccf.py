"""`align ccf`: place a spatial section in an HRA reference organ, and give its cells the
anatomical structures that contain them, spatial neighbours and 3-D spatial bins.

Frames and units, from the section to the organ:

1. **Section** — ``obsm["spatial"]`` (x, y per cell, in pixels, as scanpy/squidpy store it)
   times ``pixel_size_um`` gives micrometres in the section plane.
2. **Block** — a RUI block is a box centred on its own origin (corners at ±dimension/2 mm;
   :mod:`atlasprep.align.rui`). A section is a plane of the block parallel to its x–y face
   (the RUI cuts blocks into ``slice_count`` slices along z): section x → block x, section y →
   block y, unchanged in direction. ``section_z_mm`` is the section's depth from the block's
   −z face (0 … z_dimension; default the mid-plane). The registration says where the block is,
   not where in the block the section lies, so the section's bounding box is centred on the
   block face; a section wider than the face is an input error (usually a wrong pixel size).
   In-plane rotation or mirroring of the image within the block is unknown to the RUI and
   not modelled.
3. **Organ** — the placement carries block-local mm to the reference organ's frame
   (``T + Rx·Ry·Rz·(S ⊙ p)``, mm, origin at the organ's bounding-box corner;
   :mod:`atlasprep.align.organ`): ``obsm["ccf"]`` (n × 3, mm).

Each cell then gets every mesh of the organ that contains it (:func:`structures_at`), as
ontology IDs through the crosswalk: ``obs["ccf_structure_ontology_term_ids"]`` lists them
most specific first, ``;``-joined; ``obs["anatomical_structure_ontology_term_id"]`` (and
``obs["anatomical_structure"]``, its label) is the most specific one — the smallest enclosed
volume, so the septum (79 cm³) wins over the left ventricle mesh that overlaps it (274 cm³).
IDs are UBERON where the crosswalk has one and FMA otherwise (the papillary muscles and a few
vessels: ``FMA:7264``). Cells in no structure get ``unknown`` and an empty list.
``uns["ccf"]`` keeps the registration: target, placement, block size, the block's own
``ccf_annotations`` (its collision set as the RUI recorded it) and the 4 × 4 block → organ
matrix.

The placement is optional; neighbours and bins work on any section. ``neighbors=K`` adds a
k-nearest-neighbour graph on the section's µm coordinates in squidpy's generic KNN layout
(CSR; row i holds cell i's K nearest others in both ``obsp["spatial_connectivities"]``, 1.0,
and ``obsp["spatial_distances"]``, µm; not symmetrised). ``bin_size_mm`` adds
``obs["spatial_bin"]`` (``x12_y3_z7``: floor of each coordinate over the bin size) from the
organ frame when placed — comparable across sections of the same organ — else from the
section's own µm coordinates (as mm) with z = section_z."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from atlasprep._io import check_new_output
from atlasprep.align._ccf_geometry import (
    apply_matrix,
    block_center,
    block_corners,
    containment,
    placement_matrix,
    section_center,
    section_to_block,
    spatial_bin_labels,
    spatial_bins,
    spatial_neighbors,
    specific_first,
    structures_at,
)
from atlasprep.align._ccf_io import (
    DEFAULT_PIXEL_SIZE_UM,
    PIXEL_KEY,
    SPATIAL_KEY,
    placement_uns,
    read_section,
    read_spatial,
    section_xy,
    settle_pixel_size,
    write_section,
)
from atlasprep.align._spatial_readers import PixelSize, SpatialSection, scalefactor_pixel_size
from atlasprep.align.organ import Crosswalk, ReferenceOrgan, load_reference_organ, read_crosswalk
from atlasprep.align.rui import Registration, iri_fragment, read_registration
from atlasprep.errors import InputFormatError, UsageError
from atlasprep.provenance import PROVENANCE_KEY, file_input, new_step, read_steps, steps_json
from atlasprep.slice.writer import format_of
from atlasprep.sources.spec import SourceSpec, whole_file

__all__ = [
    "ALL_TERMS_COLUMN",
    "BIN_COLUMN",
    "CCF_KEY",
    "DEFAULT_PIXEL_SIZE_UM",
    "LABEL_COLUMN",
    "PIXEL_KEY",
    "TERM_COLUMN",
    "CcfSummary",
    "PixelSize",
    "SpatialSection",
    "block_center",
    "block_corners",
    "containment",
    "placement_matrix",
    "read_section",
    "read_spatial",
    "register_file",
    "register_section",
    "section_to_block",
    "spatial_bin_labels",
    "spatial_bins",
    "spatial_neighbors",
    "structures_at",
]

log = logging.getLogger("atlasprep.align")

CCF_KEY = "ccf"
TERM_COLUMN = "anatomical_structure_ontology_term_id"
LABEL_COLUMN = "anatomical_structure"
ALL_TERMS_COLUMN = "ccf_structure_ontology_term_ids"
BIN_COLUMN = "spatial_bin"
UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class CcfSummary:
    """What :func:`register_file` wrote, for the CLI to render."""

    out: Path
    n_obs: int
    registration_id: str = ""
    target: str = ""
    n_in_structures: int = 0  # cells inside at least one structure
    structures: Mapping[str, int] | None = None  # most specific term → cells
    labels: Mapping[str, str] | None = None  # term → its label (the crosswalk's)
    n_bins: int = 0
    n_neighbors: int = 0
    section_center_px: tuple[float, float] | None = None  # the pixel on the block face's centre
    pixel_size_um: float = DEFAULT_PIXEL_SIZE_UM
    pixel_size_source: str = ""  # "given", the file's scale factors or unit, or the default


# -- the section ----------------------------------------------------------------------------


def _organ_iri(registration: Registration, organ: ReferenceOrgan, crosswalk: Crosswalk) -> str:
    entry = crosswalk.get(organ.organ_node)
    if entry is None or not entry.organ:
        raise InputFormatError(
            f"crosswalk {crosswalk.path.name} has no row for {organ.organ_node}, the organ node of "
            f"{organ.path.name}; use the crosswalk of that model's release"
        )
    target = iri_fragment(registration.target)
    if target != entry.organ:
        raise UsageError(
            f"registration {registration.id or registration.source} targets {registration.target}, but "
            f"reference_organ {organ.path.name} is {entry.organ} (node {organ.organ_node}); pass the "
            f"reference organ GLB of {target}, or a registration placed in {entry.organ}"
        )
    return entry.organ


def _structure_columns(points: np.ndarray, organ: ReferenceOrgan, crosswalk: Crosswalk) -> dict[str, Any]:
    order = specific_first(organ)
    entries = [crosswalk.get(organ.structures[j].node) for j in order]
    unmapped = [
        organ.structures[j].node for j, e in zip(order, entries, strict=True) if not e or not e.ontology_id
    ]
    if len(unmapped) == len(order):
        raise InputFormatError(
            f"crosswalk {crosswalk.path.name} names none of the meshes of {organ.path.name} "
            f"({organ.structures[0].node}, …); use the crosswalk of that model's release"
        )
    if unmapped:
        log.warning(
            "no ontology term in the crosswalk for %s; cells inside them get none", ", ".join(unmapped)
        )
    terms = [e.ontology_id if e else "" for e in entries]
    labels = {e.ontology_id: e.label for e in entries if e and e.ontology_id}
    inside = containment(points, organ)[:, order]
    combos, inverse = np.unique(inside, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    most, joined = [], []
    for combo in combos:  # one pass per distinct set of structures, not per cell
        ids = list(dict.fromkeys(t for t, hit in zip(terms, combo, strict=True) if hit and t))
        most.append(ids[0] if ids else UNKNOWN)
        joined.append(";".join(ids))

    def categorical(values: list[str]) -> pd.Categorical:
        uniq, codes = np.unique(np.asarray(values, dtype=object), return_inverse=True)
        return pd.Categorical.from_codes(codes.reshape(-1)[inverse], categories=pd.Index(uniq, dtype=object))

    term = categorical(most)
    names, remap = np.unique(
        np.asarray([labels.get(t, UNKNOWN) for t in term.categories], dtype=object), return_inverse=True
    )
    label = pd.Categorical.from_codes(remap.reshape(-1)[term.codes], categories=pd.Index(names, dtype=object))
    return {TERM_COLUMN: term, LABEL_COLUMN: label, ALL_TERMS_COLUMN: categorical(joined)}


def _check_options(neighbors: int | None, bin_size_mm: float | None, section_z_mm: float | None) -> None:
    if neighbors is not None and neighbors < 1:
        raise UsageError(f"neighbors = {neighbors}: must be at least 1")
    if bin_size_mm is not None and not (math.isfinite(bin_size_mm) and bin_size_mm > 0):
        raise UsageError(f"bin_size_mm = {bin_size_mm}: must be a finite number > 0 mm")
    if section_z_mm is not None and not math.isfinite(section_z_mm):
        raise UsageError(
            f"section_z_mm = {section_z_mm}: must be a finite number (mm from the block's −z face)"
        )


def _place(
    result: ad.AnnData,
    xy: np.ndarray,
    placing: tuple[Registration, ReferenceOrgan, Crosswalk],
    organ_iri: str,
    *,
    pixel_size_um: float,
    section_z_mm: float | None,
    section_center_px: tuple[float, float] | None = None,
) -> np.ndarray:
    """Place the section in the organ: ``obsm["ccf"]``, the structure columns, ``uns["ccf"]``;
    returns the placed points (organ frame, mm)."""
    block, reference, table = placing
    depth = block.dimensions_mm[2]
    z = depth / 2.0 if section_z_mm is None else float(section_z_mm)
    if not 0.0 <= z <= depth:
        raise UsageError(
            f"section_z_mm = {z:g}: lies outside the block: give the depth from its first face, 0–{depth:g}"
        )
    center = section_center(xy) if section_center_px is None else section_center_px
    local = section_to_block(
        xy, pixel_size_um=pixel_size_um, section_z_mm=z, dimensions_mm=block.dimensions_mm, center_px=center
    )
    with np.errstate(all="ignore"):  # a Registration built in code skips the reader's checks
        placed = apply_matrix(placement_matrix(block), local)
    if not np.isfinite(placed).all():
        raise InputFormatError(
            f"registration {block.id or block.source}: its placement gives non-finite organ coordinates; "
            "scaling, rotation and translation must be finite numbers"
        )
    result.obsm[CCF_KEY] = placed
    for column, values in _structure_columns(placed, reference, table).items():
        result.obs[column] = values
    result.uns[CCF_KEY] = placement_uns(block, reference, table, organ_iri, z, pixel_size_um)
    result.uns[CCF_KEY]["section_center_px"] = np.asarray(center, dtype=np.float64)  # on the face's centre
    return placed


def _add_neighbors(
    result: ad.AnnData, points_um: np.ndarray, neighbors: int, section_key: str | None
) -> None:
    sections = None
    if section_key is not None:
        if section_key not in result.obs.columns:
            raise UsageError(f"section_key = {section_key!r}: obs has no such column")
        sections = result.obs[section_key].astype(str).to_numpy()
    connectivities, distances = spatial_neighbors(points_um, neighbors, sections)
    result.obsp["spatial_connectivities"] = connectivities
    result.obsp["spatial_distances"] = distances
    params: dict[str, Any] = {"n_neighbors": neighbors, "coord_type": "generic", "units": "micrometer"}
    if section_key is not None:
        params["library_key"] = section_key  # (squidpy's name for it)
    result.uns["spatial_neighbors"] = {
        "connectivities_key": "spatial_connectivities",
        "distances_key": "spatial_distances",
        "params": params,
    }


def _add_bins(result: ad.AnnData, points_mm: np.ndarray, bin_size_mm: float, frame: str) -> None:
    result.obs[BIN_COLUMN] = spatial_bin_labels(spatial_bins(points_mm, bin_size_mm))
    result.uns["spatial_bins"] = {"bin_size_mm": bin_size_mm, "frame": frame, "column": BIN_COLUMN}


def _check_scaled(xy: np.ndarray, px: PixelSize) -> None:
    """The section in µm, and its squared distances, stay within a float's range (a huge pixel
    size would overflow them)."""
    reach = float(np.abs(xy).max()) * px.um  # a Python float: overflow gives inf, not a warning
    if not math.isfinite(reach * reach):
        raise UsageError(
            f"pixel_size_um = {px.um:g} ({px.source}): obsm['spatial'] reaches {np.abs(xy).max():g} px, "
            "which at that size overflows a float; give the µm per pixel"
        )


def _as_section(adata: ad.AnnData | SpatialSection | Path | str) -> SpatialSection:
    if isinstance(adata, SpatialSection):
        return adata  # read for this call: placed in place
    if isinstance(adata, Path | str):
        return read_section(adata)
    return SpatialSection(adata=adata.copy(), pixel_size=scalefactor_pixel_size(adata))


def register_section(
    adata: ad.AnnData | SpatialSection | Path | str,
    registration: Registration | None = None,
    organ: ReferenceOrgan | None = None,
    crosswalk: Crosswalk | None = None,
    *,
    pixel_size_um: float | None = None,
    section_z_mm: float | None = None,
    neighbors: int | None = None,
    bin_size_mm: float | None = None,
    spatial_key: str = SPATIAL_KEY,
    section_key: str | None = None,
    section_center_px: tuple[float, float] | None = None,
) -> ad.AnnData:
    """Place a section (see the module docstring); returns a new AnnData (a given one is copied).
    ``pixel_size_um`` None takes the one the section states (Space Ranger scale factors in
    ``uns["spatial"]``, a SpatialData µm coordinate system), else 1; ``uns["spatial_pixel_size"]``
    records which."""
    _check_options(neighbors, bin_size_mm, section_z_mm)
    placing: tuple[Registration, ReferenceOrgan, Crosswalk] | None = None
    organ_iri = ""
    if registration is not None:
        if organ is None or crosswalk is None:
            raise UsageError("registration needs organ and crosswalk")
        placing = (registration, organ, crosswalk)
        organ_iri = _organ_iri(registration, organ, crosswalk)  # before reading a large section
    section = _as_section(adata)
    px = settle_pixel_size(pixel_size_um, section.pixel_size)
    result = section.adata
    xy = section_xy(result, spatial_key)
    _check_scaled(xy, px)
    result.uns[PIXEL_KEY] = {"pixel_size_um": px.um, "source": px.source}
    if placing is not None:
        placed = _place(
            result,
            xy,
            placing,
            organ_iri,
            pixel_size_um=px.um,
            section_z_mm=section_z_mm,
            section_center_px=section_center_px,
        )
        bin_points, bin_frame = placed, "ccf"
    else:
        z = 0.0 if section_z_mm is None else float(section_z_mm)
        bin_points = np.column_stack([xy * (px.um / 1000.0), np.full(len(xy), z)])
        bin_frame = "section"
    if neighbors is not None:
        _add_neighbors(result, xy * px.um, int(neighbors), section_key)
    if bin_size_mm is not None:
        _add_bins(result, bin_points, float(bin_size_mm), bin_frame)
    return result


# -- file in, file out ----------------------------------------------------------------------


def register_file(
    spatial: SourceSpec | Path | str,
    out: Path | str,
    *,
    registration: Path | str | None = None,
    reference_organ: Path | str | None = None,
    crosswalk: Path | str | None = None,
    registration_id: str | None = None,
    organ_node: str | None = None,
    pixel_size_um: float | None = None,
    section_z_mm: float | None = None,
    neighbors: int | None = None,
    section_key: str | None = None,
    section_center_px: tuple[float, float] | None = None,
    bin_size_mm: float | None = None,
    spatial_table: str | None = None,
    all_spots: bool = False,
    spatialdata_out: bool = False,
    overwrite: bool = False,
) -> CcfSummary:
    """Read a section (a path, or a :class:`SourceSpec` of one file, registered whole; see
    :func:`read_spatial` for the formats), place it (when a registration is given), write
    ``out`` atomically: AnnData, or a SpatialData store with ``spatialdata_out``."""
    spatial = whole_file(spatial, "align ccf")
    settle_pixel_size(pixel_size_um, None)  # bad values fail before any reading
    _check_options(neighbors, bin_size_mm, section_z_mm)
    if section_center_px is not None and registration is None:
        raise UsageError(
            f"section_center_px = {section_center_px}: it places the section; set registration too"
        )
    if section_center_px is not None and not all(math.isfinite(float(v)) for v in section_center_px):
        raise UsageError(f"section_center_px = {section_center_px}: must be two finite numbers (pixels)")
    if section_key is not None and neighbors is None:
        raise UsageError(
            f"section_key = {section_key!r}: it keeps the kNN graph's sections apart; set neighbors too"
        )
    out = Path(out)
    if format_of(out) != "zarr" and spatialdata_out:
        raise UsageError(f"spatialdata_out: a SpatialData store is a .zarr directory, not {out.name}")
    check_new_output(out, overwrite=overwrite)
    placing = (registration, reference_organ, crosswalk)
    if any(x is not None for x in placing) and not all(x is not None for x in placing):
        raise UsageError("registration, reference_organ and crosswalk go together: give all three or none")
    if registration is None and neighbors is None and bin_size_mm is None:
        raise UsageError(
            "nothing to do: set registration (with reference_organ, crosswalk), neighbors or bin_size_mm"
        )
    reg = organ = table = None
    if registration is not None and reference_organ is not None and crosswalk is not None:
        reg = read_registration(registration, registration_id=registration_id)
        organ = load_reference_organ(reference_organ, organ_node=organ_node)
        table = read_crosswalk(crosswalk)
        _organ_iri(reg, organ, table)  # before reading a large section
    adata = register_section(
        read_section(spatial, table=spatial_table, all_spots=all_spots),
        reg,
        organ,
        table,
        pixel_size_um=pixel_size_um,
        section_z_mm=section_z_mm,
        neighbors=neighbors,
        bin_size_mm=bin_size_mm,
        section_key=section_key,
        section_center_px=section_center_px,
    )
    step = new_step("align ccf", _options(locals()), [file_input(spatial)])
    adata.uns[PROVENANCE_KEY] = steps_json([*read_steps(spatial), step])
    write_section(adata, out, spatialdata=spatialdata_out)
    log.info("wrote %s (%d cells)", out, adata.n_obs)
    return _summary(adata, out, reg, neighbors=neighbors, binned=bin_size_mm is not None)


def _options(given: dict[str, Any]) -> dict[str, Any]:
    """register_file's options as a provenance step records them."""
    keys: tuple[str, ...] = ("registration", "reference_organ", "crosswalk", "registration_id")
    keys += ("organ_node", "pixel_size_um", "section_z_mm", "neighbors", "bin_size_mm")
    keys += ("spatial_table", "all_spots", "spatialdata_out")
    options = {k: given.get(k) for k in keys}
    for key in ("section_key", "section_center_px"):  # (recorded when given: older records stay the same)
        if given.get(key) is not None:
            options[key] = list(given[key]) if key == "section_center_px" else given[key]
    return options


def _summary(
    adata: ad.AnnData, out: Path, reg: Registration | None, *, neighbors: int | None, binned: bool
) -> CcfSummary:
    """What a registration wrote: the cells in each structure (named), the bins and graph."""
    counts: dict[str, int] | None = None
    labels: dict[str, str] | None = None
    n_inside = 0
    if reg is not None:
        counts = {str(k): int(v) for k, v in adata.obs[TERM_COLUMN].value_counts().items() if v}
        n_inside = adata.n_obs - counts.get(UNKNOWN, 0)
        pairs = adata.obs[[TERM_COLUMN, LABEL_COLUMN]].drop_duplicates().astype(str).itertuples(index=False)
        labels = {str(term): str(label) for term, label in pairs}
    return CcfSummary(
        out=out,
        n_obs=adata.n_obs,
        registration_id=reg.id if reg else "",
        target=reg.target if reg else "",
        n_in_structures=n_inside,
        structures=counts,
        labels=labels,
        n_bins=int(adata.obs[BIN_COLUMN].nunique()) if binned else 0,
        n_neighbors=int(neighbors or 0),
        section_center_px=tuple(map(float, adata.uns[CCF_KEY]["section_center_px"])) if reg else None,  # type: ignore[arg-type]
        pixel_size_um=float(adata.uns[PIXEL_KEY]["pixel_size_um"]),
        pixel_size_source=str(adata.uns[PIXEL_KEY]["source"]),
    )
