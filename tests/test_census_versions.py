"""Naming the remote Census by version, offline: the release directory and the store are stand-ins."""

from __future__ import annotations

import logging

import cellxgene_census
import pytest

from atlasprep.errors import SourceError, UsageError
from atlasprep.slice import SliceConfig, slice_cells
from atlasprep.sources import CellFilter, SourceSpec, open_census


@pytest.fixture
def fake_release_directory(monkeypatch, small_census):
    opened = []
    real_open = cellxgene_census.open_soma

    def describe(version: str):
        if version not in ("stable", "latest", "2025-11-08"):
            raise ValueError(version)
        return {"release_build": "2025-11-08", "soma": {"uri": "s3://bucket/2025-11-08/soma/"}}

    def open_soma(*, census_version=None, tiledb_config=None, **kwargs):
        opened.append((census_version, tiledb_config))
        return real_open(uri=str(small_census), tiledb_config=tiledb_config)

    monkeypatch.setattr(cellxgene_census, "get_census_version_description", describe)
    monkeypatch.setattr(cellxgene_census, "open_soma", open_soma)
    return opened


def test_stable_is_pinned_logged_and_recorded(fake_release_directory, caplog, tmp_path):
    with caplog.at_level(logging.WARNING, logger="atlasprep"):
        result = slice_cells(
            SliceConfig(
                source=SourceSpec(census="stable", filter=CellFilter(tissue_general=("lung",))),
                out=tmp_path / "l.h5ad",
            )
        )
    assert "pass --census 2025-11-08 to pin it" in caplog.text
    assert result.source.census_version == "stable"
    assert result.source.census_build == "2025-11-08"
    assert result.provenance["census_build"] == "2025-11-08"
    # the dated build is what was opened, with buffers sized to the batch
    version, config = fake_release_directory[0]
    assert version == "2025-11-08"
    assert config["soma.init_buffer_bytes"] < 1024**3


def test_unknown_version_and_no_network(monkeypatch):
    monkeypatch.setattr(
        cellxgene_census, "get_census_version_description", lambda v: (_ for _ in ()).throw(ValueError(v))
    )
    with pytest.raises(UsageError, match="not a Census version"):
        open_census(census="1999-01-01")

    def offline(version):
        raise OSError("Name or service not known")

    monkeypatch.setattr(cellxgene_census, "get_census_version_description", offline)
    with pytest.raises(SourceError, match="set census_uri"):
        open_census(census="stable")
