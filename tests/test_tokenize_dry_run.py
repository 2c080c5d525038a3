"""`tokenize --dry-run`: the build's selection and split plan, without the build."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from atlasprep.cli import app
from atlasprep.shard import read_manifest


def test_dry_run_plans_what_the_build_makes_and_writes_nothing(small_census, tmp_path):
    args = ["tokenize", "--census-uri", str(small_census), "--tissue", "lung", "--split-by", "donor_id"]
    args += ["--shard-cells", "100", "--seed", "3"]
    runner = CliRunner()
    dry = runner.invoke(app, [*args, "--dry-run", "--json", "--out", str(tmp_path / "dry")])
    assert dry.exit_code == 0, dry.output
    assert not (tmp_path / "dry").exists()
    plan = json.loads(dry.stdout)
    built = runner.invoke(app, [*args, "--out", str(tmp_path / "store")])
    assert built.exit_code == 0, built.output
    assert "tissue: 'lung' -> lung (UBERON:0002048" in built.output  # what the names resolved to
    manifest = read_manifest(tmp_path / "store")
    assert plan["n_cells"] == manifest["n_cells"]
    cells = {name: split["cells"] for name, split in plan["splits"].items() if split["cells"]}
    assert cells == {k: v for k, v in manifest["splits"]["n_cells"].items() if v}
    shards = {name: split["shards"] for name, split in plan["splits"].items() if split["cells"]}
    assert sum(shards.values()) == len(manifest["shards"])
    tokens = sum(s.get("n_tokens", 0) for s in manifest["shards"])
    assert tokens <= plan["max_tokens"]
    assert plan["filter"]["tissue"][0]["term_id"] == "UBERON:0002048"
    text = runner.invoke(app, [*args, "--dry-run", "--out", str(tmp_path / "dry")])
    assert "would be tokenized" in text.stdout
    assert "train" in text.stdout
