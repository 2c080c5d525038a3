from __future__ import annotations

import json

from typer.testing import CliRunner

from atlasprep.cli import app

runner = CliRunner()


def test_json_match():
    r = runner.invoke(app, ["terms", "immune cell", "--json"])
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert doc["match"]["term_id"] == "CL:0000738"
    assert doc["match"]["how"] == "alias"
    assert doc["match"]["n_descendants"] > 100
    assert doc["ontology_release"].startswith("v")


def test_table_match_and_ontology_choice():
    r = runner.invoke(app, ["terms", "Peyer's patch", "--ontology", "uberon"])
    assert r.exit_code == 0
    assert "UBERON:0001211" in r.stdout


def test_no_match_lists_closest_and_exits_1():
    r = runner.invoke(app, ["terms", "leukocyt", "-O", "CL", "--json"])
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert doc["match"] is None
    assert doc["suggestions"][0]["term_id"] == "CL:0000738"
    plain = runner.invoke(app, ["terms", "leukocyt", "-O", "CL"])
    assert plain.exit_code == 1
    assert "leukocyte" in plain.stdout


def test_bad_ontology_is_usage_error():
    r = runner.invoke(app, ["terms", "lung", "--ontology", "NOPE"])
    assert r.exit_code == 2
    assert r.stderr.startswith("Error:")
