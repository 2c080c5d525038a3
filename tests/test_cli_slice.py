"""The shell contract of `atlasprep slice`: stdout results, stderr chatter, exit codes."""

from __future__ import annotations

import json

import anndata as ad
import pytest
from typer.testing import CliRunner

from atlasprep.cli import app


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args), catch_exceptions=False)

    return invoke


def test_json_dry_run_is_one_document_with_breakdown(run, small_census):
    r = run(
        "slice",
        "--census-uri",
        str(small_census),
        "--cell-type",
        "immune cell",
        "--dry-run",
        "--json",
        "--by",
        "tissue_general",
    )
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["n_cells"] > 0
    assert sum(doc["breakdown"]["tissue_general"].values()) == doc["n_cells"]
    assert "cell_type_ontology_term_id in [" in doc["compiled_filter"]["value_filter"]
    term = doc["resolved_terms"]["cell_type"][0]
    assert (term["term_id"], term["how"]) == ("CL:0000738", "alias")
    # the user is told what "immune cell" became, on stderr
    assert "leukocyte" in r.stderr
    assert "CL:0000738" in r.stderr


def test_writes_with_progress_on_stderr_and_refuses_to_overwrite(run, small_census, tmp_path):
    out = tmp_path / "blood.h5ad"
    r = run("slice", "--census-uri", str(small_census), "--tissue-general", "blood", "--out", str(out))
    assert r.exit_code == 0, r.stderr
    assert str(out) in r.stdout
    assert "cells" in r.stderr  # the progress bar's final state
    assert ad.read_h5ad(out).n_obs > 0
    again = run("slice", "--census-uri", str(small_census), "--tissue-general", "blood", "--out", str(out))
    assert again.exit_code == 2
    assert again.stderr.startswith("Error:")
    assert "--overwrite" in again.stderr
    assert "Traceback" not in again.stderr
    ok = run(
        "slice",
        "--census-uri",
        str(small_census),
        "--tissue-general",
        "blood",
        "--out",
        str(out),
        "--overwrite",
        "--max-cells",
        "10",
    )
    assert ok.exit_code == 0
    assert ad.read_h5ad(out).n_obs == 10


def test_unknown_term_exit_2_with_suggestions(run, small_census):
    r = run("slice", "--census-uri", str(small_census), "--tissue", "lungg", "--dry-run")
    assert r.exit_code == 2
    assert r.stderr.startswith("Error:")
    assert "lung" in r.stderr
    assert r.stdout == ""


def test_empty_result_exit_1_unless_allowed(run, small_census, tmp_path):
    args = ("slice", "--census-uri", str(small_census), "--donor-id", "no such donor")
    r = run(*args, "--dry-run")
    assert r.exit_code == 1
    assert "--allow-empty" in r.stderr
    out = tmp_path / "empty.zarr"
    ok = run(*args, "--allow-empty", "--out", str(out))
    assert ok.exit_code == 0
    assert ad.read_zarr(out).n_obs == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--dry-run",), "name exactly one source"),
        (("--census-uri", "/nonexistent/census", "--dry-run"), "no such directory"),
        (("--census-uri", "{store}", "--per-group", "tissue", "--dry-run"), "COLUMN=N"),
        (("--census-uri", "{store}", "--out", "x.csv"), ".h5ad or .zarr"),
        (("--census-uri", "{store}", "--organism", "Danio rerio", "--dry-run"), "no experiment"),
    ],
)
def test_bad_usage_is_one_line_exit_2(run, small_census, args, message):
    r = run("slice", *(a.replace("{store}", str(small_census)) for a in args))
    assert r.exit_code == 2, r.stdout
    assert r.stderr.startswith("Error:")
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_help_explains_sources_and_filters(run):
    r = run("slice", "--help")
    assert r.exit_code == 0
    for flag in (
        "--census",
        "--census-uri",
        "--input",
        "--tissue",
        "--cell-type",
        "--exact",
        "--all-data",
        "--per-group",
        "--dry-run",
        "--json",
    ):
        assert flag in r.stdout
