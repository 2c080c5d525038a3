"""Linked splits end to end: a store split by donor *and* dataset with a tissue holdout, and
`inspect --leaks` finding the values a donor-only split leaves on two sides."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from atlasprep.cli import app
from atlasprep.errors import UsageError
from atlasprep.shard import read_manifest, read_shard
from atlasprep.shard.format import format_for
from atlasprep.shard.store import find_leaks, validate_store
from atlasprep.shard.writer import write_shard
from atlasprep.sources import SourceSpec
from atlasprep.tokenize.api import TokenizeConfig

_LUNG_TERMS = {"UBERON:0002048", "UBERON:0008953", "UBERON:0008952"}  # lung and its two lobes
BASE = ["--scheme", "bin", "--max-len", "32", "--shard-cells", "200", "--all-data"]


@pytest.fixture(scope="module")
def linked(small_census, tmp_path_factory) -> Path:
    """All cells (the atlas dataset re-contains donors: donors span datasets), split by donor and
    dataset, lung held out."""
    out = tmp_path_factory.mktemp("linked") / "store"
    args = ["tokenize", "--census-uri", str(small_census), *BASE, "--out", str(out)]
    args += ["--split-by", "donor_id,dataset_id", "--holdout", "tissue=lung", "--split", "0.6,0.2,0.2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def donor_only(small_census, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("donor") / "store"
    args = ["tokenize", "--census-uri", str(small_census), *BASE, "--split-by", "donor_id", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def _cells(store: Path) -> list[dict]:
    return [
        {**row, "split": shard["split"]}
        for shard in read_manifest(store)["shards"]
        for row in read_shard(store, shard["path"])
        .select(["donor_id", "dataset_id", "tissue_ontology_term_id"])
        .to_pylist()
    ]


def test_no_donor_and_no_dataset_on_two_sides_and_lung_in_test(linked):
    cells = _cells(linked)
    for column in ("donor_id", "dataset_id"):
        sides: dict[str, set[str]] = {}
        for cell in cells:
            sides.setdefault(cell[column], set()).add(cell["split"])
        assert all(len(s) == 1 for s in sides.values()), column
    # every lung cell (the term and its lobes: descendants) is in test
    assert {c["split"] for c in cells if c["tissue_ontology_term_id"] in _LUNG_TERMS} == {"test"}
    splits = read_manifest(linked)["splits"]
    assert splits["columns"] == ["donor_id", "dataset_id"]
    assert splits["components"]["n"] >= 2
    # donors that span datasets made components larger than any one donor or dataset
    assert len(splits["components"]["largest"]) > 2
    (rule,) = splits["holdout"]
    assert rule["term"] == "UBERON:0002048"
    assert rule["n_values"] > 100
    assert rule["n_cells"] == sum(c["tissue_ontology_term_id"] in _LUNG_TERMS for c in cells)
    assert validate_store(linked) == []


def test_inspect_reports_the_plan_and_no_leaks(linked):
    runner = CliRunner()
    shown = runner.invoke(app, ["inspect", str(linked)])
    assert shown.exit_code == 0
    assert "linked groups:" in shown.output
    assert "held out: tissue=lung" in shown.output
    as_json = json.loads(runner.invoke(app, ["inspect", str(linked), "--json"]).stdout)
    assert as_json["split_plan"]["columns"] == ["donor_id", "dataset_id"]
    clean = runner.invoke(app, ["inspect", str(linked), "--leaks", "donor_id,dataset_id", "--json"])
    assert clean.exit_code == 0
    assert json.loads(clean.stdout)["leaks"] == []


def test_leaks_finds_datasets_a_donor_split_leaves_on_two_sides(donor_only):
    assert find_leaks(donor_only, ["donor_id"]) == []
    leaks = find_leaks(donor_only, ["dataset_id"])
    assert leaks
    cells = _cells(donor_only)
    for leak in leaks:
        assert len(leak.n_cells) >= 2
        for split, n in leak.n_cells.items():
            assert n == sum(c["dataset_id"] == leak.value and c["split"] == split for c in cells)
    result = CliRunner().invoke(app, ["inspect", str(donor_only), "--leaks", "donor_id,dataset_id", "--json"])
    assert result.exit_code == 1
    reported = json.loads(result.stdout)["leaks"]
    assert {(r["column"], r["value"]) for r in reported} == {("dataset_id", leak.value) for leak in leaks}
    missing = CliRunner().invoke(app, ["inspect", str(donor_only), "--leaks", "nope"])
    assert missing.exit_code == 2  # a bad column is a usage error, not a leak
    assert "no column 'nope'" in missing.output


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"split_by": "donor_id,donor_id"}, "split_by = 'donor_id,donor_id': name each column once"),
        ({"split_by": ["donor_id", ""]}, "split_by"),
        ({"stratify": "cell_type_ontology_term_id"}, "stratify = 'cell_type_ontology_term_id': applies to"),
        ({"split_fallback": True}, "split_fallback = True: applies to"),
        ({"split_by": "donor_id", "holdout_exact": True}, "holdout_exact = True: applies to holdout terms"),
        ({"split_by": ("donor_id", "dataset_id"), "holdout": ("D1",)}, "holdout = 'D1': name its column"),
    ],
)
def test_split_config_refusals(fields, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        TokenizeConfig(source=SourceSpec(), out=Path("x"), **fields)


def test_split_by_forms():
    make = lambda by: TokenizeConfig(source=SourceSpec(), out=Path("x"), split_by=by).split_by  # noqa: E731
    assert make("donor_id") == "donor_id"
    assert make("donor_id, dataset_id") == ("donor_id", "dataset_id")
    assert make(["donor_id", "dataset_id"]) == ("donor_id", "dataset_id")  # a recipe's TOML list
    assert make(["donor_id"]) == "donor_id"


def test_validate_says_when_the_shards_lack_a_split_column(small_census, tmp_path, caplog):
    """A store built without its split column kept: validate cannot check that column's leakage,
    and says so (it passed the store in silence)."""
    from atlasprep.tokenize.api import tokenize_cells

    out = tmp_path / "store"
    source = SourceSpec(census_uri=str(small_census), max_cells=300)
    config = TokenizeConfig(source=source, out=out, scheme="bin", max_len=32, split_by="donor_id")
    tokenize_cells(replace(config, obs_columns=("cell_type_ontology_term_id",)))
    with caplog.at_level("WARNING", logger="atlasprep"):
        assert validate_store(out) == []
    assert [r.getMessage() for r in caplog.records] == [
        f"{out}: the shards hold no column donor_id (a split column), so its leakage was not checked; "
        "keep it in the store (obs_columns) to have it checked"
    ]
    caplog.clear()
    kept = tmp_path / "kept"
    tokenize_cells(replace(config, out=kept))
    with caplog.at_level("WARNING", logger="atlasprep"):
        assert validate_store(kept) == []
    assert caplog.records == []


def _tampered(store: Path, tmp_path: Path, edit: Callable[[pa.Table, pa.Table], pa.Table]) -> Path:
    """A copy of ``store`` whose first train shard is ``edit(train, test)`` (its first test
    shard's rows as ``test``), written and listed as atlasprep writes shards: every checksum
    and count in the manifest still holds."""
    copy = tmp_path / "tampered"
    shutil.copytree(store, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    train = next(s for s in manifest["shards"] if s["split"] == "train")
    test = next(s for s in manifest["shards"] if s["split"] == "test")
    table = edit(read_shard(copy, train["path"]), read_shard(copy, test["path"]))
    fmt = format_for(copy / train["path"])
    train.update(write_shard(copy, Path(train["path"]).name, "train", fmt, table, "input_ids").to_json())
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def _set(table: pa.Table, column: str, row: int, value: str) -> pa.Table:
    values = table[column].to_pylist()
    values[row] = value
    return table.set_column(table.column_names.index(column), column, pa.array(values, type=pa.string()))


def test_validate_finds_a_held_out_term_outside_test(linked, tmp_path):
    # a train cell given a lung lobe (a descendant of the held-out lung) by hand
    lobe = "UBERON:0008953"
    copy = _tampered(linked, tmp_path, lambda train, test: _set(train, "tissue_ontology_term_id", 0, lobe))
    held = f"(tissue_ontology_term_id {lobe!r}: 1)"
    assert [p.what for p in validate_store(copy)] == [
        f"holdout tissue=lung: 1 train cell(s) hold a value it holds out {held}"
    ]
    (rule,) = read_manifest(linked)["splits"]["holdout"]
    assert len(rule["values"]) == rule["n_values"]
    assert {"UBERON:0002048", lobe} <= set(rule["values"])


def test_validate_finds_a_cell_held_twice(linked, tmp_path):
    # a train cell renamed as a test cell: the same cell on two sides
    def twice(train: pa.Table, test: pa.Table) -> pa.Table:
        return _set(train, "cell_id", 0, test["cell_id"][0].as_py())

    copy = _tampered(linked, tmp_path, twice)
    cell = read_shard(copy, next(s for s in read_manifest(copy)["shards"] if s["split"] == "test")["path"])
    assert [p.what for p in validate_store(copy)] == [
        f"cell_id {cell['cell_id'][0].as_py()!r} is held by 1 test row and 1 train row (two splits)"
    ]
    result = CliRunner().invoke(app, ["validate", str(copy)])
    assert result.exit_code == 1
    assert "is held by 1 test row and 1 train row" in result.output


def test_validate_finds_a_cell_twice_in_one_split(linked, tmp_path):
    copy = _tampered(
        linked, tmp_path, lambda train, test: _set(train, "cell_id", 1, train["cell_id"][0].as_py())
    )
    (problem,) = validate_store(copy)
    assert problem.what.endswith("is held by 2 train rows")


def test_validate_says_when_a_holdout_cannot_be_checked(linked, tmp_path, caplog):
    # a store built before the held-out values were recorded
    copy = tmp_path / "older"
    shutil.copytree(linked, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["splits"]["holdout"][0]["values"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level("WARNING", logger="atlasprep"):
        assert validate_store(copy) == []
    assert [r.getMessage() for r in caplog.records] == [
        f"{copy}: the manifest does not list the values of holdout tissue=lung (a store built before they "
        "were recorded), so it was not checked; rebuild the store to have it checked"
    ]
