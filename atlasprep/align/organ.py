"""Reference organs of the HRA Common Coordinate Framework: a GLB's meshes in the organ's frame,
and the crosswalk that names them.

The organ frame (where RUI block translations live) is the one the HRA builds for each
reference organ (hubmapconsortium/ccf-ui, ccf-database ``process-spatial-entities.ts`` and
``process-scene-nodes.ts``): the GLB scene is scaled from metres to millimetres and shifted by
minus the lower corner of the organ node's bounding box, so the organ's box starts at
(0, 0, 0) mm. That box is the union, over the organ node's meshes, of each mesh's local
(accessor) min/max corners carried through the node's world matrix — computed here the same
way. Which node is the organ: the one named like the file (``VH_F_Heart.glb`` → ``VHF_heart``,
ignoring case and punctuation), else the only root, else the caller says (``organ_node``).

Every mesh node of the file becomes a :class:`Structure` (its node transforms applied,
converted to mm, in the organ frame), the great vessels and coronary vessels of
``VH_F_Heart.glb`` included — they sit in the same frame.

Containment (:func:`contains_points`) has to work on meshes that are not closed: of the 51
meshes of ``VH_F_Heart.glb`` only five are watertight (left ventricle, right atrium,
interventricular septum, two papillary muscles); the right ventricle has 98 boundary edges,
the left atrium 297, the valves and vessels are open at their ends, three papillary muscles
are wound inside out. (The HRA's collision service, hubmapconsortium/hra-tissue-block-annotation,
tests points with CGAL only in closed meshes and reports the others as -1, unknown.) So a point
is inside when its generalised winding number ``|w| ≥ 0.5`` (Jacobson, Kavan & Sorkine-Hornung
2013, "Robust inside-outside segmentation using generalized winding numbers"): ±1 inside a
closed mesh of either orientation, 0 outside, and a graceful in-between at holes. It is
computed exactly and fast by closing the mesh with a cap — a fan from the centroid of its
boundary over the boundary edges, reversed (:func:`closing_cap`): ``w(mesh) = w(mesh + cap) -
w(cap)``. ``mesh + cap`` is closed, so its winding number is the signed count of the triangles
a ray crosses (median over rays along x, y and z, which absorbs rays that graze an edge),
found through a 2-D grid over the triangles; ``w(cap)`` is a solid-angle sum over the few cap
triangles (Van Oosterom–Strackee). This matches the brute-force solid-angle sum over all
triangles (:func:`winding_numbers`) to 1e-12 on every mesh of the heart, at a fraction of the
cost (50,000 cells of a section against the heart: about 3 s). ``trimesh.Trimesh.contains``
is not used: it needs a closed mesh and, without embree, took 13 s for 5,000 points on the
left ventricle alone. A structure's volume (used to rank specificity) is that of mesh + cap.

The crosswalk (``ASCT-B_3D_Models_Mapping.csv``) has metadata lines, then a header with
``anatomical_structure_of, source_spatial_entity, node_name, label, OntologyID,
representation_of``; ontology IDs come from ``representation_of`` (the IRI, written
consistently) as CURIEs, falling back to ``OntologyID`` (written ``UBERON:…``, ``fma:fma7264``,
``fma:fma:4715``).
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from atlasprep.align.rui import iri_to_curie
from atlasprep.errors import InputFormatError, SourceError, UsageError

__all__ = [
    "Crosswalk",
    "CrosswalkEntry",
    "ReferenceOrgan",
    "Structure",
    "closing_cap",
    "contains_points",
    "load_reference_organ",
    "read_crosswalk",
    "signed_crossings",
    "structure_winding_numbers",
    "winding_numbers",
]

log = logging.getLogger("atlasprep.align")

_CROSSWALK_COLUMNS = ("node_name", "label", "OntologyID", "representation_of", "anatomical_structure_of")
_PAIRS_PER_CHUNK = 1 << 21  # (point, triangle) pairs held at once: ~100 MB of float64 temporaries


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Structure:
    """One mesh node of a reference organ, in the organ frame (mm)."""

    node: str
    mesh: trimesh.Trimesh
    cap: np.ndarray  # triangles (E × 3 × 3) closing the mesh's holes; empty when it is closed
    watertight: bool
    volume_mm3: float  # |volume| enclosed by mesh + cap

    @property
    def bounds(self) -> np.ndarray:
        return np.asarray(self.mesh.bounds, dtype=np.float64)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class ReferenceOrgan:
    """A reference organ GLB: its mesh nodes in the organ frame and its node tree."""

    path: Path
    organ_node: str
    origin_mm: np.ndarray  # GLB scene coordinates (mm) of the organ frame's origin
    size_mm: np.ndarray  # the organ node's bounding box
    structures: tuple[Structure, ...]
    parents: Mapping[str, str]  # node → parent node; roots map to ""

    def structure(self, node: str) -> Structure:
        for item in self.structures:
            if item.node == node:
                return item
        raise KeyError(f"{self.path.name} has no mesh node {node!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class CrosswalkEntry:
    node_name: str
    ontology_id: str  # CURIE, or "" where the crosswalk gives none
    label: str
    iri: str
    organ: str  # anatomical_structure_of, e.g. "#VHFHeart"


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Crosswalk:
    """Reference-organ node name → ontology term."""

    path: Path
    entries: Mapping[str, CrosswalkEntry]

    def get(self, node: str) -> CrosswalkEntry | None:
        return self.entries.get(node)


# -- loading --------------------------------------------------------------------------------


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _pick_organ_node(path: Path, scene: trimesh.Scene, organ_node: str | None) -> str:
    graph = scene.graph
    nodes = set(graph.nodes) - {graph.base_frame}
    if organ_node is not None:
        if organ_node not in nodes:
            raise UsageError(
                f"{path.name} has no node {organ_node!r}; its roots are {', '.join(_roots(scene))}"
            )
        return organ_node
    stem = _normalise(re.sub(r"_v\d+(\.\d+)*$", "", path.stem, flags=re.IGNORECASE))
    named = sorted(node for node in nodes if _normalise(node) == stem)
    if len(named) == 1:
        return named[0]
    roots = _roots(scene)
    if len(roots) == 1:
        return roots[0]
    raise UsageError(
        f"cannot tell which node of {path.name} is the organ (roots: {', '.join(roots)}); "
        "set organ_node to name it"
    )


def _roots(scene: trimesh.Scene) -> list[str]:
    return sorted(scene.graph.transforms.children.get(scene.graph.base_frame, []))


def _subtree(scene: trimesh.Scene, node: str) -> set[str]:
    children = scene.graph.transforms.children
    found, stack = set(), [node]
    while stack:
        current = stack.pop()
        found.add(current)
        stack.extend(children.get(current, []))
    return found


def load_reference_organ(path: Path | str, *, organ_node: str | None = None) -> ReferenceOrgan:
    """Load a reference organ GLB (see the module docstring for the frame)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"reference organ {path} does not exist")
    try:
        scene = trimesh.load_scene(path)
    except Exception as exc:  # trimesh raises many kinds on a bad file
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InputFormatError(f"{path} is not a readable glTF/GLB reference organ ({reason})") from None
    to_mm = trimesh.units.unit_conversion(scene.units or "meters", "millimeters")
    organ = _pick_organ_node(path, scene, organ_node)
    in_organ = _subtree(scene, organ)
    structures_m: list[tuple[str, trimesh.Trimesh]] = []
    corners = []
    for node in sorted(scene.graph.nodes_geometry):
        matrix, geometry_name = scene.graph[node]
        geometry = scene.geometry.get(geometry_name)
        if not isinstance(geometry, trimesh.Trimesh) or len(geometry.faces) == 0:
            continue
        if node in in_organ:  # the HRA's box: local min/max corners through the world matrix
            local = np.column_stack([geometry.bounds, np.ones(2)])
            corners.append((local @ np.asarray(matrix).T)[:, :3])
        mesh = geometry.copy()
        mesh.apply_transform(matrix)
        structures_m.append((node, mesh))
    if not corners:
        raise InputFormatError(f"{path}: organ node {organ!r} has no meshes")
    box = np.vstack(corners) * to_mm
    origin = box.min(axis=0)
    structures = []
    for node, mesh in structures_m:
        mesh.apply_scale(to_mm)
        mesh.apply_translation(-origin)
        cap = closing_cap(np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces))
        closed = np.concatenate([np.asarray(mesh.triangles, dtype=np.float64), cap])
        volume = abs(float(np.einsum("fi,fi->", closed[:, 0], np.cross(closed[:, 1], closed[:, 2])))) / 6.0
        structures.append(
            Structure(node=node, mesh=mesh, cap=cap, watertight=bool(mesh.is_watertight), volume_mm3=volume)
        )
    parents = {
        child: ("" if parent == scene.graph.base_frame else parent)
        for child, parent in scene.graph.transforms.parents.items()
    }
    log.info(
        "%s: organ node %s, %d meshes (%d watertight), box %s mm",
        path.name,
        organ,
        len(structures),
        sum(s.watertight for s in structures),
        np.round(box.max(axis=0) - origin, 1).tolist(),
    )
    return ReferenceOrgan(
        path=path,
        organ_node=organ,
        origin_mm=origin,
        size_mm=box.max(axis=0) - origin,
        structures=tuple(structures),
        parents=parents,
    )


def read_crosswalk(path: Path | str) -> Crosswalk:
    """Read an ``ASCT-B_3D_Models_Mapping.csv`` crosswalk (node name → ontology term)."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise SourceError(f"crosswalk {path} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SourceError(f"cannot read crosswalk {path}: {exc}") from None
    header_at = next((i for i, row in enumerate(rows[:50]) if "node_name" in (c.strip() for c in row)), None)
    if header_at is None:
        raise InputFormatError(
            f"{path}: no header row with 'node_name' in the first 50 lines; expected the HRA "
            "ASCT-B_3D_Models_Mapping.csv crosswalk"
        )
    header = [c.strip() for c in rows[header_at]]
    missing = [c for c in _CROSSWALK_COLUMNS if c not in header]
    if missing:
        raise InputFormatError(
            f"{path}: the crosswalk header (line {header_at + 1}) lacks {', '.join(missing)}"
        )
    col = {name: header.index(name) for name in _CROSSWALK_COLUMNS}
    entries: dict[str, CrosswalkEntry] = {}
    for row in rows[header_at + 1 :]:
        cells = [c.strip() for c in row] + [""] * (len(header) - len(row))
        node = cells[col["node_name"]]
        if not node or node in entries:  # the file repeats a few rows verbatim; the first wins
            continue
        iri = cells[col["representation_of"]]
        term = iri_to_curie(iri) if iri else iri_to_curie(cells[col["OntologyID"]])
        entries[node] = CrosswalkEntry(
            node_name=node,
            ontology_id=term,
            label=cells[col["label"]],
            iri=iri,
            organ=cells[col["anatomical_structure_of"]],
        )
    return Crosswalk(path=path, entries=entries)


# -- containment ----------------------------------------------------------------------------


def _step(pairs_per_point: int) -> int:
    """Points per chunk so that a chunk holds about ``_PAIRS_PER_CHUNK`` (point, triangle) pairs."""
    return max(1, _PAIRS_PER_CHUNK // max(1, pairs_per_point))


def closing_cap(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Triangles (E × 3 × 3) that close a mesh: a fan from the centroid of its boundary over every
    boundary edge, reversed. The boundary is that of the faces as a 2-chain (directed edges that
    do not cancel), so mesh + cap is closed whatever the holes; empty for a closed mesh."""
    edges = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2).astype(np.int64)
    lo, hi = edges.min(axis=1), edges.max(axis=1)
    keys, inverse = np.unique(lo * len(vertices) + hi, return_inverse=True)
    net = np.bincount(inverse.reshape(-1), weights=np.where(edges[:, 0] < edges[:, 1], 1.0, -1.0))
    net = np.rint(net).astype(np.int64)
    a, b = keys // len(vertices), keys % len(vertices)
    tail, head = np.where(net > 0, a, b), np.where(net > 0, b, a)  # boundary edge tail → head
    repeat = np.abs(net)
    tail, head = np.repeat(tail, repeat), np.repeat(head, repeat)
    if len(tail) == 0:
        return np.zeros((0, 3, 3))
    centre = vertices[np.concatenate([tail, head])].mean(axis=0)
    return np.stack([vertices[head], vertices[tail], np.broadcast_to(centre, (len(tail), 3))], axis=1)


def winding_numbers(triangles: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Generalised winding number of each point w.r.t. triangles (F × 3 × 3), brute force over
    all triangles (Van Oosterom–Strackee solid angles): ±1 inside a closed mesh, 0 outside."""
    v0, v1, v2 = (triangles[:, i][None] for i in range(3))
    out = np.zeros(len(points), dtype=np.float64)
    if len(triangles) == 0:
        return out
    step = _step(len(triangles))
    for start in range(0, len(points), step):
        q = points[start : start + step, None, :]
        a, b, c = v0 - q, v1 - q, v2 - q
        la, lb, lc = (np.sqrt(np.einsum("pfi,pfi->pf", x, x)) for x in (a, b, c))
        det = np.einsum("pfi,pfi->pf", a, np.cross(b, c))
        den = (
            la * lb * lc
            + np.einsum("pfi,pfi->pf", a, b) * lc
            + np.einsum("pfi,pfi->pf", b, c) * la
            + np.einsum("pfi,pfi->pf", c, a) * lb
        )
        out[start : start + len(q)] = np.arctan2(det, den).sum(axis=1)
    return out / (2.0 * np.pi)


def signed_crossings(triangles: np.ndarray, points: np.ndarray, axis: int) -> np.ndarray:
    """For the ray from each point along +axis: Σ sign(normal · axis) over the triangles it
    crosses — the winding number of a closed triangle set. Candidates come from a 2-D grid over
    the triangles' projections, so the cost follows the triangles a ray meets."""
    u, v = (axis + 1) % 3, (axis + 2) % 3  # cyclic, so the 2-D cross product is the normal's axis part
    tri_u, tri_v = triangles[:, :, u], triangles[:, :, v]
    lo_u, hi_u, lo_v, hi_v = tri_u.min(1), tri_u.max(1), tri_v.min(1), tri_v.max(1)
    origin_u, origin_v = lo_u.min(), lo_v.min()
    area = max((hi_u.max() - origin_u) * (hi_v.max() - origin_v), 1e-12)
    cell = max(float(np.sqrt(area / len(triangles))) * 2.0, 1e-9)  # a few triangles per cell and layer
    n_v = int((hi_v.max() - origin_v) // cell) + 1
    # every (triangle, grid cell) pair the triangle's 2-D box touches, sorted by cell
    iu0, iu1 = ((lo_u - origin_u) // cell).astype(np.int64), ((hi_u - origin_u) // cell).astype(np.int64)
    iv0, iv1 = ((lo_v - origin_v) // cell).astype(np.int64), ((hi_v - origin_v) // cell).astype(np.int64)
    width, count = iu1 - iu0 + 1, (iu1 - iu0 + 1) * (iv1 - iv0 + 1)
    tri = np.repeat(np.arange(len(triangles)), count)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    cells = (iu0[tri] + k % width[tri]) * n_v + iv0[tri] + k // width[tri]
    order = np.argsort(cells, kind="stable")
    cells, tri = cells[order], tri[order]

    pu, pv, pa = points[:, u], points[:, v], points[:, axis]
    cu, cv = np.floor((pu - origin_u) / cell), np.floor((pv - origin_v) / cell)
    on_grid = (cu >= 0) & (cv >= 0) & (cv < n_v) & (cu <= iu1.max())
    point_cell = np.where(on_grid, cu * n_v + cv, -1).astype(np.int64)
    first = np.searchsorted(cells, point_cell, side="left")
    n_candidates = np.where(on_grid, np.searchsorted(cells, point_cell, side="right") - first, 0)
    total = np.zeros(len(points), dtype=np.int64)
    step = _step(int(n_candidates.max()) if len(points) else 1)
    for start in range(0, len(points), step):
        stop = min(start + step, len(points))
        counts = n_candidates[start:stop]
        pidx = np.repeat(np.arange(start, stop), counts)
        t = tri[
            np.repeat(first[start:stop], counts)
            + np.arange(counts.sum())
            - np.repeat(np.cumsum(counts) - counts, counts)
        ]
        a_u, b_u, c_u = tri_u[t, 0] - pu[pidx], tri_u[t, 1] - pu[pidx], tri_u[t, 2] - pu[pidx]
        a_v, b_v, c_v = tri_v[t, 0] - pv[pidx], tri_v[t, 1] - pv[pidx], tri_v[t, 2] - pv[pidx]
        # signed areas opposite each vertex: the ray pierces the triangle when all share a sign
        # (a ray through an edge hits neither neighbour; the caller's vote over axes absorbs that)
        w0, w1, w2 = b_u * c_v - b_v * c_u, c_u * a_v - c_v * a_u, a_u * b_v - a_v * b_u
        positive = (w0 > 0) & (w1 > 0) & (w2 > 0)
        hit = positive | ((w0 < 0) & (w1 < 0) & (w2 < 0))
        sums = np.where(hit, w0 + w1 + w2, 1.0)
        depth = (w0 * triangles[t, 0, axis] + w1 * triangles[t, 1, axis] + w2 * triangles[t, 2, axis]) / sums
        ahead = hit & (depth > pa[pidx])
        total[start:stop] += np.bincount(
            pidx[ahead] - start, weights=np.where(positive[ahead], 1.0, -1.0), minlength=stop - start
        ).astype(np.int64)
    return total


def structure_winding_numbers(structure: Structure, points_mm: np.ndarray) -> np.ndarray:
    """The generalised winding number of each point w.r.t. the structure's mesh, exactly, via
    ``w(mesh) = w(mesh + cap) - w(cap)``: the first is an integer (signed ray crossings, median
    over the three axes), the second a solid angle over the few cap triangles."""
    points = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
    closed = np.concatenate([np.asarray(structure.mesh.triangles, dtype=np.float64), structure.cap])
    crossings = np.median([signed_crossings(closed, points, axis) for axis in range(3)], axis=0)
    return crossings - winding_numbers(structure.cap, points)


def contains_points(structure: Structure, points_mm: np.ndarray) -> np.ndarray:
    """Which points (n × 3, organ frame, mm) lie inside the structure's mesh: ``|w| ≥ 0.5``."""
    points = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
    result = np.zeros(len(points), dtype=bool)
    lo, hi = structure.bounds  # outside the box the mesh subtends less than a half-space: |w| < 0.5
    near = np.flatnonzero(np.all((points >= lo) & (points <= hi), axis=1))
    if len(near):
        result[near] = np.abs(structure_winding_numbers(structure, points[near])) >= 0.5
    return result
