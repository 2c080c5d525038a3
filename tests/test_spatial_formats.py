"""`align ccf --spatial` on the formats instruments and scverse write: a 10x Visium Space Ranger
folder (scanpy's reader, µm from the scale factors) and a SpatialData zarr store."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
import shapely
import zarr
from conftest import assert_clean_error, shared_file

from atlasprep.align._spatial_readers import SPOT_DIAMETER_FULLRES_UM
from atlasprep.align.ccf import BIN_COLUMN, CCF_KEY, PIXEL_KEY, TERM_COLUMN, read_section, register_file
from atlasprep.errors import InputFormatError, UsageError

VISIUM = "spatial/visium_1.0.0"
HEART = "hra/hca-heart-teichmann-2020/registrations"
SPOT_PITCH_UM = 100.0  # Visium spot centres; array_col steps 2 along a row, rows are 100·√3/2 µm apart


def _lattice_um(obs: pd.DataFrame, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Distances between spots i and j on the Visium array, µm, from array_row/array_col alone."""
    col = obs["array_col"].to_numpy(np.float64) * SPOT_PITCH_UM / 2
    row = obs["array_row"].to_numpy(np.float64) * SPOT_PITCH_UM * np.sqrt(3) / 2
    return np.hypot(col[i] - col[j], row[i] - row[j])


def _pixel_size() -> float:
    factors = json.loads((shared_file(VISIUM) / "spatial" / "scalefactors_json.json").read_text())
    return SPOT_DIAMETER_FULLRES_UM / factors["spot_diameter_fullres"]


# -- 10x Visium ---------------------------------------------------------------------------------


def test_visium_folder_neighbours_and_bins_in_micrometres(tmp_path: Path) -> None:
    out = tmp_path / "visium.h5ad"
    summary = register_file(shared_file(VISIUM), out, neighbors=6, bin_size_mm=0.5)
    spots = ad.read_h5ad(out)
    assert summary.n_obs == spots.n_obs == 100  # the filtered matrix: every spot over tissue
    assert summary.pixel_size_um == pytest.approx(_pixel_size()) == pytest.approx(0.7269, abs=1e-4)
    assert "spot_diameter_fullres" in summary.pixel_size_source
    assert spots.uns[PIXEL_KEY]["source"] == summary.pixel_size_source
    # each spot's 6 nearest others, in µm, are where the array grid puts them: a pixel size
    # off by 1 % (55 µm spots instead of 65 would be 15 %) fails this
    graph = spots.obsp["spatial_distances"].tocoo()
    expected = _lattice_um(spots.obs, graph.row, graph.col)
    assert expected.min() >= SPOT_PITCH_UM - 1e-9
    np.testing.assert_allclose(graph.data, expected, rtol=0.01)
    # bins: floor of µm / 500 on the section's own coordinates
    xy_mm = spots.obsm["spatial"] * _pixel_size() / 1000.0
    ij = np.floor(xy_mm / 0.5).astype(int)
    labels = [f"x{i}_y{j}_z0" for i, j in ij]
    assert spots.obs[BIN_COLUMN].astype(str).tolist() == labels
    assert summary.n_bins == len(set(labels))
    assert np.ptp(ij[:, 0]) <= 12  # the array is 6.5 mm across: ≤ 13 bins of 0.5 mm


def test_visium_folder_registered_in_the_heart(tmp_path: Path) -> None:
    out = tmp_path / "placed.zarr"
    summary = register_file(
        shared_file(VISIUM),
        out,
        registration=shared_file(f"{HEART}/female-left-ventricle.json"),
        reference_organ=shared_file("hra/VH_F_Heart.glb"),
        crosswalk=shared_file("hra/ASCT-B_3D_Models_Mapping.csv"),
        bin_size_mm=1.0,
    )
    placed = ad.read_zarr(out)
    assert summary.n_obs == 100
    assert summary.target.endswith("#VHFHeart")
    assert summary.n_in_structures == 100
    assert set(summary.structures or {}) <= {"UBERON:0002084", "UBERON:0002094"}  # left ventricle, septum
    assert placed.uns[CCF_KEY]["pixel_size_um"] == pytest.approx(_pixel_size())
    # the placement is rigid: spot-to-spot distances in the organ (mm) are the array's
    ccf = placed.obsm[CCF_KEY]
    i, j = np.triu_indices(placed.n_obs, 1)
    organ_um = np.linalg.norm(ccf[i] - ccf[j], axis=1) * 1000.0
    np.testing.assert_allclose(organ_um, _lattice_um(placed.obs, i, j), rtol=0.01)
    assert placed.obs[BIN_COLUMN].nunique() == summary.n_bins > 1
    assert (placed.obs[TERM_COLUMN] != "unknown").all()


def test_an_explicit_pixel_size_wins(tmp_path: Path) -> None:
    summary = register_file(shared_file(VISIUM), tmp_path / "o.h5ad", neighbors=1, pixel_size_um=2.0)
    assert (summary.pixel_size_um, summary.pixel_size_source) == (2.0, "given")
    spots = ad.read_h5ad(tmp_path / "o.h5ad")
    graph = spots.obsp["spatial_distances"].tocoo()
    ratio = graph.data / _lattice_um(spots.obs, graph.row, graph.col)
    np.testing.assert_allclose(ratio, 2.0 / _pixel_size(), rtol=0.01)


def test_visium_keeps_spots_over_tissue(tmp_path: Path) -> None:
    folder = tmp_path / "outs"
    shutil.copytree(shared_file(VISIUM), folder)
    positions = folder / "spatial" / "tissue_positions_list.csv"
    table = pd.read_csv(positions, header=None)
    measured = set(read_section(folder).adata.obs_names)
    off = sorted(measured)[:7]  # say seven of the measured spots lie off the tissue
    table.loc[table[0].isin(off), 1] = 0
    positions.chmod(0o644)
    table.to_csv(positions, header=False, index=False)
    kept = read_section(folder).adata
    assert kept.n_obs == 93
    assert not set(off) & set(kept.obs_names)
    assert read_section(folder, all_spots=True).adata.n_obs == 100


def test_missing_scanpy_is_one_line_naming_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from atlasprep.cli import app

    monkeypatch.setitem(sys.modules, "scanpy", None)  # import scanpy raises ImportError
    with pytest.raises(UsageError, match=r"pip install 'atlasprep\[spatial\]'"):
        read_section(shared_file(VISIUM))
    result = CliRunner().invoke(
        app,
        [
            "align",
            "ccf",
            "--spatial",
            str(shared_file(VISIUM)),
            "--bin-size",
            "1",
            "--out",
            str(tmp_path / "o.h5ad"),
        ],
    )
    assert_clean_error(result, contains="atlasprep[spatial]")


# -- SpatialData --------------------------------------------------------------------------------


def _group(path: Path, attrs: dict) -> None:  # type: ignore[type-arg]
    zarr.open_group(path, mode="a", zarr_format=3).attrs.update(attrs)


def _transform(kind: dict, unit: str) -> list[dict]:  # type: ignore[type-arg]
    """``kind`` from ``xy`` to ``global``, as spatialdata writes it (each step names both systems)."""
    axes = [{"name": a, "type": "space", "unit": unit} for a in ("x", "y")]
    systems = {"input": {"name": "xy", "axes": axes}, "output": {"name": "global", "axes": axes}}
    steps = [{**step, **systems} for step in kind.get("transformations", [])]
    return [{**kind, **({"transformations": steps} if steps else {}), **systems}]


def _spatialdata_store(
    root: Path, *, n: int = 40, polygons: bool = False, unit: str = "micrometer"
) -> np.ndarray:
    """A store as spatialdata 0.7 writes it: cells as circles (or unit squares) in ``shapes/cells``,
    scaled ×2 and moved by (5, 7) into ``global``; the table lists them in another order, and X
    holds each cell's expected global x, y. Returns those, in the table's order."""
    rng = np.random.default_rng(0)
    local = rng.uniform(0, 500, size=(n, 2))
    ids = np.arange(100, 100 + n)
    _group(root, {"spatialdata_attrs": {"version": "0.2", "spatialdata_software_version": "0.7.3"}})
    shapes = root / "shapes" / "cells"
    _group(root / "shapes", {})
    steps = [{"type": "scale", "scale": [2.0, 2.0]}, {"type": "translation", "translation": [5.0, 7.0]}]
    transform = {"type": "sequence", "transformations": steps}
    _group(shapes, {"encoding-type": "ngff:shapes", "axes": ["x", "y"],
                    "coordinateTransformations": _transform(transform, unit),
                    "spatialdata_attrs": {"version": "0.3"}})  # fmt: skip
    if polygons:  # squares whose centroid is the cell's point
        geoms = shapely.box(local[:, 0] - 0.5, local[:, 1] - 0.5, local[:, 0] + 0.5, local[:, 1] + 0.5)
    else:
        geoms = shapely.points(local)
    frame = pd.DataFrame(
        {"geometry": shapely.to_wkb(geoms), "radius": np.full(n, 3.0)}, index=pd.Index(ids, name="cell_id")
    )
    table = pa.Table.from_pandas(frame)
    kind = "Polygon" if polygons else "Point"
    geo = {"version": "1.0.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": [kind]}}}  # fmt: skip
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"geo": json.dumps(geo).encode()}),
                   shapes / "shapes.parquet")  # fmt: skip
    order = rng.permutation(n)
    expected = local[order] * 2.0 + np.array([5.0, 7.0])
    cells = ad.AnnData(
        X=sp.csr_matrix(expected.astype(np.float32)),
        obs=pd.DataFrame(
            {"region": pd.Categorical(["cells"] * n), "cell_id": ids[order]}, index=[f"c{k}" for k in order]
        ),
        var=pd.DataFrame(index=["x", "y"]),
        uns={"spatialdata_attrs": {"region": "cells", "region_key": "region", "instance_key": "cell_id"}},
    )
    _group(root / "tables", {})
    with ad.settings.override(zarr_write_format=3, auto_shard_zarr_v3=False):
        cells.write_zarr(root / "tables" / "table")
    _group(root / "tables" / "table", {"spatialdata-encoding-type": "ngff:regions_table", "version": "0.2",
                                       **cells.uns["spatialdata_attrs"]})  # fmt: skip
    return expected


@pytest.mark.parametrize("polygons", [False, True])
def test_spatialdata_table_placed_at_its_shapes(tmp_path: Path, polygons: bool) -> None:
    store = tmp_path / "section.zarr"
    expected = _spatialdata_store(store, polygons=polygons)
    section = read_section(store)
    np.testing.assert_allclose(section.adata.obsm["spatial"], expected)
    np.testing.assert_allclose(section.adata.X.toarray(), expected, rtol=1e-6)  # each row its own cell
    assert section.pixel_size is not None
    assert section.pixel_size.um == 1.0  # global is in µm
    summary = register_file(store, tmp_path / "o.h5ad", neighbors=3, bin_size_mm=0.25)
    assert summary.pixel_size_source == "SpatialData shapes/cells: coordinate system 'global' in micrometer"
    out = ad.read_h5ad(tmp_path / "o.h5ad")
    ij = np.floor(expected / 250.0).astype(int)
    assert out.obs[BIN_COLUMN].astype(str).tolist() == [f"x{i}_y{j}_z0" for i, j in ij]


def test_spatialdata_points_and_units(tmp_path: Path) -> None:
    store = tmp_path / "section.zarr"
    expected = _spatialdata_store(store, unit="unit")  # pixels of unknown size
    assert read_section(store).pixel_size is None
    # the same cells as a points element (Parquet x, y; a dataset directory, as dask writes it)
    shutil.rmtree(store / "shapes")
    points = store / "points" / "cells"
    _group(points, {"encoding-type": "ngff:points", "axes": ["x", "y"], "coordinateTransformations": [],
                    "spatialdata_attrs": {"version": "0.1", "instance_key": "cell_id"}})  # fmt: skip
    table = ad.read_zarr(store / "tables" / "table")
    frame = pd.DataFrame(
        {"x": expected[::-1, 0], "y": expected[::-1, 1], "cell_id": table.obs["cell_id"].to_numpy()[::-1]}
    )
    (points / "points.parquet").mkdir()
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False), points / "points.parquet" / "part.0.parquet"
    )
    section = read_section(store)
    np.testing.assert_allclose(section.adata.obsm["spatial"], expected)
    assert section.pixel_size is None
    identity_mm = _transform({"type": "identity"}, "millimeter")
    zarr.open_group(points, mode="a").attrs["coordinateTransformations"] = identity_mm
    in_mm = read_section(store).pixel_size
    assert in_mm is not None
    assert in_mm.um == 1000.0


def test_spatialdata_errors(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from atlasprep.cli import app

    store = tmp_path / "section.zarr"
    _spatialdata_store(store)
    shutil.copytree(store / "tables" / "table", store / "tables" / "other")
    with pytest.raises(UsageError, match=r"^spatial_table = None: .* holds tables other, table; name one"):
        read_section(store)
    assert read_section(store, table="other").adata.n_obs == 40
    result = CliRunner().invoke(
        app,
        [
            "align",
            "ccf",
            "--spatial",
            str(store),
            "--table",
            "nope",
            "--bin-size",
            "1",
            "--out",
            str(tmp_path / "o.h5ad"),
        ],
    )
    assert_clean_error(result, contains="--table")
    shutil.rmtree(store / "tables" / "other")
    shutil.rmtree(store / "shapes")
    with pytest.raises(InputFormatError, match="annotates 'cells', neither shapes"):
        read_section(store)


def test_registered_section_written_as_spatialdata_and_read_back(tmp_path: Path) -> None:
    out = tmp_path / "placed.zarr"
    register_file(
        shared_file(VISIUM),
        out,
        registration=shared_file(f"{HEART}/female-left-ventricle.json"),
        reference_organ=shared_file("hra/VH_F_Heart.glb"),
        crosswalk=shared_file("hra/ASCT-B_3D_Models_Mapping.csv"),
        bin_size_mm=1.0,
        spatialdata_out=True,
    )
    root = json.loads((out / "zarr.json").read_text())["attributes"]
    assert root["spatialdata_attrs"]["version"] == "0.2"
    circles = pq.read_table(out / "shapes" / "cells" / "shapes.parquet")
    assert b"geo" in circles.schema.metadata
    np.testing.assert_allclose(circles.column("radius").to_numpy(), 27.5 / _pixel_size())  # 55 µm spots
    ccf = pq.read_table(out / "points" / "ccf" / "points.parquet").to_pandas()
    back = read_section(out)  # the table, at its circles, in the µm coordinate system
    assert back.pixel_size is not None
    assert back.pixel_size.um == 1.0
    pixels = ad.read_zarr(out / "tables" / "table").obsm["spatial"]
    np.testing.assert_allclose(back.adata.obsm["spatial"], pixels * _pixel_size())
    np.testing.assert_allclose(ccf[["x", "y", "z"]].to_numpy(), back.adata.obsm[CCF_KEY])
    again = register_file(out, tmp_path / "again.h5ad", neighbors=6)  # µm in, µm out
    assert again.pixel_size_um == 1.0
    graph = ad.read_h5ad(tmp_path / "again.h5ad").obsp["spatial_distances"].tocoo()
    np.testing.assert_allclose(graph.data, _lattice_um(back.adata.obs, graph.row, graph.col), rtol=0.01)
    # the chain continues through the SpatialData store's table
    from atlasprep.provenance import read_steps

    assert [s["command"] for s in read_steps(out)] == ["align ccf"]
    assert [s["command"] for s in read_steps(tmp_path / "again.h5ad")] == ["align ccf", "align ccf"]
    with pytest.raises(UsageError, match=r"^spatialdata_out: a SpatialData store is a \.zarr directory"):
        register_file(shared_file(VISIUM), tmp_path / "x.h5ad", bin_size_mm=1.0, spatialdata_out=True)


def test_a_folder_holding_sections_names_them(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from atlasprep.cli import app

    folder = tmp_path / "starmap"
    folder.mkdir()
    with pytest.raises(UsageError, match=r"Space Ranger folder .*SpatialData \.zarr store$"):
        read_section(folder)  # nothing inside to name
    for name in ("b.loom", "a.h5ad", "notes.txt"):
        (folder / name).write_bytes(b"")
    with pytest.raises(UsageError, match=r"the folder holds a\.h5ad, b\.loom: pass one of them"):
        read_section(folder)
    out = tmp_path / "o.h5ad"
    result = CliRunner().invoke(
        app, ["align", "ccf", "--spatial", str(folder), "--neighbors", "3", "--out", str(out)]
    )
    assert_clean_error(result, contains=f"(--spatial {folder / 'a.h5ad'})")
    assert not out.exists()
