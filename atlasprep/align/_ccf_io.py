"""`align ccf`, files in and out: read a section (``.h5ad``, ``.zarr``, ``.loom``, a 10x Visium
Space Ranger folder or a SpatialData zarr store; :mod:`atlasprep.align._spatial_readers`), settle
its pixel size, and write the registered one atomically."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from atlasprep.align._ccf_geometry import placement_matrix
from atlasprep.align._output import stored_bytes, write_output
from atlasprep.align._spatial_readers import (
    SPATIAL_KEY,
    PixelSize,
    SpatialSection,
    is_spatialdata,
    is_visium,
    quiet_consolidated,
    read_anndata_zarr,
    read_spatialdata,
    read_visium,
    scalefactor_pixel_size,
)
from atlasprep.align._spatialdata_writer import write_spatialdata
from atlasprep.align.organ import Crosswalk, ReferenceOrgan
from atlasprep.align.rui import Registration
from atlasprep.errors import InputFormatError, SourceError, UsageError
from atlasprep.slice.writer import format_of

DEFAULT_PIXEL_SIZE_UM = 1.0  # when neither the user nor the file says
PIXEL_KEY = "spatial_pixel_size"  # uns: the pixel size used, and where it came from


def _read_loom(path: Path) -> ad.AnnData:
    """A loom file (rows = genes) as AnnData, with h5py: anndata's reader needs loompy."""
    with h5py.File(path, "r") as f:
        if "matrix" not in f:
            raise InputFormatError(f"{path} has no /matrix; is it a loom file?")
        matrix = f["matrix"]
        n_genes, n_cells = matrix.shape
        blocks = [sp.csr_matrix(matrix[:, i : i + 4096].T, dtype=np.float32) for i in range(0, n_cells, 4096)]
        X = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, n_genes), dtype=np.float32)
        obs: dict[str, np.ndarray] = {}
        obsm: dict[str, np.ndarray] = {}
        for name, dataset in f.get("col_attrs", {}).items():
            values = _decode(dataset[()])
            if values.ndim == 2 and values.shape[1] > 1:
                obsm[SPATIAL_KEY if "spatial" in name.lower() else name] = values.astype(np.float64)
            else:
                obs[name] = values.reshape(n_cells)
        genes = {name: _decode(d[()]).reshape(n_genes) for name, d in f.get("row_attrs", {}).items()}
    names = obs.pop("CellID", obs.pop("obs_names", np.arange(n_cells).astype(str)))
    var_names = genes.pop("Gene", genes.pop("var_names", np.arange(n_genes).astype(str)))
    obs_frame = pd.DataFrame(obs, index=ad.utils.make_index_unique(pd.Index(np.asarray(names).astype(str))))
    var = pd.DataFrame(genes, index=ad.utils.make_index_unique(pd.Index(np.asarray(var_names).astype(str))))
    return ad.AnnData(X=X, obs=obs_frame, var=var, obsm=obsm)


def _decode(values: np.ndarray) -> np.ndarray:
    return values.astype(str).astype(object) if values.dtype.kind == "S" else values


def read_spatial(path: Path | str) -> ad.AnnData:
    """Read a section: ``.h5ad``, ``.zarr`` or ``.loom`` (a 2-D ``*spatial*`` column attribute
    becomes ``obsm["spatial"]``), a Visium Space Ranger folder or a SpatialData store."""
    return read_section(path).adata


def read_section(path: Path | str, *, table: str | None = None, all_spots: bool = False) -> SpatialSection:
    """Read a section and the pixel size its format states (see :func:`read_spatial`);
    ``table`` picks a SpatialData table, ``all_spots`` keeps Visium spots off the tissue."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"spatial {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if is_visium(path):
            return read_visium(path, all_spots=all_spots)
        if is_spatialdata(path):
            return read_spatialdata(path, table=table)
        if suffix not in _SECTION_SUFFIXES:
            raise UsageError(
                f"spatial {path}: expected an .h5ad, .zarr or .loom file, a 10x Visium Space Ranger folder "
                f"(filtered_feature_bc_matrix.h5 and spatial/) or a SpatialData .zarr store{_inside(path)}"
            )
        if suffix == ".loom":
            return SpatialSection(adata=_read_loom(path))
        adata = read_anndata_zarr(path) if suffix == ".zarr" else ad.read_h5ad(path)
        return SpatialSection(adata=adata, pixel_size=scalefactor_pixel_size(adata, where=str(path)))
    except (OSError, KeyError, ValueError) as exc:
        if isinstance(exc, UsageError | InputFormatError):
            raise
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise SourceError(f"cannot read {path}: {reason}") from None


_SECTION_SUFFIXES = (".h5ad", ".zarr", ".loom")


def _inside(path: Path) -> str:
    """For a folder that is none of those: the sections it holds, to name instead."""
    if not path.is_dir():
        return ""
    found = sorted(p.name for p in path.iterdir() if p.suffix.lower() in _SECTION_SUFFIXES)
    if not found:
        return ""
    shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    return f"; the folder holds {shown}: pass one of them (--spatial {path / found[0]})"


def settle_pixel_size(given: float | None, stated: PixelSize | None) -> PixelSize:
    """The µm per pixel to use: the one given wins, then the one the file states, then 1."""
    if given is not None:
        if not (math.isfinite(given) and given > 0):
            raise UsageError(f"pixel_size_um = {given}: must be a finite number > 0 (µm per pixel)")
        return PixelSize(um=float(given), source="given")
    if stated is not None and stated.problem:
        raise InputFormatError(stated.problem)
    return stated or PixelSize(um=DEFAULT_PIXEL_SIZE_UM, source="default: the file states none")


def section_xy(adata: ad.AnnData, key: str) -> np.ndarray:
    """The section's x, y per cell (pixels), checked."""
    if key not in adata.obsm:
        keys = ", ".join(adata.obsm.keys()) or "none"
        raise InputFormatError(
            f"the section has no obsm['{key}'] (x, y of each cell in pixels); obsm keys: {keys}"
        )
    xy = np.asarray(pd.DataFrame(adata.obsm[key]).to_numpy(), dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise InputFormatError(f"obsm['{key}'] must be n × 2 (x, y in pixels), got shape {xy.shape}")
    if len(xy) == 0:
        raise InputFormatError("the section has no cells")
    if not np.isfinite(xy).all():
        raise InputFormatError(f"obsm['{key}'] has NaN or infinite coordinates; drop those cells first")
    return xy


def placement_uns(
    registration: Registration,
    organ: ReferenceOrgan,
    crosswalk: Crosswalk,
    organ_iri: str,
    z_mm: float,
    px: float,
) -> dict[str, Any]:
    """``uns["ccf"]``: the registration a placed section carries."""
    p = registration.placement
    uns: dict[str, Any] = {
        "registration_id": registration.id,
        "target": registration.target,
        "organ_iri": organ_iri,
        "reference_organ": organ.path.name,
        "organ_node": organ.organ_node,
        "organ_origin_glb_mm": np.asarray(organ.origin_mm),
        "crosswalk": crosswalk.path.name,
        "units": "millimeter",
        "block_dimensions_mm": np.asarray(registration.dimensions_mm),
        "ccf_annotations": list(registration.annotation_ids),
        "ccf_annotation_iris": list(registration.ccf_annotations),
        "placement": {
            "scaling": np.asarray(p.scaling),
            "rotation_deg": np.asarray(p.rotation_deg),
            "rotation_order": p.rotation_order,
            "translation_mm": np.asarray(p.translation_mm),
            "placement_date": p.placement_date,
        },
        "block_to_organ": placement_matrix(registration),
        "section_z_mm": z_mm,
        "pixel_size_um": px,
    }
    if registration.sample_id:
        uns["sample_id"] = registration.sample_id
    return uns


# -- file in, file out ----------------------------------------------------------------------


def write_section(adata: ad.AnnData, out: Path, *, spatialdata: bool = False) -> None:
    """Write the registered section: AnnData (``.h5ad``/``.zarr``), or with ``spatialdata`` a
    SpatialData store (``.zarr``; :mod:`atlasprep.align._spatialdata_writer`)."""
    pixel = adata.uns.get(PIXEL_KEY, {})

    def write(tmp: Path) -> None:
        if spatialdata:
            visium = scalefactor_pixel_size(adata) is not None
            write_spatialdata(adata, tmp, pixel_size_um=float(pixel["pixel_size_um"]), visium=visium)
        elif format_of(out) == "zarr":
            with ad.settings.override(zarr_write_format=3, auto_shard_zarr_v3=False), quiet_consolidated():
                adata.write_zarr(tmp)
        else:
            adata.write_h5ad(tmp)

    write_output(out, write, n_bytes=stored_bytes(adata))
