"""Spatial sections in the formats instruments and scverse write, read into one AnnData with
``obsm["spatial"]`` (x, y per spot or cell) and, where the format says it, the µm per unit.

* **10x Visium** — a Space Ranger output folder (``filtered_feature_bc_matrix.h5`` and
  ``spatial/``), read by scanpy's reader (``pip install 'atlasprep[spatial]'``). Positions are
  full-resolution image pixels; ``scalefactors_json.json`` gives their size: Visium HD's
  ``microns_per_pixel`` where present, else ``spot_diameter_fullres``, which 10x documents as
  the pixels across "a theoretical 65 µm spot" (Space Ranger spatial outputs; the capture spots
  themselves are 55 µm). Dividing by 55 instead would make sections 18 % too small: the spots'
  100 µm centre-to-centre lattice (``array_row``/``array_col``) agrees with 65 to 0.5 % on the
  test folder. Only spots over tissue are kept unless ``all_spots``.
* **SpatialData** — a zarr store in the scverse layout, read with zarr, anndata and pyarrow
  (the ``spatialdata`` package pulls in dask-image, datashader, geopandas, xarray and
  scikit-image, and pins dask; we need none of that to read coordinates): the table under
  ``tables/<name>`` (AnnData zarr) and its cells' coordinates from the shapes (GeoParquet,
  circle centres or polygon centroids) or points (Parquet x, y) element the table annotates,
  matched on the table's ``instance_key``, carried into the element's ``global`` coordinate
  system by its NGFF transformation. The pixel size is known only when that system's axes name
  a length unit (``micrometer``, ``millimeter``, ``nanometer``).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from atlasprep.errors import InputFormatError, UsageError

__all__ = [
    "SPOT_DIAMETER_FULLRES_UM",
    "PixelSize",
    "SpatialSection",
    "is_spatialdata",
    "is_visium",
    "optional_module",
    "quiet_consolidated",
    "read_anndata_zarr",
    "read_spatialdata",
    "read_visium",
    "scalefactor_pixel_size",
]

SPATIAL_KEY = "spatial"
SPOT_DIAMETER_FULLRES_UM = 65.0  # what spot_diameter_fullres spans, per 10x (see the module docstring)
_UNIT_UM = {"micrometer": 1.0, "micrometre": 1.0, "micron": 1.0, "um": 1.0, "µm": 1.0}
_UNIT_UM |= {"millimeter": 1000.0, "millimetre": 1000.0, "mm": 1000.0, "nanometer": 1e-3, "nm": 1e-3}
_INSTALL = "pip install 'atlasprep[spatial]'"


@dataclass(frozen=True, slots=True, kw_only=True)
class PixelSize:
    """µm per unit of ``obsm["spatial"]``, and where that figure came from (for the summary)."""

    um: float
    source: str
    problem: str = ""  # why the file's figure cannot be used (a damaged scale factor): an error if it is


@dataclass(frozen=True, slots=True, kw_only=True)
class SpatialSection:
    """A section as read: its cells (``obsm["spatial"]`` set) and the pixel size its file states."""

    adata: ad.AnnData
    pixel_size: PixelSize | None = None


def optional_module(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise UsageError(f"spatial: reading this format needs {module}: {_INSTALL}") from None


# -- 10x Visium ---------------------------------------------------------------------------------


def is_visium(path: Path) -> bool:
    return path.is_dir() and (path / "spatial").is_dir() and any(path.glob("*_feature_bc_matrix.h5"))


def scalefactor_pixel_size(adata: ad.AnnData, *, where: str = "") -> PixelSize | None:
    """The pixel size that scanpy's Visium layout (``uns["spatial"][library]["scalefactors"]``)
    states, or None (no scale factors, or libraries that disagree). A stated
    ``microns_per_pixel`` or ``spot_diameter_fullres`` that is not a finite number > 0 gives a
    pixel size whose ``problem`` names ``where`` (the file) and the field: an error if it is used.
    An absent (or null) one is not stated."""
    libraries = adata.uns.get(SPATIAL_KEY)
    if not isinstance(libraries, Mapping) or not libraries:
        return None
    found: set[tuple[float, str]] = set()
    for library, entry in libraries.items():
        factors = entry.get("scalefactors", {}) if isinstance(entry, Mapping) else {}
        field = next(
            (f for f in ("microns_per_pixel", "spot_diameter_fullres") if factors.get(f) is not None), ""
        )
        if not field:
            continue
        value = np.asarray(factors[field])
        number = _float(value)
        if not number > 0:  # NaN too
            number = math.nan
        um = number if field == "microns_per_pixel" else SPOT_DIAMETER_FULLRES_UM / number
        if not math.isfinite(um):  # inf, or 65 µm over a diameter too small for a float
            problem = (
                f"{where or f'uns[spatial][{library}][scalefactors]'}: {field} = {value.tolist()!r}: must be "
                "a finite number > 0; fix the file, or set pixel_size_um to give the µm per pixel"
            )
            return PixelSize(um=math.nan, source=f"Space Ranger {field} ({library})", problem=problem)
        if field == "microns_per_pixel":
            found.add((um, f"Space Ranger microns_per_pixel ({library})"))
        else:
            why = f"Space Ranger spot_diameter_fullres: {number:.4g} px per {SPOT_DIAMETER_FULLRES_UM:g} µm"
            found.add((um, why))
    if len({um for um, _ in found}) != 1:
        return None
    um, source = found.pop()
    return PixelSize(um=um, source=source)


def _float(value: np.ndarray) -> float:
    """One number (as JSON, h5ad or zarr store it), else NaN."""
    try:
        return float(value.item()) if value.size == 1 else math.nan
    except (TypeError, ValueError):
        return math.nan


def _text(value: Any) -> Any:
    array = np.asarray(value)
    if array.dtype.kind != "S":
        return value
    return array.astype(str).item() if array.size == 1 else array.astype(str)


def read_visium(path: Path, *, all_spots: bool = False) -> SpatialSection:
    """A Space Ranger output folder: the filtered matrix (the raw one when only it is there)."""
    sc = optional_module("scanpy")
    count_file = "filtered_feature_bc_matrix.h5"
    if not (path / count_file).exists():
        count_file = "raw_feature_bc_matrix.h5"
    with warnings.catch_warnings():
        # scanpy ≥ 1.11 points at squidpy.read.visium, which reads the same layout the same way
        warnings.simplefilter("ignore", FutureWarning)
        adata = sc.read_visium(path, count_file=count_file)
    adata.var_names_make_unique()
    for library in adata.uns[SPATIAL_KEY].values():
        # h5 attributes arrive as bytes arrays, which zarr v3 has no stable type for
        meta = library.get("metadata", {})
        meta.update({k: _text(v) for k, v in meta.items()})
    if not all_spots:
        adata = adata[adata.obs["in_tissue"].to_numpy() == 1].copy()
    adata.obsm[SPATIAL_KEY] = np.asarray(adata.obsm[SPATIAL_KEY], dtype=np.float64)  # x, y full-res px
    factors = path / "spatial" / "scalefactors_json.json"
    return SpatialSection(adata=adata, pixel_size=scalefactor_pixel_size(adata, where=str(factors)))


# -- SpatialData zarr ---------------------------------------------------------------------------


@contextmanager
def quiet_consolidated() -> Iterator[None]:
    """zarr 3 warns, on every v3 write and read of consolidated metadata (anndata's default),
    that it is outside the v3 spec: nothing a user of ours can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Consolidated metadata is currently not part", UserWarning)
        yield


def read_anndata_zarr(path: Path) -> ad.AnnData:
    with quiet_consolidated():
        return ad.read_zarr(path)


def is_spatialdata(path: Path) -> bool:
    """A SpatialData store: element groups at the root, where an AnnData zarr has obs and var."""
    return path.is_dir() and (path / "tables").is_dir() and not (path / "obs").is_dir()


def _names(group: Path) -> list[str]:
    return sorted(p.name for p in group.iterdir() if p.is_dir()) if group.is_dir() else []


def _attrs(group: Path) -> dict[str, Any]:
    """A zarr group's attributes, v3 (``zarr.json``) or v2 (``.zattrs``)."""
    if (group / "zarr.json").exists():
        return dict(json.loads((group / "zarr.json").read_text()).get("attributes", {}))
    if (group / ".zattrs").exists():
        return dict(json.loads((group / ".zattrs").read_text()))
    raise InputFormatError(f"{group} is not a zarr group (no zarr.json or .zattrs)")


def _homogeneous(t: Mapping[str, Any], n: int) -> np.ndarray:
    """One NGFF transformation (n axes, x, y[, z] as SpatialData sorts them) as an (n+1)² matrix."""
    m = np.eye(n + 1)
    kind = t.get("type")
    if kind == "scale":
        m[:n, :n] = np.diag(np.asarray(t["scale"], dtype=np.float64)[:n])
    elif kind == "translation":
        m[:n, n] = np.asarray(t["translation"], dtype=np.float64)[:n]
    elif kind == "affine":
        m[:n, :] = np.asarray(t["affine"], dtype=np.float64)[:n, : n + 1]
    elif kind == "sequence":
        for step in t["transformations"]:
            m = _homogeneous(step, n) @ m
    elif kind != "identity":
        raise InputFormatError(
            f"transformation {kind!r}: not supported (identity, scale, translation, affine, sequence)"
        )
    return m


def _to_global(xy: np.ndarray, attrs: Mapping[str, Any], element: str) -> tuple[np.ndarray, PixelSize | None]:
    """Points in the element's ``global`` coordinate system (its first one when there is none),
    and the µm per unit when that system's x axis names its unit (micrometer, millimeter, …)."""
    transforms = list(attrs.get("coordinateTransformations") or [])
    if not transforms:
        return xy, None
    chosen = next((t for t in transforms if t.get("output", {}).get("name") == "global"), transforms[0])
    n = xy.shape[1]
    m = _homogeneous(chosen, n)
    placed = xy @ m[:n, :n].T + m[:n, n]
    output = chosen.get("output", {})
    units = {a.get("name"): str(a.get("unit", "")).lower() for a in output.get("axes", [])}
    um = _UNIT_UM.get(units.get("x", ""))
    if um is None:
        return placed, None
    where = f"SpatialData {element}: coordinate system {output['name']!r} in {units['x']}"
    return placed, PixelSize(um=um, source=where)


def _geometry_xy(column: Any, element: str) -> np.ndarray:
    """Circle centres or polygon centroids of a GeoParquet geometry column (WKB, or GeoArrow points)."""
    column = column.combine_chunks()
    if pa.types.is_struct(column.type):  # GeoArrow's native point encoding: fields x, y
        return np.column_stack([column.field(a).to_numpy(zero_copy_only=False) for a in ("x", "y")])
    if not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
        raise InputFormatError(
            f"SpatialData {element}: geometry stored as {column.type}; write it as WKB (the default)"
        )
    shapely = optional_module("shapely")
    geoms = shapely.from_wkb(column.to_numpy(zero_copy_only=False))
    if geoms.size and shapely.get_type_id(geoms).max() > 0:  # 0 is Point: polygons give centroids
        geoms = shapely.centroid(geoms)
    xy = shapely.get_coordinates(geoms)
    if len(xy) != len(geoms):
        raise InputFormatError(f"SpatialData {element}: empty geometries")
    return np.asarray(xy, dtype=np.float64)


def _element_coordinates(root: Path, region: str) -> tuple[pd.Index, np.ndarray, PixelSize | None]:
    """A shapes or points element: its instance IDs and their x, y in the global system."""
    for kind in ("shapes", "points"):
        group = root / kind / region
        if group.is_dir():
            break
    else:
        shapes = ", ".join(_names(root / "shapes")) or "none"
        raise InputFormatError(
            f"SpatialData {root}: the table annotates {region!r}, neither shapes ({shapes}) nor points"
        )
    attrs = _attrs(group)
    element = f"{kind}/{region}"
    table = pq.read_table(group / f"{kind}.parquet")
    frame_index = (table.schema.pandas_metadata or {}).get("index_columns", [])
    if kind == "shapes":
        xy = _geometry_xy(table.column("geometry"), element)
    else:
        axes = [a for a in attrs.get("axes", ["x", "y"]) if a in ("x", "y", "z")]  # z too: 3-D transforms
        xy = np.column_stack([table.column(a).to_numpy() for a in axes]).astype(np.float64)
    instance_key = (attrs.get("spatialdata_attrs") or {}).get("instance_key")
    if kind == "points" and instance_key and instance_key in table.column_names:
        ids = table.column(instance_key).to_pandas()
    elif frame_index and isinstance(frame_index[0], str):
        ids = table.column(frame_index[0]).to_pandas()
    else:
        ids = pd.Series(np.arange(len(xy)))
    if not ids.is_unique:
        raise InputFormatError(f"SpatialData {element}: instance IDs repeat; each cell needs its own")
    placed, pixel = _to_global(xy, attrs, element)
    return pd.Index(ids), placed, pixel


def _pick_table(root: Path, name: str | None) -> str:
    names = _names(root / "tables")
    if name is None and len(names) == 1:
        return names[0]
    if name is not None and name in names:
        return name
    raise UsageError(f"spatial_table = {name!r}: {root} holds tables {', '.join(names) or 'none'}; name one")


def read_spatialdata(path: Path, *, table: str | None = None) -> SpatialSection:
    """The table of a SpatialData store, each row placed at its shape's or point's coordinates."""
    name = _pick_table(path, table)
    adata = read_anndata_zarr(path / "tables" / name)
    attrs = adata.uns.get("spatialdata_attrs") or _attrs(path / "tables" / name)  # both carry the keys
    regions: Sequence[str] = (
        [attrs["region"]] if isinstance(attrs.get("region"), str) else list(attrs.get("region") or [])
    )
    if not regions:
        if SPATIAL_KEY in adata.obsm:
            return SpatialSection(adata=adata)
        raise InputFormatError(
            f"SpatialData table {name!r} annotates no shapes or points and has no obsm['spatial']"
        )
    region_key, instance_key = attrs.get("region_key"), attrs.get("instance_key")
    if instance_key not in adata.obs or (len(regions) > 1 and region_key not in adata.obs):
        raise InputFormatError(
            f"SpatialData table {name!r}: obs has no instance_key column {instance_key!r} "
            f"(or region_key {region_key!r})"
        )
    xy = np.full((adata.n_obs, 2), np.nan)
    pixels: set[PixelSize | None] = set()
    for region in regions:
        rows = np.ones(adata.n_obs, bool) if len(regions) == 1 else adata.obs[region_key].to_numpy() == region
        ids, coords, pixel = _element_coordinates(path, region)
        at = ids.get_indexer(pd.Index(adata.obs[instance_key].to_numpy()[rows]))
        if (at < 0).any():
            missing = int((at < 0).sum())
            raise InputFormatError(
                f"SpatialData table {name!r}: {missing:,} rows name instances {region!r} lacks"
            )
        xy[rows] = coords[at, :2]
        pixels.add(pixel)
    adata.obsm[SPATIAL_KEY] = xy
    return SpatialSection(adata=adata, pixel_size=pixels.pop() if len(pixels) == 1 else None)
