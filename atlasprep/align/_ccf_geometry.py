"""`align ccf`, the registration maths: RUI placement matrices, the section's plane in its block,
which organ meshes contain a point, and the 3-D spatial bins and kNN graph of a section."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.spatial import cKDTree

from atlasprep.align.organ import ReferenceOrgan, contains_points
from atlasprep.align.rui import Registration
from atlasprep.errors import InputFormatError, UsageError

_BIN_BITS = 21  # per axis: bin indices in [-2**20, 2**20)
_BIN_OFFSET = 1 << (_BIN_BITS - 1)
_BIN_MASK = (1 << _BIN_BITS) - 1

# -- geometry -------------------------------------------------------------------------------


def _rotation(axis: str, degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    c, s = np.cos(t), np.sin(t)
    if axis == "X":
        return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    if axis == "Y":
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def placement_matrix(registration: Registration) -> np.ndarray:
    """4 × 4 matrix from block-local mm (origin at the block centre) to the organ frame (mm)."""
    p = registration.placement
    angles = dict(zip("XYZ", p.rotation_deg, strict=True))
    rotation = np.eye(3)
    for axis in p.rotation_order:  # "XYZ" → Rx·Ry·Rz, math.gl's rotateXYZ
        rotation = rotation @ _rotation(axis, angles[axis])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.diag(p.scaling)
    matrix[:3, 3] = p.translation_mm
    return matrix


def block_center(registration: Registration) -> np.ndarray:
    """The block's centre in the organ frame (mm): its translation."""
    return placement_matrix(registration)[:3, 3].copy()


def block_corners(registration: Registration) -> np.ndarray:
    """The block's 8 corners in the organ frame (mm)."""
    half = np.asarray(registration.dimensions_mm) / 2.0
    signs = np.array(np.meshgrid([-1.0, 1.0], [-1.0, 1.0], [-1.0, 1.0], indexing="ij")).reshape(3, -1).T
    return apply_matrix(placement_matrix(registration), signs * half)


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def section_to_block(
    spatial_px: np.ndarray,
    *,
    pixel_size_um: float,
    section_z_mm: float,
    dimensions_mm: tuple[float, float, float],
    center_px: tuple[float, float] | None = None,
) -> np.ndarray:
    """Section pixels (n × 2) → block-local mm (n × 3): ``center_px`` (pixels) on the centre of
    the block face; by default the centre of the cells' bounding box, which depends on which
    cells the file holds (give the same centre to place parts of one section alike)."""
    xy = np.asarray(spatial_px, dtype=np.float64)[:, :2] * (pixel_size_um / 1000.0)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    center = (lo + hi) / 2.0 if center_px is None else np.asarray(center_px) * (pixel_size_um / 1000.0)
    extent, face = 2.0 * np.maximum(hi - center, center - lo), np.asarray(dimensions_mm[:2])
    if np.any(extent > face * (1 + 1e-9)):
        what = "spans" if center_px is None else "reaches, about the given centre,"
        raise InputFormatError(
            f"the section {what} {extent[0]:.3g} × {extent[1]:.3g} mm at {pixel_size_um:g} µm per pixel, "
            f"but the block face is {face[0]:g} × {face[1]:g} mm; check pixel_size_um (µm per pixel of "
            "obsm['spatial'])" + ("" if center_px is None else " and section_center_px")
        )
    z = np.full((len(xy), 1), section_z_mm - dimensions_mm[2] / 2.0)
    return np.hstack([xy - center, z])


def section_center(spatial_px: np.ndarray) -> tuple[float, float]:
    """The centre of the cells' bounding box (pixels): where :func:`section_to_block` centres a
    section by default."""
    xy = np.asarray(spatial_px, dtype=np.float64)[:, :2]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    return float((lo[0] + hi[0]) / 2.0), float((lo[1] + hi[1]) / 2.0)


def containment(points_mm: np.ndarray, organ: ReferenceOrgan) -> np.ndarray:
    """Boolean n × m: point i lies inside ``organ.structures[j]`` (organ frame, mm)."""
    points = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
    inside = np.zeros((len(points), len(organ.structures)), dtype=bool)
    for j, structure in enumerate(organ.structures):  # one mesh at a time, all points at once
        inside[:, j] = contains_points(structure, points)
    return inside


def specific_first(organ: ReferenceOrgan) -> np.ndarray:
    volumes = np.array([s.volume_mm3 for s in organ.structures])
    return np.argsort(volumes, kind="stable")


def structures_at(points_mm: np.ndarray, organ: ReferenceOrgan) -> list[list[str]]:
    """The mesh nodes containing each point, most specific (smallest volume) first."""
    order = specific_first(organ)
    inside = containment(points_mm, organ)[:, order]
    names = np.array([organ.structures[j].node for j in order], dtype=object)
    return [names[row].tolist() for row in inside]  # building the output; the tests ran vectorised


# -- bins and neighbours --------------------------------------------------------------------


def spatial_bins(points_mm: np.ndarray, bin_size_mm: float) -> np.ndarray:
    """Stable int64 3-D bin ids: each axis' ``floor(coordinate / bin_size_mm)`` packed in 21 bits."""
    if not (np.isfinite(bin_size_mm) and bin_size_mm > 0):
        raise UsageError(f"bin_size_mm = {bin_size_mm}: must be a finite number > 0 mm")
    points = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
    if not np.isfinite(points).all():
        raise InputFormatError("some coordinates to bin are NaN or infinite")
    with np.errstate(over="ignore"):  # a tiny bin overflows to inf: refused just below
        index = np.floor(points / bin_size_mm)
    if not np.all(np.abs(index) < _BIN_OFFSET):
        raise UsageError(
            f"bin_size_mm = {bin_size_mm}: gives more than 2**20 bins along an axis; use larger bins"
        )
    shifted = index.astype(np.int64) + _BIN_OFFSET
    return (shifted[:, 0] << (2 * _BIN_BITS)) | (shifted[:, 1] << _BIN_BITS) | shifted[:, 2]


def _bin_indices(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = np.asarray(ids, dtype=np.int64)
    return (
        ((ids >> (2 * _BIN_BITS)) & _BIN_MASK) - _BIN_OFFSET,
        ((ids >> _BIN_BITS) & _BIN_MASK) - _BIN_OFFSET,
        (ids & _BIN_MASK) - _BIN_OFFSET,
    )


def spatial_bin_labels(ids: np.ndarray) -> pd.Categorical:
    """Bin ids as labels ``x12_y3_z7`` (a categorical; one label per distinct bin is built)."""
    unique, codes = np.unique(np.asarray(ids, dtype=np.int64), return_inverse=True)
    ix, iy, iz = (a.astype(str) for a in _bin_indices(unique))
    labels = np.char.add(np.char.add(np.char.add(np.char.add(np.char.add("x", ix), "_y"), iy), "_z"), iz)
    return pd.Categorical.from_codes(codes.reshape(-1), categories=pd.Index(labels.astype(object)))


def spatial_neighbors(
    points: np.ndarray, n_neighbors: int, sections: np.ndarray | None = None
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """:func:`knn_graph` of ``points``; with ``sections`` (a label per point), of each section's
    points apart, so no edge joins two sections (squidpy's ``library_key``): sections laid over
    one another in one coordinate frame stay apart."""
    if sections is None:
        return knn_graph(points, n_neighbors)
    n = len(points)
    codes = pd.factorize(np.asarray(sections, dtype=object))[0]
    members: list[np.ndarray] = []
    graphs: tuple[list[sp.coo_matrix], list[sp.coo_matrix]] = ([], [])
    for code in range(int(codes.max()) + 1 if n else 0):
        cells = np.flatnonzero(codes == code)
        for part, graph in zip(graphs, knn_graph(points[cells], n_neighbors), strict=True):
            part.append(graph.tocoo())
        members.append(cells)

    def whole(parts: list[sp.coo_matrix], dtype: type) -> sp.csr_matrix:
        """The sections' graphs as one, their rows and columns back at their cells' positions."""
        data = np.concatenate([g.data for g in parts])
        rows = np.concatenate([m[g.row] for g, m in zip(parts, members, strict=True)])
        cols = np.concatenate([m[g.col] for g, m in zip(parts, members, strict=True)])
        graph = sp.csr_matrix((data.astype(dtype), (rows, cols)), shape=(n, n))
        graph.sort_indices()
        return graph

    return whole(graphs[0], np.float32), whole(graphs[1], np.float64)


def knn_graph(points: np.ndarray, n_neighbors: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """kNN graph in squidpy's generic-coordinate layout (``squidpy.gr.spatial_neighbors``,
    ``coord_type="generic"``, its KNN builder): (connectivities, distances), CSR n × n, row i
    holding point i's ``n_neighbors`` nearest others (itself excluded) in both: connectivities
    1.0 (float32, directed: not symmetrised), distances their Euclidean lengths (float64), with
    zeros not stored (so a neighbour at the very same coordinates is connected but has no
    stored distance, as in squidpy)."""
    coords = np.asarray(points, dtype=np.float64)
    n = len(coords)
    if not 1 <= n_neighbors < n:
        raise UsageError(
            f"neighbors = {n_neighbors}: must be between 1 and the number of cells - 1 ({n - 1})"
        )
    distance, index = cKDTree(coords).query(coords, k=n_neighbors + 1)
    is_self = index == np.arange(n)[:, None]
    # with duplicate coordinates a cell may not come first among its own neighbours: drop the farthest
    is_self[~is_self.any(axis=1), -1] = True
    keep = ~is_self
    columns = index[keep].reshape(n, n_neighbors)
    indptr = np.arange(0, n * n_neighbors + 1, n_neighbors)
    connectivities = sp.csr_matrix(
        (np.ones(n * n_neighbors, dtype=np.float32), columns.ravel(), indptr), shape=(n, n)
    )
    connectivities.sort_indices()
    distances = sp.csr_matrix((distance[keep], columns.ravel(), indptr), shape=(n, n))
    distances.sort_indices()
    distances.eliminate_zeros()
    return connectivities, distances
