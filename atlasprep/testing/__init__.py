"""Test data for atlasprep and its users: small stores made by the same code as the real thing."""

from __future__ import annotations

from pathlib import Path

from atlasprep.demo import build_census

__all__ = ["small_census"]


def small_census(tmp_path_factory_dir: Path, n_cells: int = 1_500, seed: int = 0) -> Path:
    """The demo atlas at ``n_cells`` cells, built in ``tmp_path_factory_dir / "census"``.

    Same datasets, donors, tissues and cell types as ``atlasprep.demo``; only the cell count
    differs. Give it a fresh directory (``tmp_path_factory.mktemp(...)``).
    """
    return build_census(Path(tmp_path_factory_dir) / "census", n_cells=n_cells, seed=seed)
