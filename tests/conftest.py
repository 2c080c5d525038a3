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


def shared_file(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"../shared/data/{relative} is not here")
    return path
