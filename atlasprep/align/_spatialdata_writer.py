"""A registered section written as a SpatialData zarr store, in the layout spatialdata 0.7 writes
(container format 0.2; shapes 0.3; tables 0.2), with zarr, anndata and pyarrow alone:

* ``tables/table`` — the registered AnnData, annotating ``cells`` (``obs["region"]``,
  ``obs["instance_id"]``);
* ``shapes/cells`` — one circle per cell at ``obsm["spatial"]`` (GeoParquet, WKB points and a
  ``radius``: half the 55 µm Visium spot when the section has Space Ranger scale factors, else
  half the median distance to the nearest other cell, the largest circles that do not overlap
  on a regular grid). Coordinate systems: ``global`` in micrometres (pixels × the pixel size)
  and ``pixels`` (identity), so SpatialData tools overlay the Visium images' pixel frame too;
* ``points/ccf`` — when placed, each cell in the reference organ (x, y, z in mm; coordinate
  system ``ccf``, unit millimeter) with its ``instance_id``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
from scipy.spatial import cKDTree

from atlasprep.align._spatial_readers import SPATIAL_KEY, optional_module, quiet_consolidated

__all__ = ["write_spatialdata"]

REGION = "cells"
REGION_KEY = "region"
INSTANCE_KEY = "instance_id"
CCF_KEY = "ccf"
VISIUM_SPOT_RADIUS_UM = 27.5  # the capture spot itself (55 µm across)


def _group(path: Path, attrs: dict[str, Any]) -> None:
    zarr.open_group(path, mode="a", zarr_format=3).attrs.update(attrs)


def _transform(kind: dict[str, Any], name: str, axes: str, unit: str) -> dict[str, Any]:
    """``kind`` from the element's own axes into coordinate system ``name``, in ``unit``."""
    described = [{"name": a, "type": "space", "unit": unit} for a in axes]
    return {**kind, "input": {"name": axes, "axes": described}, "output": {"name": name, "axes": described}}


def _radius_px(xy: np.ndarray, pixel_size_um: float, visium: bool) -> float:
    if visium:
        return VISIUM_SPOT_RADIUS_UM / pixel_size_um
    if len(xy) < 2:
        return 1.0
    distances, _ = cKDTree(xy).query(xy, k=2)
    nearest = distances[:, 1][distances[:, 1] > 0]
    return float(np.median(nearest) / 2) if len(nearest) else 1.0


def _write_geoparquet(path: Path, xy: np.ndarray, radius: float) -> None:
    shapely = optional_module("shapely")
    frame = pd.DataFrame(
        {"geometry": shapely.to_wkb(shapely.points(xy)), "radius": np.full(len(xy), radius)},
        index=pd.RangeIndex(len(xy), name=INSTANCE_KEY),
    )
    table = pa.Table.from_pandas(
        frame, preserve_index=True
    )  # the index is the instance ID, as geopandas writes
    geo = {
        "version": "1.0.0",
        "primary_column": "geometry",
        "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Point"]}},
    }
    metadata = {**(table.schema.metadata or {}), b"geo": json.dumps(geo).encode()}
    pq.write_table(table.replace_schema_metadata(metadata), path)


def _write_cells(root: Path, xy: np.ndarray, radius: float, pixel_size_um: float) -> None:
    group = root / "shapes" / REGION
    _group(root / "shapes", {})
    to_um = _transform(
        {"type": "scale", "scale": [pixel_size_um, pixel_size_um]}, "global", "xy", "micrometer"
    )
    _group(
        group,
        {
            "encoding-type": "ngff:shapes",
            "axes": ["x", "y"],
            "coordinateTransformations": [to_um, _transform({"type": "identity"}, "pixels", "xy", "unit")],
            "spatialdata_attrs": {"version": "0.3"},
        },
    )
    _write_geoparquet(group / "shapes.parquet", xy, radius)


def _write_ccf(root: Path, points_mm: np.ndarray) -> None:
    group = root / "points" / CCF_KEY
    _group(root / "points", {})
    _group(
        group,
        {
            "encoding-type": "ngff:points",
            "axes": ["x", "y", "z"],
            "coordinateTransformations": [_transform({"type": "identity"}, CCF_KEY, "xyz", "millimeter")],
            "spatialdata_attrs": {"instance_key": INSTANCE_KEY, "version": "0.2"},
        },
    )
    (group / "points.parquet").mkdir()
    columns = {a: points_mm[:, k] for k, a in enumerate("xyz")}
    table = pa.table({**columns, INSTANCE_KEY: np.arange(len(points_mm), dtype=np.int64)})
    pq.write_table(table, group / "points.parquet" / "part.0.parquet")


def write_spatialdata(adata: ad.AnnData, root: Path, *, pixel_size_um: float, visium: bool) -> None:
    """Write ``adata`` (registered: ``obsm["spatial"]``, maybe ``obsm["ccf"]``) at ``root``; adds
    the ``region`` and ``instance_id`` columns that link its rows to the shapes."""
    xy = np.asarray(adata.obsm[SPATIAL_KEY], dtype=np.float64)
    _group(root, {"spatialdata_attrs": {"version": "0.2"}})
    _write_cells(root, xy, _radius_px(xy, pixel_size_um, visium), pixel_size_um)
    if CCF_KEY in adata.obsm:
        _write_ccf(root, np.asarray(adata.obsm[CCF_KEY], dtype=np.float64))
    table = adata
    table.obs[REGION_KEY] = pd.Categorical([REGION] * table.n_obs)
    table.obs[INSTANCE_KEY] = np.arange(table.n_obs, dtype=np.int64)
    keys = {"region": REGION, "region_key": REGION_KEY, "instance_key": INSTANCE_KEY}
    table.uns["spatialdata_attrs"] = keys
    _group(root / "tables", {})
    with ad.settings.override(zarr_write_format=3, auto_shard_zarr_v3=False), quiet_consolidated():
        table.write_zarr(root / "tables" / "table")
    _group(
        root / "tables" / "table",
        {"spatialdata-encoding-type": "ngff:regions_table", "version": "0.2", **keys},
    )
