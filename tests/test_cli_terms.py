"""`atlasprep terms`: exit codes, one JSON document on stdout, errors on stderr."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from atlasprep.cli import app
from atlasprep.ontology import SCHEMA_VERSION, ontology_versions

runner = CliRunner()


def test_json_match_is_the_only_thing_on_stdout():
    r = runner.invoke(app, ["terms", "immune cell", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)  # fails on anything but one JSON document
    assert set(doc) == {"query", "match", "schema_version", "ontology_versions"}
    assert doc["query"] == "immune cell"
    assert doc["match"]["term_id"] == "CL:0000738"
    assert doc["match"]["label"] == "leukocyte"
    assert doc["match"]["ontology"] == "CL"
    assert doc["match"]["how"] == "alias"
    assert doc["match"]["n_descendants"] > 100
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["ontology_versions"]["CL"] == ontology_versions()["CL"]
    assert r.stderr == ""


def test_table_match_with_ontology_choice_and_lowercase_id():
    r = runner.invoke(app, ["terms", "Peyer's patch", "--ontology", "uberon"])
    assert r.exit_code == 0, r.output
    assert "UBERON:0001211" in r.stdout
    assert "label" in r.stdout
    assert ontology_versions()["UBERON"] in r.stdout  # the release is printed with the answer
    assert r.stderr == ""
    r = runner.invoke(app, ["terms", "cl:0000624", "--json"])
    assert r.exit_code == 0
    assert json.loads(r.stdout)["match"]["how"] == "id"


def test_no_match_lists_closest_and_exits_1():
    r = runner.invoke(app, ["terms", "leukocyt", "-O", "CL", "--json", "--limit", "3"])
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert doc["match"] is None
    assert len(doc["suggestions"]) == 3
    assert doc["suggestions"][0] == {"label": "leukocyte", "term_id": "CL:0000738", "ontology": "CL"}
    assert "leukocyt" in doc["error"]
    assert r.stderr == ""
    plain = runner.invoke(app, ["terms", "leukocyt", "-O", "CL"])
    assert plain.exit_code == 1
    assert "leukocyte" in plain.stdout
    assert "CL:0000738" in plain.stdout
    assert "Traceback" not in plain.output


def test_deprecated_id_names_its_replacement():
    r = runner.invoke(app, ["terms", "CL:0000003", "--json"])
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert "deprecated" in doc["error"]
    assert [s["term_id"] for s in doc["suggestions"]] == ["CL:0000000"]


def test_ambiguous_is_an_error_listing_candidates():
    r = runner.invoke(app, ["terms", "extravillous trophoblast", "--json"])
    assert r.exit_code == 2
    assert r.stdout == ""
    assert r.stderr.startswith("Error:")
    assert "CL:0008036" in r.stderr
    assert "UBERON:0000426" in r.stderr
    assert "--ontology" in r.stderr


def test_bad_ontology_is_usage_error():
    r = runner.invoke(app, ["terms", "lung", "--ontology", "NOPE"])
    assert r.exit_code == 2
    assert r.stderr.startswith("Error:")
    assert "UBERON" in r.stderr  # the valid choices are listed
    assert r.stdout == ""


def test_help_explains():
    r = runner.invoke(app, ["terms", "--help"])
    assert r.exit_code == 0
    for word in ("synonym", "alias", "--ontology", "--json", "--limit"):
        assert word in r.stdout


def test_several_queries_as_a_table_tsv_and_json():
    from typer.testing import CliRunner

    from atlasprep.cli import app

    runner = CliRunner()
    tsv = runner.invoke(app, ["terms", "T cell", "lung", "zzqqx-nothing", "--tsv"])
    assert tsv.exit_code == 1  # one query matched nothing
    rows = [line.split("\t") for line in tsv.stdout.rstrip("\n").splitlines()]
    assert rows[0] == ["query", "term_id", "label", "ontology", "matched_by", "n_descendants"]
    assert rows[1][:4] == ["T cell", "CL:0000084", "T cell", "CL"]
    assert rows[2][:2] == ["lung", "UBERON:0002048"]
    assert rows[3][0] == "zzqqx-nothing"
    assert rows[3][1] == ""
    docs = json.loads(runner.invoke(app, ["terms", "T cell", "lung", "--json"]).stdout)
    assert [d["match"]["term_id"] for d in docs] == ["CL:0000084", "UBERON:0002048"]
    table = runner.invoke(app, ["terms", "T cell", "B cell"])
    assert table.exit_code == 0
    assert "CL:0000236" in table.stdout
    assert runner.invoke(app, ["terms", "lung", "--ontology", "cl,uberon", "--tsv"]).exit_code == 0


def test_flags_show_no_value_in_help():
    from typer.testing import CliRunner

    from atlasprep.cli import app

    text = CliRunner().invoke(app, ["slice", "--help"], terminal_width=200).stdout
    assert "<bool>" not in text
    assert "--overwrite" in text
