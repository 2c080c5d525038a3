"""`align ccf`: inputs it must refuse in one line (non-finite or overflowing numbers, damaged
Visium scale factors, incomplete or absurd RUI placements), the --organ-node option, the help
text, the squidpy kNN layout and RUI files with a byte-order mark."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import assert_clean_error, shared_file
from typer.testing import CliRunner

from atlasprep.align.ccf import register_file, register_section, spatial_bins, spatial_neighbors
from atlasprep.align.rui import read_registration
from atlasprep.cli import app
from atlasprep.errors import InputFormatError, UsageError

SEPTUM = "hra/hca-heart-teichmann-2020/registrations/female-septum.json"


def _section(path: Path, *, uns: dict[str, Any] | None = None) -> Path:
    xy = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [50.0, 50.0]])
    ad.AnnData(X=np.ones((4, 1), np.float32), obsm={"spatial": xy}, uns=uns or {}).write_h5ad(path)
    return path


def _organ_args() -> dict[str, Path]:
    return {
        "reference_organ": shared_file("hra/VH_F_Heart.glb"),
        "crosswalk": shared_file("hra/ASCT-B_3D_Models_Mapping.csv"),
    }


# -- 1. non-finite and overflowing numbers ----------------------------------------------------


@pytest.mark.filterwarnings("error")  # a numpy RuntimeWarning is a failure: none may reach stderr
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"pixel_size_um": float("inf"), "neighbors": 2},
            r"^pixel_size_um = inf: must be a finite number > 0",
        ),
        ({"pixel_size_um": float("-inf"), "bin_size_mm": 1.0}, r"^pixel_size_um = -inf: must be a finite"),
        ({"bin_size_mm": float("inf")}, r"^bin_size_mm = inf: must be a finite number > 0"),
        ({"bin_size_mm": 1.0, "section_z_mm": float("nan")}, r"^section_z_mm = nan: must be a finite number"),
        ({"bin_size_mm": 1.0, "section_z_mm": float("inf")}, r"^section_z_mm = inf: must be a finite number"),
        ({"pixel_size_um": 1e308, "bin_size_mm": 1.0}, r"^pixel_size_um = 1e\+308 \(given\): .* overflows"),
        (
            {"bin_size_mm": 1e-320, "section_z_mm": 10.0},  # coordinates over it overflow
            r"^bin_size_mm = 1e-320: gives more than 2\*\*20 bins",
        ),
    ],
)
def test_non_finite_and_overflowing_options_are_refused(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    section = _section(tmp_path / "s.h5ad")
    with pytest.raises(UsageError, match=message):
        register_file(section, tmp_path / "o.h5ad", **options)
    assert not (tmp_path / "o.h5ad").exists()
    registration = {"registration": shared_file(SEPTUM), **_organ_args()}
    with pytest.raises(UsageError, match=message.split(":")[0]):  # placed or not
        register_file(section, tmp_path / "o.h5ad", **registration, **{"pixel_size_um": 1.0, **options})


@pytest.mark.filterwarnings("error")
def test_bins_of_huge_coordinates_or_tiny_size_overflow_cleanly() -> None:
    with pytest.raises(UsageError, match=r"^bin_size_mm = 1e-305: gives more than"):
        spatial_bins(np.array([[1e6, 0.0, 0.0]]), 1e-305)
    with pytest.raises(UsageError, match=r"^bin_size_mm = nan: must be a finite number > 0 mm"):
        spatial_bins(np.zeros((1, 3)), float("nan"))


def test_cli_pixel_size_inf_is_one_error_line(tmp_path: Path) -> None:
    section = _section(tmp_path / "s.h5ad")
    hra = shared_file("hra/VH_F_Heart.glb").parent
    result = CliRunner().invoke(
        app,
        ["align", "ccf", "--spatial", str(section), "--registration", str(shared_file(SEPTUM)),
         "--reference-organ", str(hra / "VH_F_Heart.glb"),
         "--crosswalk", str(hra / "ASCT-B_3D_Models_Mapping.csv"),
         "--pixel-size", "inf", "--out", str(tmp_path / "o.h5ad")],
    )  # fmt: skip
    line = assert_clean_error(result, codes=(2,))
    assert line == "Error: --pixel-size inf: must be a finite number > 0 (µm per pixel)"
    assert result.stderr.strip() == line
    assert not (tmp_path / "o.h5ad").exists()


# -- 2. Visium scale factors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factors", "field"),
    [
        ({"spot_diameter_fullres": 0.0}, "spot_diameter_fullres = 0.0"),
        ({"spot_diameter_fullres": -89.43}, "spot_diameter_fullres = -89.43"),
        ({"spot_diameter_fullres": float("nan")}, "spot_diameter_fullres = nan"),
        ({"spot_diameter_fullres": 1e-320}, "spot_diameter_fullres = 1e-320"),  # 65 µm over it is inf
        ({"spot_diameter_fullres": 89.43, "microns_per_pixel": 0}, "microns_per_pixel = 0"),
    ],
)
def test_damaged_scale_factors_are_refused_naming_file_and_field(
    tmp_path: Path, factors: dict[str, float], field: str
) -> None:
    section = _section(tmp_path / "s.h5ad", uns={"spatial": {"lib": {"scalefactors": factors}}})
    with pytest.raises(InputFormatError) as info:
        register_file(section, tmp_path / "o.h5ad", bin_size_mm=0.5)
    message = str(info.value)
    assert message.startswith(f"{section}: {field}: must be a finite number > 0")
    assert "\n" not in message
    # the µm per pixel given on the command line does not need the file's
    summary = register_file(section, tmp_path / "o.h5ad", bin_size_mm=0.5, pixel_size_um=2.0)
    assert (summary.pixel_size_um, summary.pixel_size_source) == (2.0, "given")


def test_missing_scale_factors_still_fall_back(tmp_path: Path) -> None:
    section = _section(
        tmp_path / "s.h5ad", uns={"spatial": {"lib": {"scalefactors": {"tissue_hires_scalef": 0.15}}}}
    )
    summary = register_file(section, tmp_path / "o.h5ad", bin_size_mm=0.5)
    assert (summary.pixel_size_um, summary.pixel_size_source) == (1.0, "default: the file states none")
    stated = _section(
        tmp_path / "t.h5ad", uns={"spatial": {"lib": {"scalefactors": {"spot_diameter_fullres": 130.0}}}}
    )
    assert register_file(stated, tmp_path / "p.h5ad", bin_size_mm=0.5).pixel_size_um == 0.5


def test_visium_folder_with_a_zero_spot_diameter(tmp_path: Path) -> None:
    pytest.importorskip("scanpy")
    folder = tmp_path / "visium"
    shutil.copytree(shared_file("spatial/visium_1.0.0"), folder)
    factors = folder / "spatial" / "scalefactors_json.json"
    factors.write_text(json.dumps({**json.loads(factors.read_text()), "spot_diameter_fullres": 0}))
    result = CliRunner().invoke(
        app,
        ["align", "ccf", "--spatial", str(folder), "--bin-size", "0.5", "--out", str(tmp_path / "o.h5ad")],
    )
    line = assert_clean_error(result, codes=(2,))
    assert line.startswith(f"Error: {factors}: spot_diameter_fullres = 0: must be a finite number > 0")
    assert line.endswith("or pass --pixel-size to give the µm per pixel")


# -- 3. RUI placement fields ------------------------------------------------------------------


def _edited(tmp_path: Path, edit: Any) -> Path:
    entity = json.loads(shared_file(SEPTUM).read_text())
    edit(entity["placement"])
    path = tmp_path / "block.json"
    path.write_text(json.dumps(entity))
    return path


@pytest.mark.parametrize("stem", ["rotation", "translation", "scaling"])
@pytest.mark.parametrize("axis", ["x", "y", "z"])
def test_a_missing_placement_component_is_refused_like_null(tmp_path: Path, axis: str, stem: str) -> None:
    key = f"{axis}_{stem}"
    absent = _edited(tmp_path, lambda p: p.pop(key))
    with pytest.raises(InputFormatError, match=rf": '{key}' is missing; a RUI registration needs it$"):
        read_registration(absent)
    null = _edited(tmp_path, lambda p: p.update({key: None}))
    with pytest.raises(InputFormatError, match=rf": '{key}' is missing; a RUI registration needs it$"):
        read_registration(null)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"y_scaling": -1}, r"x/y/z_scaling \(1.0, -1.0, 1.0\) must all be > 0 \(a ratio: .* mirrors it"),
        ({"y_scaling": 0}, r"x/y/z_scaling \(1.0, 0.0, 1.0\) must all be > 0"),
        (
            {"x_scaling": 1e308, "y_scaling": 1e308},
            r"the placement puts the block up to inf mm .* within 1e\+06 mm",
        ),
        ({"x_translation": 1e308}, r"the placement puts the block up to 1e\+308 mm .* within 1e\+06 mm"),
        ({"x_rotation": float("inf")}, r"'x_rotation' must be finite, got inf"),
        ({"x_translation": float("nan")}, r"'x_translation' must be finite, got nan"),
        (
            {"x_rotation": 1e307, "rotation_units": "radian"},
            r"x/y/z_rotation \(inf, .*\) overflow; they must be finite",
        ),
    ],
)
def test_mirrored_and_absurd_placements_are_refused(
    tmp_path: Path, edit: dict[str, Any], message: str
) -> None:
    path = _edited(tmp_path, lambda p: p.update(edit))
    with pytest.raises(InputFormatError, match=message) as info:
        read_registration(path)
    assert "\n" not in str(info.value)


def test_a_large_but_sane_placement_still_reads(tmp_path: Path) -> None:
    block = read_registration(_edited(tmp_path, lambda p: p.update(x_translation=900_000.0)))
    assert block.placement.translation_mm[0] == 900_000.0


# -- 7. byte-order mark -----------------------------------------------------------------------


def test_a_registration_with_a_byte_order_mark_reads(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_text(shared_file(SEPTUM).read_text(), encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert read_registration(path) == replace(read_registration(shared_file(SEPTUM)), source=str(path))


# -- 4. --organ-node, 5. the help ---------------------------------------------------------------


def test_cli_organ_node_names_the_organ_of_an_oddly_named_glb(tmp_path: Path) -> None:
    glb = tmp_path / "VH_F_Heart (1).glb"  # a browser's second download of the same file
    glb.symlink_to(shared_file("hra/VH_F_Heart.glb"))
    hra = shared_file("hra/VH_F_Heart.glb").parent
    section = tmp_path / "s.h5ad"
    _section(section)
    args = ["align", "ccf", "--spatial", str(section), "--registration", str(shared_file(SEPTUM)),
            "--reference-organ", str(glb), "--crosswalk", str(hra / "ASCT-B_3D_Models_Mapping.csv"),
            "--pixel-size", "1", "--json", "--out", str(tmp_path / "o.h5ad")]  # fmt: skip
    runner = CliRunner()
    line = assert_clean_error(runner.invoke(app, args), codes=(2,))
    assert line.endswith("(roots: VHF_heart, VHF_vasculature); pass --organ-node to name it")
    named = runner.invoke(app, [*args, "--organ-node", "VHF_heart"])
    assert named.exit_code == 0, named.stderr
    assert json.loads(named.stdout)["cells_in_structures"] == 4
    placed = ad.read_h5ad(tmp_path / "o.h5ad")
    assert placed.uns["ccf"]["organ_node"] == "VHF_heart"
    wrong = runner.invoke(app, [*args, "--organ-node", "VHF_hart", "--overwrite"])
    assert "has no node 'VHF_hart'; its roots are VHF_heart, VHF_vasculature" in assert_clean_error(wrong)


def test_cli_help_states_65_um_the_spatial_extra_and_organ_node() -> None:
    result = CliRunner().invoke(app, ["align", "ccf", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "Visium: 65 µm / spot_diameter_fullres" in text
    assert "55 µm" not in text
    assert "pip install 'atlasprep[spatial]'" in text
    assert "--organ-node" in text
    assert "[default: as the file states, else 1]" in text


# -- 6. the neighbour graph: squidpy's generic KNN layout ---------------------------------------


def _squidpy_knn(coords: np.ndarray, k: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """What squidpy's KNNBuilder (coord_type="generic", no transform, no diagonal) stores, built
    the way it builds it: sklearn's kneighbors() without X (a point is not its own neighbour),
    a 1.0 (float32) and the distance at each (row, neighbour), explicit zeros dropped."""
    neighbors = pytest.importorskip("sklearn.neighbors")
    dist, col = neighbors.NearestNeighbors(n_neighbors=k).fit(coords).kneighbors()
    rows = np.repeat(np.arange(len(coords)), k)
    shape = (len(coords), len(coords))
    adj = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, col.ravel())), shape=shape)
    dst = sp.csr_matrix((dist.ravel(), (rows, col.ravel())), shape=shape)
    adj.eliminate_zeros()
    dst.eliminate_zeros()
    return adj, dst


def _assert_same_graph(ours: tuple[sp.csr_matrix, sp.csr_matrix], theirs: tuple[Any, Any]) -> None:
    for mine, other in zip(ours, theirs, strict=True):
        other = sp.csr_matrix(other)
        other.sort_indices()
        assert isinstance(mine, sp.csr_matrix)
        assert mine.dtype == other.dtype
        np.testing.assert_array_equal(mine.indptr, other.indptr)
        np.testing.assert_array_equal(mine.indices, other.indices)
        np.testing.assert_allclose(mine.data, other.data, rtol=1e-12)


def test_neighbours_follow_squidpys_generic_knn_layout() -> None:
    coords = np.random.default_rng(3).uniform(0, 1000, size=(500, 2))  # no ties among distances
    ours = spatial_neighbors(coords, 6)
    connectivities, distances = ours
    assert set(np.diff(connectivities.indptr)) == set(np.diff(distances.indptr)) == {6}
    np.testing.assert_array_equal(connectivities.indices, distances.indices)  # one sparsity pattern
    assert connectivities.diagonal().sum() == 0
    _assert_same_graph(ours, _squidpy_knn(coords, 6))


def test_neighbours_equal_squidpys_own() -> None:
    squidpy = pytest.importorskip("squidpy")
    coords = np.random.default_rng(5).uniform(0, 1000, size=(300, 2))
    adata = ad.AnnData(
        X=np.zeros((300, 1), np.float32), obs=pd.DataFrame(index=[f"c{i}" for i in range(300)])
    )
    adata.obsm["spatial"] = coords
    squidpy.gr.spatial_neighbors(adata, coord_type="generic", n_neighs=6)
    theirs = (adata.obsp["spatial_connectivities"], adata.obsp["spatial_distances"])
    _assert_same_graph(spatial_neighbors(coords, 6), theirs)
    placed = register_section(adata, neighbors=6, pixel_size_um=1.0)
    _assert_same_graph((placed.obsp["spatial_connectivities"], placed.obsp["spatial_distances"]), theirs)
