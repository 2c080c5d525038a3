"""A store says how many cells max_len cut, per split, and names the terms it holds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from atlasprep.cli import app
from atlasprep.ontology import term_label
from atlasprep.shard import read_manifest
from atlasprep.sources import SourceSpec, open_source, select
from atlasprep.tokenize.api import TokenizeConfig, tokenize_cells


@pytest.mark.parametrize(("scheme", "room"), [("rank", 2), ("raw", 0)])
def test_truncated_cells_per_split_are_the_cells_longer_than_max_len(small_census, tmp_path, scheme, room):
    spec = SourceSpec(census_uri=str(small_census), max_cells=300, seed=6)
    max_len = 900
    config = TokenizeConfig(
        source=spec, out=tmp_path / "s", scheme=scheme, max_len=max_len, split_by="donor_id"
    )
    tokenize_cells(config)
    manifest = read_manifest(config.out)
    source = open_source(spec)
    try:
        positions = select(spec, source).positions
        expressed = {}
        for batch in source.iter_batches(
            positions, var_positions=None, batch_size=100, obs_columns=["donor_id"]
        ):
            X = batch.X.tocsr()
            X.eliminate_zeros()
            for cell, n in zip(batch.cell_ids.astype(str), np.diff(X.indptr), strict=True):
                expressed[cell] = int(n)
    finally:
        source.close()
    from atlasprep.shard import read_shard

    want: dict[str, int] = {}
    for shard in manifest["shards"]:
        cells = read_shard(config.out, shard["path"])["cell_id"].to_pylist()
        want[shard["split"]] = want.get(shard["split"], 0) + sum(expressed[c] > max_len - room for c in cells)
    assert manifest["truncated"]["max_len"] == max_len
    assert {k: v for k, v in manifest["truncated"]["cells"].items() if k in want} == want
    assert 0 < sum(want.values()) < 300  # some cells cut, not all


def test_the_store_names_its_terms_and_inspect_shows_them(small_census, tmp_path):
    out = tmp_path / "s"
    spec = SourceSpec(census_uri=str(small_census), max_cells=200, seed=1)
    tokenize_cells(TokenizeConfig(source=spec, out=out, context=("tissue_general",), max_len=64))
    labels = read_manifest(out)["labels"]
    assert labels["UBERON:0002048"] == term_label("UBERON:0002048") == "lung"
    assert all(labels[t] == term_label(t) for t in list(labels)[:20])
    result = CliRunner().invoke(app, ["inspect", str(out), "--by", "cell_type_ontology_term_id", "--json"])
    summary = json.loads(result.stdout)
    shown = summary["composition"]["cell_type_ontology_term_id"]
    assert all(summary["labels"][t] == term_label(t) for t in shown)
    text = CliRunner().invoke(app, ["inspect", str(out)], terminal_width=200).stdout
    assert "cut at max_len 64" in text
    assert term_label(next(iter(shown))) in text
