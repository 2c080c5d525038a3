"""`align ccf`: RUI registrations, the female v1.0 heart, sections placed in it, neighbours, bins."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import shared_file

from atlasprep.align.ccf import (
    ALL_TERMS_COLUMN,
    BIN_COLUMN,
    CCF_KEY,
    LABEL_COLUMN,
    TERM_COLUMN,
    block_center,
    block_corners,
    placement_matrix,
    register_file,
    register_section,
    spatial_bin_labels,
    spatial_bins,
    spatial_neighbors,
    structures_at,
)
from atlasprep.align.organ import (
    Crosswalk,
    ReferenceOrgan,
    contains_points,
    load_reference_organ,
    read_crosswalk,
    structure_winding_numbers,
    winding_numbers,
)
from atlasprep.align.rui import Placement, Registration, iri_to_curie, read_registration, read_registrations
from atlasprep.errors import InputFormatError, OutputExistsError, UsageError

REGISTRATIONS = "hra/hca-heart-teichmann-2020/registrations"
# The four HCA blocks placed in the female v1.0 heart (#VHFHeart), and the mesh their centre must
# fall in: the apex block sits in the left ventricle's tip, the septum block in the septum.
VHF_BLOCKS = {
    "female-apex": "VHF_left_ventricle",
    "female-left-ventricle": "VHF_left_ventricle",
    "female-right-ventricle": "VHF_right_ventricle",
    "female-septum": "VHF_interventricular_septum",
}


@pytest.fixture(scope="module")
def organ() -> ReferenceOrgan:
    return load_reference_organ(shared_file("hra/VH_F_Heart.glb"))


@pytest.fixture(scope="module")
def crosswalk() -> Crosswalk:
    return read_crosswalk(shared_file("hra/ASCT-B_3D_Models_Mapping.csv"))


def _registration(name: str) -> Registration:
    return read_registration(shared_file(f"{REGISTRATIONS}/{name}.json"))


def _grid_section(path: Path | None = None, *, side: int = 20) -> ad.AnnData:
    """side × side spots 10 px apart; X encodes each spot's position."""
    ij = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(-1, 2)
    X = sp.csr_matrix(np.column_stack([ij + 1, np.ones(len(ij))]).astype(np.float32))
    adata = ad.AnnData(
        X=X,
        obs=pd.DataFrame(index=[f"spot{k}" for k in range(len(ij))]),
        var=pd.DataFrame(index=["row", "col", "one"]),
        obsm={"spatial": ij[:, ::-1] * 10.0},
    )
    if path is not None:
        adata.write_h5ad(path)
    return adata


# -- registrations --------------------------------------------------------------------------


def test_registration_files_and_their_targets() -> None:
    folder = shared_file(REGISTRATIONS)
    singles = {p.stem: read_registration(p) for p in sorted(folder.glob("*.json"))}
    assert len(singles) == 12
    female_v1 = {name for name, r in singles.items() if r.target.endswith("ccf.owl#VHFHeart")}
    assert female_v1 == set(VHF_BLOCKS)
    lv = singles["female-left-ventricle"]
    assert lv.dimensions_mm == (15.0, 14.0, 14.0)
    assert lv.placement.rotation_deg == (16.0, -19.0, 6.0)
    assert lv.placement.translation_mm == (109.944, 50.867, 15.595)
    assert lv.annotation_ids == ("UBERON:0002084",)
    assert "FMA:7264" in singles["female-septum"].annotation_ids

    collection = shared_file("hra/hca-heart-teichmann-2020/rui_locations.jsonld")
    samples = read_registrations(collection)
    targets = pd.Series([r.target.rsplit("#", 1)[1] for r in samples]).value_counts().to_dict()
    assert targets == {"VHMHeart": 42, "VHFHeart": 27, "VHFHeartV1.1": 13}
    assert {r.id for r in samples} == {r.id for r in singles.values()}
    with pytest.raises(UsageError, match="12 different blocks"):
        read_registration(collection)
    picked = read_registration(collection, registration_id="D1$heart%20left%20ventricle_Block")
    assert picked.id == lv.id
    assert picked.sample_id.endswith("#D1$heart%20left%20ventricle_Block")


def test_iri_to_curie() -> None:
    assert iri_to_curie("http://purl.obolibrary.org/obo/UBERON_0002084") == "UBERON:0002084"
    assert iri_to_curie("http://purl.org/sig/ont/fma/fma7264") == "FMA:7264"
    assert iri_to_curie("fma:fma:4715") == "FMA:4715"
    assert iri_to_curie("UBERON:0002080") == "UBERON:0002080"


def test_placement_follows_mathgl_translate_rotate_xyz_scale() -> None:
    # ccf-ui: Matrix4().translate(T).rotateXYZ(R).scale(S), rotateXYZ = rotateX · rotateY · rotateZ,
    # so Z acts first on a block-local point: +x →(Rz 90°) +y →(Rx 90°) +z.
    placement = Placement(
        target="#T", scaling=(2.0, 1.0, 1.0), rotation_deg=(90.0, 0.0, 90.0), rotation_order="XYZ",
        translation_mm=(10.0, 20.0, 30.0),
    )  # fmt: skip
    block = Registration(id="b", dimensions_mm=(4.0, 2.0, 2.0), placement=placement, ccf_annotations=())
    matrix = placement_matrix(block)
    np.testing.assert_allclose(matrix[:3, :3] @ [1.0, 0.0, 0.0], [0.0, 0.0, 2.0], atol=1e-12)
    np.testing.assert_allclose(block_center(block), [10.0, 20.0, 30.0])
    corners = block_corners(block)  # centred box: ±dimension/2 × scaling around the translation
    np.testing.assert_allclose(corners.mean(axis=0), [10.0, 20.0, 30.0], atol=1e-12)
    np.testing.assert_allclose(np.ptp(corners, axis=0), [2.0, 2.0, 8.0], atol=1e-12)
    flipped = replace(block, placement=replace(placement, rotation_order="ZYX"))
    np.testing.assert_allclose(
        placement_matrix(flipped)[:3, :3] @ [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], atol=1e-12
    )


# -- the reference organ --------------------------------------------------------------------


def test_reference_organ_frame_and_crosswalk(organ: ReferenceOrgan, crosswalk: Crosswalk) -> None:
    assert organ.organ_node == "VHF_heart"
    assert len(organ.structures) == 51
    watertight = {s.node for s in organ.structures if s.watertight}
    assert "VHF_left_ventricle" in watertight
    assert "VHF_right_ventricle" not in watertight
    # the organ frame starts at the heart's bounding-box corner, in mm (the GLB is in metres)
    heart = np.vstack([s.bounds for s in organ.structures if s.node in _heart_nodes(organ)])
    np.testing.assert_allclose(heart.min(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(organ.size_mm, heart.max(axis=0), rtol=1e-9)
    assert 100 < organ.size_mm.max() < 200
    mapped = [crosswalk.get(s.node) for s in organ.structures]
    assert all(e is not None and e.ontology_id for e in mapped)
    lv = crosswalk.get("VHF_left_ventricle")
    assert lv is not None
    assert (lv.ontology_id, lv.label, lv.organ) == ("UBERON:0002084", "heart left ventricle", "#VHFHeart")
    vein = crosswalk.get("VHF_oblique_vein_of_left_atrium")
    assert vein is not None
    assert vein.ontology_id == "FMA:4715"


def _heart_nodes(organ: ReferenceOrgan) -> set[str]:
    def under_heart(node: str) -> bool:
        while node:
            if node == "VHF_heart":
                return True
            node = organ.parents.get(node, "")
        return False

    return {s.node for s in organ.structures if under_heart(s.node)}


@pytest.mark.parametrize(
    "node",
    [
        "VHF_left_ventricle",  # closed
        "VHF_right_ventricle",  # 98 boundary edges
        "VHF_left_cardiac_atrium",  # 297
        "VHF_papillary_muscle_of_heart_med",  # open and wound inside out
    ],
)
def test_fast_winding_numbers_equal_the_brute_force_sum(organ: ReferenceOrgan, node: str) -> None:
    structure = organ.structure(node)
    assert structure.watertight == (len(structure.cap) == 0)
    lo, hi = structure.bounds
    points = np.random.default_rng(7).uniform(lo - 1.0, hi + 1.0, size=(150, 3))
    expected = winding_numbers(np.asarray(structure.mesh.triangles), points)
    np.testing.assert_allclose(structure_winding_numbers(structure, points), expected, atol=1e-9)
    inside = contains_points(structure, points)
    assert 0 < inside.sum() < len(points)
    np.testing.assert_array_equal(inside, np.abs(expected) >= 0.5)


@pytest.mark.parametrize(("block", "node"), sorted(VHF_BLOCKS.items()))
def test_block_centre_lies_in_its_annotated_structures(
    organ: ReferenceOrgan, crosswalk: Crosswalk, block: str, node: str
) -> None:
    registration = _registration(block)
    (found,) = structures_at(block_center(registration)[None], organ)
    assert node in found
    terms = {entry.ontology_id for entry in (crosswalk.get(n) for n in found) if entry}
    assert terms <= set(registration.annotation_ids)


# -- sections -------------------------------------------------------------------------------


def test_section_in_the_septum_block_file_in_file_out(tmp_path: Path, organ: ReferenceOrgan) -> None:
    section = tmp_path / "section.h5ad"
    _grid_section(section)  # 400 spots 10 px apart: 11.4 mm across at 60 µm per pixel
    out = tmp_path / "placed.h5ad"
    summary = register_file(
        section,
        out,
        registration=shared_file(f"{REGISTRATIONS}/female-septum.json"),
        reference_organ=shared_file("hra/VH_F_Heart.glb"),
        crosswalk=shared_file("hra/ASCT-B_3D_Models_Mapping.csv"),
        pixel_size_um=60.0,
        neighbors=4,
        bin_size_mm=2.0,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["placed.h5ad", "section.h5ad"]
    placed = ad.read_h5ad(out)
    septum = _registration("female-septum")
    assert summary.n_obs == placed.n_obs == 400
    assert summary.structures == {"UBERON:0002094": 400}
    assert summary.labels == {"UBERON:0002094": "interventricular septum"}  # named, as the crosswalk names it
    assert summary.n_in_structures == 400
    # every cell in the septum, which the left ventricle mesh overlaps; the septum is more specific
    assert (placed.obs[TERM_COLUMN] == "UBERON:0002094").all()
    assert (placed.obs[LABEL_COLUMN] == "interventricular septum").all()
    assert (placed.obs[ALL_TERMS_COLUMN] == "UBERON:0002094;UBERON:0002084").all()
    assert set(placed.obs[ALL_TERMS_COLUMN].iloc[0].split(";")) <= set(septum.annotation_ids)
    # the section's centre is the block's centre, its plane the block's mid-plane
    ccf = placed.obsm[CCF_KEY]
    np.testing.assert_allclose((ccf.min(axis=0) + ccf.max(axis=0)) / 2, block_center(septum), atol=1e-9)
    spacing = np.linalg.norm(ccf[1] - ccf[0])
    assert spacing == pytest.approx(0.6)  # 10 px × 60 µm; rigid placement keeps distances
    uns = placed.uns[CCF_KEY]
    assert uns["target"] == "http://purl.org/ccf/latest/ccf.owl#VHFHeart"
    assert uns["organ_iri"] == "#VHFHeart"
    assert list(uns["ccf_annotations"]) == list(septum.annotation_ids)
    np.testing.assert_allclose(uns["block_to_organ"], placement_matrix(septum))
    assert uns["section_z_mm"] == pytest.approx(16.5)
    distances = placed.obsp["spatial_distances"]
    assert np.all(np.diff(distances.indptr) == 4)
    np.testing.assert_allclose(distances.data.reshape(-1, 4).min(axis=1), 600.0)  # µm: 10 px away
    assert placed.obs[BIN_COLUMN].str.match(r"^x-?\d+_y-?\d+_z-?\d+$").all()
    assert summary.n_bins == placed.obs[BIN_COLUMN].nunique() > 1
    with pytest.raises(OutputExistsError, match="set overwrite"):
        register_file(section, out, bin_size_mm=1.0)


@pytest.mark.parametrize(
    ("block", "term"),
    [("female-left-ventricle", "UBERON:0002084"), ("female-right-ventricle", "UBERON:0002080")],
)
def test_sections_in_the_ventricle_blocks(
    organ: ReferenceOrgan, crosswalk: Crosswalk, block: str, term: str
) -> None:
    placed = register_section(_grid_section(), _registration(block), organ, crosswalk, pixel_size_um=60.0)
    assert (placed.obs[TERM_COLUMN] == term).all()


@pytest.mark.parametrize(
    ("block", "target"), [("female-left-atrium", "#VHFHeartV1.1"), ("male-apex", "#VHMHeart")]
)
def test_registration_for_another_model_is_refused(tmp_path: Path, block: str, target: str) -> None:
    section = tmp_path / "section.h5ad"
    _grid_section(section)
    with pytest.raises(UsageError) as info:
        register_file(
            section,
            tmp_path / "out.h5ad",
            registration=shared_file(f"{REGISTRATIONS}/{block}.json"),
            reference_organ=shared_file("hra/VH_F_Heart.glb"),
            crosswalk=shared_file("hra/ASCT-B_3D_Models_Mapping.csv"),
            pixel_size_um=10.0,
        )
    message = str(info.value)
    assert f"ccf.owl{target}," in message
    assert "VH_F_Heart.glb is #VHFHeart" in message
    assert "\n" not in message
    assert not (tmp_path / "out.h5ad").exists()


def test_starmap_neighbours_and_bins_on_its_own_coordinates(tmp_path: Path) -> None:
    loom = shared_file("spatial/starmap/mpfc-starmap.loom")
    out = tmp_path / "starmap.h5ad"
    summary = register_file(loom, out, neighbors=6, bin_size_mm=0.5, section_z_mm=0.25)
    placed = ad.read_h5ad(out)
    assert placed.shape == (3704, 158)
    assert CCF_KEY not in placed.obsm
    xy = placed.obsm["spatial"]
    assert xy.shape == (3704, 2)
    assert placed.obs["Clusters"].nunique() == 16
    connectivities, distances = placed.obsp["spatial_connectivities"], placed.obsp["spatial_distances"]
    assert isinstance(distances, sp.csr_matrix)
    assert np.all(np.diff(distances.indptr) == 6)
    assert np.all(np.diff(connectivities.indptr) == 6)  # squidpy's layout: the same K per row in both
    np.testing.assert_array_equal(connectivities.indices, distances.indices)
    some = np.arange(0, 3704, 37)  # brute force on a subset
    full = np.linalg.norm(xy[some, None, :] - xy[None, :, :], axis=-1)
    full[np.arange(len(some)), some] = np.inf
    np.testing.assert_allclose(
        np.sort(distances[some].toarray(), axis=1)[:, -6:], np.sort(full, axis=1)[:, :6]
    )
    index = np.floor(xy / 500.0).astype(int)  # µm → 0.5 mm bins; z = 0.25 mm is bin 0
    labels = [f"x{x}_y{y}_z0" for x, y in index]
    assert placed.obs[BIN_COLUMN].tolist() == labels
    assert placed.uns["spatial_bins"]["frame"] == "section"
    assert summary.n_bins == len(set(labels))


def test_spatial_bin_ids_are_stable() -> None:
    points = np.array([[-0.1, 0.0, 2.9], [0.4, 0.2, 3.2], [-0.6, 0.9, 3.1], [0.0, 0.0, 3.0]])
    ids = spatial_bins(points, 1.0)
    assert ids.dtype == np.int64
    assert ids[1] == ids[3] != ids[0]
    np.testing.assert_array_equal(spatial_bins(points[::-1], 1.0), ids[::-1])
    assert list(spatial_bin_labels(ids)) == ["x-1_y0_z2", "x0_y0_z3", "x-1_y0_z3", "x0_y0_z3"]
    with pytest.raises(UsageError, match=r"^bin_size_mm = 0\.0: "):
        spatial_bins(points, 0.0)


def test_neighbours_with_duplicate_points() -> None:
    points = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    connectivities, distances = spatial_neighbors(points, 1)
    # each point's one nearest other; the two at (0, 0) each other's, at distance 0, which
    # squidpy's layout connects but does not store as a distance
    dense = connectivities.toarray()
    np.testing.assert_array_equal(dense[[0, 1, 3]], [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]])
    assert dense[2, :2].sum() == 1.0  # one of the two at (0, 0), equally near
    assert distances.nnz == 2
    assert distances[2, :2].sum() == 1.0
    assert distances[3, 2] == 4.0
    assert connectivities[2, 3] == 0.0  # directed: 3's neighbour is 2, not the other way round
    with pytest.raises(UsageError, match=r"^neighbors = 4: "):
        spatial_neighbors(points, 4)


# -- errors a user can fix ------------------------------------------------------------------


def test_bad_sections_and_options(organ: ReferenceOrgan, crosswalk: Crosswalk) -> None:
    lv = _registration("female-left-ventricle")
    with pytest.raises(InputFormatError, match="check pixel_size_um"):  # 190 px × 100 µm > the 15 mm face
        register_section(_grid_section(), lv, organ, crosswalk, pixel_size_um=100.0)
    with pytest.raises(UsageError, match=r"^section_z_mm = 20: lies outside the block"):
        register_section(_grid_section(), lv, organ, crosswalk, pixel_size_um=10.0, section_z_mm=20.0)
    with pytest.raises(UsageError, match=r"^registration needs organ and crosswalk"):
        register_section(_grid_section(), lv, organ, None)
    no_xy = _grid_section()
    del no_xy.obsm["spatial"]
    with pytest.raises(InputFormatError, match=r"no obsm\['spatial'\]"):
        register_section(no_xy, bin_size_mm=1.0)
    with pytest.raises(UsageError, match=r"^pixel_size_um = 0\.0: must be a finite number > 0"):
        register_section(_grid_section(), pixel_size_um=0.0, bin_size_mm=1.0)


def test_bad_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(InputFormatError, match="not JSON"):
        read_registration(broken)
    no_placement = tmp_path / "block.json"
    no_placement.write_text(
        json.dumps({"@type": "SpatialEntity", "x_dimension": 1, "placement": {"target": "#X"}})
    )
    with pytest.raises(InputFormatError, match="'y_dimension' is missing"):
        read_registration(no_placement)
    table = tmp_path / "crosswalk.csv"
    table.write_text("a,b\n1,2\n")
    with pytest.raises(InputFormatError, match="node_name"):
        read_crosswalk(table)
    section = tmp_path / "s.h5ad"
    _grid_section(section)
    with pytest.raises(UsageError, match="go together"):
        register_file(section, tmp_path / "o.h5ad", registration=no_placement)
    with pytest.raises(UsageError, match="nothing to do"):
        register_file(section, tmp_path / "o.h5ad")


def test_cli_align_ccf_on_starmap_and_a_wrong_target(tmp_path):
    import json

    from typer.testing import CliRunner

    from atlasprep.cli import app

    loom = shared_file("spatial/starmap/mpfc-starmap.loom")
    hra = shared_file("hra/VH_F_Heart.glb").parent
    runner = CliRunner()
    r = runner.invoke(
        app,
        ["align", "ccf", "--spatial", str(loom), "--neighbors", "6", "--bin-size", "0.5", "--json",
         "--out", str(tmp_path / "starmap.h5ad")],
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["n_cells"] == 3704
    assert summary["neighbors"] == 6
    assert summary["n_bins"] > 1
    wrong = runner.invoke(
        app,
        ["align", "ccf", "--spatial", str(loom), "--registration",
         str(hra / "hca-heart-teichmann-2020" / "registrations" / "male-apex.json"),
         "--reference-organ", str(hra / "VH_F_Heart.glb"),
         "--crosswalk", str(hra / "ASCT-B_3D_Models_Mapping.csv"),
         "--out", str(tmp_path / "x.h5ad")],
    )  # fmt: skip
    assert wrong.exit_code == 2
    assert wrong.stderr.startswith("Error:")
    assert "VHMHeart" in wrong.stderr
    assert not (tmp_path / "x.h5ad").exists()


def test_a_section_key_keeps_overlaid_sections_apart_in_the_graph(tmp_path: Path) -> None:
    """STARmap's three BatchIDs share one coordinate frame: without a section key most edges join
    two batches; with it none does, and each batch's graph is the one it has alone."""
    loom = shared_file("spatial/starmap/mpfc-starmap.loom")
    mixed = register_file(loom, tmp_path / "mixed.h5ad", neighbors=6)
    apart = register_file(loom, tmp_path / "apart.h5ad", neighbors=6, section_key="BatchID")
    assert mixed.n_obs == apart.n_obs
    for name, crossing in (("mixed", True), ("apart", False)):
        placed = ad.read_h5ad(tmp_path / f"{name}.h5ad")
        batch = placed.obs["BatchID"].astype(str).to_numpy()
        graph = placed.obsp["spatial_connectivities"].tocoo()
        assert bool((batch[graph.row] != batch[graph.col]).any()) == crossing
        assert np.all(np.diff(placed.obsp["spatial_connectivities"].indptr) == 6)
    placed = ad.read_h5ad(tmp_path / "apart.h5ad")
    assert placed.uns["spatial_neighbors"]["params"]["library_key"] == "BatchID"
    first = np.flatnonzero(
        placed.obs["BatchID"].astype(str).to_numpy() == placed.obs["BatchID"].astype(str).iloc[0]
    )
    alone, _ = spatial_neighbors(placed.obsm["spatial"][first].astype(np.float64), 6)
    sub = placed.obsp["spatial_connectivities"][first][:, first]
    assert (sub != alone).nnz == 0
    with pytest.raises(UsageError, match="section_key = 'BatchID': it keeps"):
        register_file(loom, tmp_path / "x.h5ad", bin_size_mm=1.0, section_key="BatchID")
    with pytest.raises(UsageError, match="section_key = 'nope': obs has no such column"):
        register_file(loom, tmp_path / "y.h5ad", neighbors=6, section_key="nope")


def test_parts_of_a_section_placed_with_its_centre_land_where_the_whole_does(tmp_path: Path) -> None:
    whole = _grid_section(tmp_path / "whole.h5ad")
    left = whole[whole.obsm["spatial"][:, 0] < 95].copy()  # the cells with x < 95 px: half the grid
    left.write_h5ad(tmp_path / "left.h5ad")
    placing = {
        "registration": shared_file(f"{REGISTRATIONS}/female-septum.json"),
        "reference_organ": shared_file("hra/VH_F_Heart.glb"),
        "crosswalk": shared_file("hra/ASCT-B_3D_Models_Mapping.csv"),
        "pixel_size_um": 60.0,
        "bin_size_mm": 2.0,
    }
    full = register_file(tmp_path / "whole.h5ad", tmp_path / "w.h5ad", **placing)
    assert full.section_center_px == (95.0, 95.0)  # the centre of the whole's bounding box
    register_file(tmp_path / "left.h5ad", tmp_path / "l_default.h5ad", **placing)
    register_file(tmp_path / "left.h5ad", tmp_path / "l.h5ad", section_center_px=(95.0, 95.0), **placing)
    w, default, given = (ad.read_h5ad(tmp_path / n) for n in ("w.h5ad", "l_default.h5ad", "l.h5ad"))
    rows = [list(w.obs_names).index(name) for name in given.obs_names]
    np.testing.assert_allclose(given.obsm[CCF_KEY], w.obsm[CCF_KEY][rows], atol=1e-9)
    assert given.obs[BIN_COLUMN].tolist() == w.obs[BIN_COLUMN].iloc[rows].tolist()
    assert not np.allclose(default.obsm[CCF_KEY], w.obsm[CCF_KEY][rows])  # its own box: moved
    np.testing.assert_array_equal(given.uns[CCF_KEY]["section_center_px"], [95.0, 95.0])
    with pytest.raises(UsageError, match="set registration too"):
        register_file(tmp_path / "left.h5ad", tmp_path / "x.h5ad", neighbors=2, section_center_px=(1.0, 1.0))
    from typer.testing import CliRunner

    from atlasprep.cli import app

    args = ["align", "ccf", "--spatial", str(tmp_path / "left.h5ad"), "--bin-size", "1"]
    result = CliRunner().invoke(app, [*args, "--section-center", "1,x", "--out", str(tmp_path / "y.h5ad")])
    assert result.exit_code == 2
    assert "--section-center '1,x': give two numbers" in result.output
