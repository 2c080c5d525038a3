from __future__ import annotations

from pathlib import Path

import pytest

from atlasprep.testing import small_census as _build_small_census

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def small_census(tmp_path_factory) -> Path:
    """A ~1,500-cell Census-layout store built by the demo generator (same code, small size)."""
    return _build_small_census(tmp_path_factory.mktemp("census"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tests never touch the user's cache; the demo atlas they build lives in a session dir."""
    monkeypatch.setenv("ATLASPREP_CACHE", str(tmp_path_factory.getbasetemp() / "atlasprep-cache"))


def demo_cells(census: Path, n_cells: int, batch_size: int = 128):  # type: ignore[no-untyped-def]
    """The first ``n_cells`` primary cells of a demo store: (CSR counts, float32; var gene IDs)."""
    import numpy as np
    import scipy.sparse as sp

    from atlasprep.sources import CellFilter, open_census, resolve_filter

    source = open_census(census_uri=str(census))
    try:
        positions = source.select(source.compile(resolve_filter(CellFilter())))[:n_cells]
        X = sp.vstack(
            [b.X for b in source.iter_batches(positions, var_positions=None, batch_size=batch_size)]
        )
        genes = list(source.var().index)
    finally:
        source.close()
    return sp.csr_matrix(X, dtype=np.float32), genes


def shared_file(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"../shared/data/{relative} is not here")
    return path
