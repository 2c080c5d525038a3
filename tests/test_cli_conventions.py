"""The command line's conventions: -q/-v before or after the command, output for pipes that is
not hard-wrapped, usage errors as one line with exit 2, failures of the world with exit 1."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from atlasprep.cli import app
from atlasprep.cli._app import hoist_verbosity


def _atlasprep(*args: str) -> subprocess.CompletedProcess[str]:
    """The console script as a shell runs it, its output piped (not a terminal)."""
    code = "import sys; from atlasprep.cli import main; sys.argv = ['atlasprep', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False)


def test_verbosity_flags_move_before_the_command():
    assert hoist_verbosity(["slice", "-q", "--census", "demo"]) == ["-q", "slice", "--census", "demo"]
    assert hoist_verbosity(["align", "ccf", "-vv", "--out", "x"]) == ["-vv", "align", "ccf", "--out", "x"]
    assert hoist_verbosity(["-v", "slice", "--max-cells", "3"]) == ["-v", "slice", "--max-cells", "3"]
    assert hoist_verbosity(["run", "r.toml", "--", "-q"]) == ["run", "r.toml", "--", "-q"]
    assert hoist_verbosity(["--version"]) == ["--version"]


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_leaves_only_results_and_errors(small_census, tmp_path, where):
    args = ["slice", "--census-uri", str(small_census), "--max-cells", "5", "--out", str(tmp_path / "s.h5ad")]
    done = _atlasprep(*(["-q", *args] if where == "before" else [*args, "-q"]))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "5 cells" in done.stdout
    loud = _atlasprep(*args[:-1], str(tmp_path / "t.h5ad"))
    assert "cells/s" in loud.stderr  # the progress bar, without -q


def test_help_through_a_pipe_cuts_no_option_name():
    done = _atlasprep("tokenize", "--help")
    assert done.returncode == 0
    assert "…" not in done.stdout
    for flag in (
        "--token-dictionary",
        "--gene-medians",
        "--min-gene-match",
        "--tokenizer",
        "--assume-normalized",
    ):
        assert flag in done.stdout


def test_a_usage_error_from_the_parser_is_one_line_and_exit_2():
    done = _atlasprep("slice", "--bogus")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("Error: No such option: --bogus")
    assert len(done.stderr.strip().splitlines()) == 1


def test_an_unreachable_census_is_a_failure_of_the_world(monkeypatch, tmp_path):
    import cellxgene_census

    def offline(version: str) -> dict:
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(cellxgene_census, "get_census_version_description", offline)
    result = CliRunner().invoke(
        app, ["slice", "--census", "stable", "--max-cells", "5", "--out", str(tmp_path / "x.h5ad")]
    )
    assert result.exit_code == 1
    assert "cannot reach the CELLxGENE Census" in result.output


def test_shell_completion_completes_commands_and_options():
    import os

    code = "from atlasprep.cli import main; main()"
    env = {
        **os.environ,
        "_ATLASPREP_COMPLETE": "complete_bash",
        "COMP_WORDS": "atlasprep toke",
        "COMP_CWORD": "1",
    }
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert done.stdout.split() == ["tokenize", "tokenizer"]
    env.update(COMP_WORDS="atlasprep slice --census-u", COMP_CWORD="2")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert done.stdout.split() == ["--census-uri"]


def test_genes_dash_reads_the_list_from_stdin(small_census, tmp_path):
    from atlasprep.sources import SourceSpec, open_source

    source = open_source(SourceSpec(census_uri=str(small_census)))
    try:
        genes = [str(g) for g in source.var().index[:7]]
    finally:
        source.close()
    out = tmp_path / "g.h5ad"
    args = ["slice", "--census-uri", str(small_census), "--max-cells", "4", "--genes", "-", "--out", str(out)]
    result = CliRunner().invoke(app, args, input="# seven genes\n" + "\n".join(genes) + "\n")
    assert result.exit_code == 0, result.output
    import anndata as ad

    assert list(ad.read_h5ad(out).var_names) == genes


def test_inputs_are_positional_or_input_and_lists_comma_separated_or_repeated(small_census, tmp_path):
    from atlasprep.shard import read_manifest, read_shard

    sliced = tmp_path / "s.h5ad"
    runner = CliRunner()
    made = runner.invoke(
        app, ["slice", "--census-uri", str(small_census), "--max-cells", "30", "--out", str(sliced)]
    )
    assert made.exit_code == 0, made.output
    by_flag = runner.invoke(
        app, ["slice", "--input", str(sliced), "--all-data", "--dry-run", "--by", "assay,sex"]
    )
    positional = runner.invoke(
        app, ["slice", str(sliced), "--all-data", "--dry-run", "--by", "assay", "--by", "sex"]
    )
    assert by_flag.exit_code == positional.exit_code == 0
    assert by_flag.stdout == positional.stdout
    assert "by assay" in positional.stdout
    assert "by sex" in positional.stdout
    stores = {}
    for name, options in {
        "comma": ["--context", "assay,sex", "--obs-columns", "donor_id,sex"],
        "repeated": [
            "--context",
            "assay",
            "--context",
            "sex",
            "--obs-columns",
            "donor_id",
            "--obs-columns",
            "sex",
        ],
    }.items():
        out = tmp_path / name
        done = runner.invoke(app, ["tokenize", str(sliced), "--all-data", *options, "--out", str(out)])
        assert done.exit_code == 0, done.output
        stores[name] = read_manifest(out)
        table = read_shard(out, stores[name]["shards"][0]["path"])
        assert {"donor_id", "sex"} <= set(table.column_names)
    assert (
        stores["comma"]["tokenizer"]["context"]
        == stores["repeated"]["tokenizer"]["context"]
        == ["assay", "sex"]
    )


def test_every_command_takes_its_input_positionally_or_with_input(small_census, tmp_path):
    store = tmp_path / "store"
    runner = CliRunner()
    built = runner.invoke(
        app, ["tokenize", "--census-uri", str(small_census), "--max-cells", "40", "--out", str(store)]
    )
    assert built.exit_code == 0, built.output
    for command in (["inspect", "--json"], ["validate"]):
        positional = runner.invoke(app, [command[0], str(store), *command[1:]])
        flagged = runner.invoke(app, [command[0], "--input", str(store), *command[1:]])
        assert positional.exit_code == flagged.exit_code == 0, flagged.output
        assert positional.stdout == flagged.stdout
    twice = runner.invoke(app, ["inspect", str(store), "--input", str(tmp_path)])
    assert twice.exit_code == 2
    assert "given twice" in twice.output
    none = runner.invoke(app, ["validate"])
    assert none.exit_code == 2
    assert "missing" in none.output


def test_cache_info_and_clear_touch_only_what_atlasprep_made(tmp_path, monkeypatch):
    import json as _json

    from atlasprep._cache import keep_json, note_written

    monkeypatch.setenv("ATLASPREP_CACHE", str(tmp_path))
    demo = tmp_path / "demo-census-1.0"
    (demo / "ms").mkdir(parents=True)
    (demo / "ms" / "x.bin").write_bytes(b"0" * 5000)
    note_written(demo)  # as the demo build notes its tree
    (tmp_path / "demo-census-1.0.lock").touch()
    keep_json(tmp_path / "ontology" / "taxa.json", {})
    (tmp_path / "ontology" / ".taxa.json.tmp-999999999").write_text("{")  # a crashed write's
    (tmp_path / "mine.txt").write_text("not atlasprep's")
    (demo / "ms" / "notes.txt").write_text("put here by a user")  # inside an entry: kept
    (tmp_path / "elsewhere").mkdir()
    (demo / "ms" / "link").symlink_to(tmp_path / "elsewhere")  # a link to a folder: kept, not followed
    (tmp_path / "inputs-2024").mkdir()  # named like an entry, but no record: not atlasprep's
    (tmp_path / "inputs-2024" / "data.csv").write_text("a,b")
    runner = CliRunner()
    info = _json.loads(runner.invoke(app, ["cache", "info", "--json"]).stdout)
    sizes = {e["name"]: e["bytes"] for e in info["entries"]}
    assert sizes["demo-census-1.0"] == 5000 + len("put here by a user")
    assert sizes["ontology"] == 4
    cleared = runner.invoke(app, ["cache", "clear"])
    assert cleared.exit_code == 0
    assert "kept 3 file(s)" in cleared.stderr
    assert "notes.txt" in cleared.stderr
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if not p.is_dir())
    kept = ["demo-census-1.0/ms/notes.txt", "inputs-2024/data.csv", "mine.txt"]
    assert (demo / "ms" / "link").is_symlink()
    assert left == [".demo-census-1.0.files", *kept]
    (demo / "ms" / "notes.txt").unlink()
    (demo / "ms" / "link").unlink()
    assert runner.invoke(app, ["cache", "clear"]).exit_code == 0
    assert not demo.exists()
    assert not (tmp_path / ".demo-census-1.0.files").exists()


@pytest.mark.parametrize("module", ["atlasprep.cli.tokenize", "atlasprep.cli.slice"])
def test_a_commands_help_does_not_import_the_heavy_libraries(module):
    code = (
        f"import sys, {module}; heavy = [m for m in ('anndata', 'numba', 'tiledbsoma', 'dask', 'torch') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_version_imports_no_command():
    code = "import sys; sys.argv = ['atlasprep', '--version']; from atlasprep.cli import main; main()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert done.stdout.startswith("atlasprep ")
