"""Opt-in tests against the live CELLxGENE Census (network): ``pytest -m census``."""

from __future__ import annotations

import cellxgene_census
import pytest

from atlasprep.slice import SliceConfig, slice_cells
from atlasprep.sources import CellFilter, SourceSpec, open_census

pytestmark = pytest.mark.census


def test_stable_resolves_to_a_dated_build_and_is_recorded():
    source = open_census(census="stable")
    try:
        build = cellxgene_census.get_census_version_description("stable")["release_build"]
        assert source.info.census_build == build
        assert source.info.census_version == "stable"
    finally:
        source.close()


def test_small_live_slice_equals_get_anndata(tmp_path):
    flt = CellFilter(tissue=("UBERON:0001225",), cell_type=("podocyte",), exact=True)
    result = slice_cells(
        SliceConfig(source=SourceSpec(census="stable", filter=flt, max_cells=200, seed=0), dry_run=True)
    )
    assert result.n_matched > 0
    value_filter = result.compiled.value_filter()
    with cellxgene_census.open_soma(census_version=result.source.census_build) as census:
        obs = cellxgene_census.get_obs(
            census, "Homo sapiens", value_filter=value_filter, column_names=["soma_joinid"]
        )
    assert len(obs) == result.n_matched
