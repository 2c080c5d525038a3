"""Every option is checked once, by its config, before any work: the CLI, a recipe (``run`` and
``run --dry-run``) and the Python API refuse the same values with one line naming the flag, the
recipe key or the field, and nothing is written. A recipe's outputs stay inside ``--out``; the
files it reads must exist; a recipe's ``[filter] where`` runs no code."""

# ruff: noqa: E501  (the tables of bad inputs read best one case a line)

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_clean_error
from typer.testing import CliRunner

from atlasprep.cli import app
from atlasprep.errors import UsageError
from atlasprep.run import load_recipe, plan_recipe
from atlasprep.slice import SliceConfig
from atlasprep.sources import SourceSpec
from atlasprep.tokenize.api import TokenizeConfig


@dataclass(frozen=True)
class Bad:
    """One bad value, as each face takes it; None where a face cannot say it."""

    id: str
    rule: str  # in every message
    cli: tuple[str, ...] | None  # tokenize/slice arguments
    flag: str  # the CLI names it so
    sets: tuple[str, ...] | None  # --set items on the base recipe
    key: str  # the recipe names it so
    api: dict[str, Any] | None  # TokenizeConfig keywords ("source": SourceSpec or SliceConfig keywords)
    field: str  # the Python API names it so
    command: str = "tokenize"


SOURCE_FIELDS = {f.name for f in dataclasses.fields(SourceSpec)}
AT_LEAST_1 = "must be at least 1"
SPLIT = "three fractions"
BAD = [
    Bad("shard_cells=0", AT_LEAST_1, ("--shard-cells", "0"), "--shard-cells 0", ("tokenize.shard_cells=0",),
        "[tokenize] shard_cells = 0", {"shard_cells": 0}, "shard_cells = 0"),
    Bad("shard_cells<0", AT_LEAST_1, ("--shard-cells", "-3"), "--shard-cells -3", ("tokenize.shard_cells=-3",),
        "[tokenize] shard_cells = -3", {"shard_cells": -3}, "shard_cells = -3"),
    Bad("shard_bytes=0", AT_LEAST_1, None, "", None, "", {"shard_bytes": 0}, "shard_bytes = 0"),
    Bad("shard_cells+shard_size", "not both", ("--shard-size", "1MB", "--shard-cells", "10"), "--shard-size",
        ("tokenize.shard_size='1MB'", "tokenize.shard_cells=10"), "[tokenize] shard_size",
        {"shard_bytes": 10**6, "shard_cells": 10}, "shard_bytes = 1000000"),
    Bad("batch_size=0", AT_LEAST_1, ("--batch-size", "0"), "--batch-size 0", ("source.batch_size=0",),
        "[source] batch_size = 0", {"source": {"batch_size": 0}}, "batch_size = 0"),
    Bad("slice batch_size=0", AT_LEAST_1, ("--batch-size", "0", "--dry-run"), "--batch-size 0",
        ("slice.batch_size=0",), "[slice] batch_size = 0", {"source": {"batch_size": 0}}, "batch_size = 0",
        command="slice"),
    Bad("max_cells=0", AT_LEAST_1, ("--max-cells", "0"), "--max-cells 0", ("source.max_cells=0",),
        "[source] max_cells = 0", {"source": {"max_cells": 0}}, "max_cells = 0"),
    Bad("slice max_cells<0", AT_LEAST_1, ("--max-cells", "-5", "--dry-run"), "--max-cells -5",
        ("slice.max_cells=-5",), "[slice] max_cells = -5", {"source": {"max_cells": -5}}, "max_cells = -5",
        command="slice"),
    Bad("per_group=0", "at least 1", ("--per-group", "cell_type=0", "--dry-run"), "--per-group",
        ("slice.per_group=['cell_type', 0]",), "[slice] per_group", {"source": {"per_group": ("cell_type", 0)}},
        "per_group", command="slice"),
    Bad("per_group no column", "obs column", None, "", ("slice.per_group=['', 5]",), "[slice] per_group",
        {"source": {"per_group": ("", 5)}}, "per_group", command="slice"),
    Bad("seed<0", "must be at least 0", ("--seed", "-1"), "--seed -1", ("tokenize.seed=-1",),
        "[tokenize] seed = -1", {"seed": -1}, "seed = -1"),
    Bad("source seed<0", "must be at least 0", ("--seed", "-7", "--dry-run"), "--seed -7",
        ("source.seed=-7",), "[source] seed = -7", {"source": {"seed": -7}}, "seed = -7", command="slice"),
    Bad("seed too big", "must be at most", None, "", None, "", {"seed": 2**64}, "seed = 18446744073709551616"),
    Bad("max_len=-5", "must be at least 1", ("--scheme", "raw", "--max-len", "0"), "--max-len 0",
        ("tokenize.max_len=-5",), "[tokenize] max_len = -5", {"max_len": -5, "scheme": "raw"}, "max_len = -5"),
    Bad("max_len too small for rank", "must be at least 3", ("--max-len", "2"), "--max-len 2",
        ("tokenize.scheme='rank'", "tokenize.max_len=2"), "[tokenize] max_len = 2", {"max_len": 2},
        "max_len = 2"),
    Bad("max_len huge", "must be at most", None, "", ("tokenize.max_len=4294967296",),
        "[tokenize] max_len = 4294967296", {"max_len": 2**32}, "max_len = 4294967296"),
    Bad("n_bins=0", "must be at least 3", ("--scheme", "bin", "--n-bins", "0"), "--n-bins 0",
        ("tokenize.n_bins=0",), "[tokenize] n_bins = 0", {"n_bins": 0}, "n_bins = 0"),
    Bad("n_bins=2", "must be at least 3", ("--scheme", "bin", "--n-bins", "2"), "--n-bins 2",
        ("tokenize.scheme='bin'", "tokenize.n_bins=2"), "[tokenize] n_bins = 2", {"n_bins": 2, "scheme": "bin"},
        "n_bins = 2"),
    Bad("n_hvg=0", AT_LEAST_1, ("--scheme", "bin", "--n-hvg", "0"), "--n-hvg 0",
        ("tokenize.scheme='bin'", "tokenize.n_hvg=0"), "[tokenize] n_hvg = 0", {"n_hvg": 0, "scheme": "bin"},
        "n_hvg = 0"),
    Bad("n_hvg without bin", "scheme", ("--n-hvg", "10"), "--n-hvg 10", ("tokenize.n_hvg=10",),
        "[tokenize] n_hvg = 10", {"n_hvg": 10}, "n_hvg = 10"),
    Bad("min_gene_match>1", "between 0 and 1", ("--min-gene-match", "1.5"), "--min-gene-match 1.5",
        ("tokenize.min_gene_match=1.5",), "[tokenize] min_gene_match = 1.5", {"min_gene_match": 1.5},
        "min_gene_match = 1.5"),
    Bad("min_gene_match<0", "between 0 and 1", ("--min-gene-match", "-0.1"), "--min-gene-match -0.1",
        ("tokenize.min_gene_match=-0.1",), "[tokenize] min_gene_match = -0.1", {"min_gene_match": -0.1},
        "min_gene_match = -0.1"),
    Bad("min_gene_match nan", "between 0 and 1", ("--min-gene-match", "nan"), "--min-gene-match nan",
        ("tokenize.min_gene_match=nan",), "[tokenize] min_gene_match = nan", {"min_gene_match": math.nan},
        "min_gene_match = nan"),
    Bad("split without split_by", "such as donor_id): name it", ("--split", "0.5,0.3,0.2"), "--split (0.5, 0.3, 0.2)",
        ("tokenize.split=[0.5, 0.3, 0.2]",), "[tokenize] split = (0.5, 0.3, 0.2)", {"split": (0.5, 0.3, 0.2)},
        "split = (0.5, 0.3, 0.2)"),
    Bad("split sum 0.9", SPLIT, ("--split-by", "donor_id", "--split", "0.5,0.3,0.1"), "--split (0.5, 0.3, 0.1)",
        ("tokenize.split_by='donor_id'", "tokenize.split=[0.5, 0.3, 0.1]"), "[tokenize] split = (0.5, 0.3, 0.1)",
        {"split_by": "donor_id", "split": (0.5, 0.3, 0.1)}, "split = (0.5, 0.3, 0.1)"),
    Bad("split negative", SPLIT, ("--split-by", "donor_id", "--split", "1.2,-0.1,-0.1"), "--split",
        ("tokenize.split_by='donor_id'", "tokenize.split=[1.2, -0.1, -0.1]"), "[tokenize] split",
        {"split_by": "donor_id", "split": (1.2, -0.1, -0.1)}, "split = (1.2, -0.1, -0.1)"),
    Bad("split nan", SPLIT, ("--split-by", "donor_id", "--split", "nan,0.5,0.5"), "--split (nan, 0.5, 0.5)",
        ("tokenize.split_by='donor_id'", "tokenize.split=[nan, 0.5, 0.5]"), "[tokenize] split = (nan, 0.5, 0.5)",
        {"split_by": "donor_id", "split": (math.nan, 0.5, 0.5)}, "split = (nan, 0.5, 0.5)"),
    Bad("split inf", SPLIT, None, "", ("tokenize.split_by='donor_id'", "tokenize.split=[inf, 0.0, 0.0]"),
        "[tokenize] split = (inf, 0.0, 0.0)", {"split_by": "donor_id", "split": (math.inf, 0.0, 0.0)},
        "split = (inf, 0.0, 0.0)"),
    Bad("holdout without split_by", "such as donor_id): name it", None, "", ("tokenize.holdout=['d1']",),
        "[tokenize] holdout = ('d1',)", {"holdout": ("d1",)}, "holdout = ('d1',)"),
    Bad("split_by empty", "non-empty", ("--split-by", ""), "--split-by ''", ("tokenize.split_by=''",),
        "[tokenize] split_by = ''", {"split_by": ""}, "split_by = ''"),
    # the CLI's --scheme and --format are choices typer checks (test_trust.py: the parser's refusals)
    Bad("scheme", "choose one of", None, "--scheme 'foo'", ("tokenize.scheme='foo'",),
        "[tokenize] scheme = 'foo'", {"scheme": "foo"}, "scheme = 'foo'"),
    Bad("format", "choose one of", None, "--format 'parquet'", ("tokenize.format='parquet'",),
        "[tokenize] format = 'parquet'", {"format": "parquet"}, "format = 'parquet'"),
    Bad("segment budget 0", AT_LEAST_1, ("--input", "x.h5mu", "--modalities", "rna,atac", "--max-len", "rna=8,atac=0"),
        "--max-len 0", ("tokenize.modalities=['atac']", "tokenize.max_len='rna=8,atac=0'"),
        "[tokenize] max_len = 0", {"modalities": ("atac",), "segment_max_len": (("atac", 0),)},
        "segment_max_len = 0"),
    Bad("segment budget for no modality", "modalities", None, "", ("tokenize.max_len='rna=16,atac=8'",),
        "[tokenize] max_len", {"segment_max_len": (("atac", 8),)}, "segment_max_len"),
    Bad("modality unknown", "choose one of", None, "", ("tokenize.modalities=['dna']",),
        "[tokenize] modalities = 'dna'", {"modalities": ("dna",)}, "modalities = 'dna'"),
    Bad("context empty name", "non-empty", ("--context", "assay,,tissue"), "--context ('assay', '', 'tissue')", ("tokenize.context=['']",), "[tokenize] context",
        {"context": ("",)}, "context = ('',)"),
    Bad("obs_columns empty name", "non-empty", ("--obs-columns", "donor_id,"), "--obs-columns ('donor_id', '')", ("tokenize.obs_columns=['donor_id', ' ']",),
        "[tokenize] obs_columns", {"obs_columns": ("donor_id", " ")}, "obs_columns"),
    Bad("missing token dictionary", "no such file", ("--token-dictionary", "/nonexistent/t.json"),
        "--token-dictionary '/nonexistent/t.json'", ("tokenize.token_dictionary='/nonexistent/t.json'",),
        "[tokenize] token_dictionary = '/nonexistent/t.json'", {"token_dictionary": Path("/nonexistent/t.json")},
        "token_dictionary = '/nonexistent/t.json'"),
    Bad("missing gene medians", "no such file", ("--gene-medians", "/nonexistent/m.json"),
        "--gene-medians '/nonexistent/m.json'", ("tokenize.gene_medians='/nonexistent/m.json'",),
        "[tokenize] gene_medians", {"gene_medians": Path("/nonexistent/m.json")}, "gene_medians"),
    Bad("missing gene mapping", "no such file", ("--gene-mapping", "/nonexistent/g.json"),
        "--gene-mapping '/nonexistent/g.json'", ("tokenize.gene_mapping='/nonexistent/g.json'",),
        "[tokenize] gene_mapping", {"gene_mapping": Path("/nonexistent/g.json")}, "gene_mapping"),
    Bad("two sources", "name exactly one source", ("--census", "demo"), "--census 'demo'",
        ("source.census='demo'",), "[source] census = 'demo'", {"source": {"census_uri": "/x"}}, "census = 'demo'"),
    Bad("slice out suffix", ".h5ad or .zarr", ("--out", "x.csv"), "--out", ("slice.out='x.csv'",),
        "[slice] out", {"source": {"out": Path("x.csv")}}, "out = 'x.csv'", command="slice"),
    Bad("unknown term", "no UBERON term", None, "", ("filter.tissue=['lungg']",), "[filter] tissue = 'lungg'", None, ""),
    Bad("by empty", "non-empty", ("--by", "", "--dry-run"), "--by", None, "", {"source": {"by": ("",)}}, "by = ('',)", command="slice"),
    Bad("batch_size bool", "whole number", None, "", None, "", {"source": {"batch_size": True}},
        "batch_size = True"),
]  # fmt: skip


@pytest.fixture
def recipe(tmp_path, small_census):
    """The base recipe (valid: it dry-runs), at tmp/r.toml; its run would write tmp/out."""
    path = tmp_path / "r.toml"
    path.write_text(
        f'name = "t"\nout = "out"\n[source]\ncensus_uri = "{small_census}"\nbatch_size = 100\n'
        '[filter]\nall_data = true\n[tokenize]\nscheme = "raw"\nmax_len = 64\n'
    )
    return path


def _files(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def test_the_base_recipe_and_the_defaults_are_valid(recipe, tmp_path):
    r = CliRunner().invoke(app, ["run", str(recipe), "--dry-run", "--set", "slice.out='s.h5ad'"])
    assert r.exit_code == 0, r.stderr
    assert not (tmp_path / "out").exists()
    SliceConfig(source=SourceSpec())
    TokenizeConfig(source=SourceSpec(), out=Path("x"))
    TokenizeConfig(source=SourceSpec(), out=Path("x"), shard_bytes=1, split_by="d", split=(1.0, 0.0, 0.0))


@pytest.mark.parametrize("bad", [b for b in BAD if b.cli is not None], ids=lambda b: b.id)
def test_the_cli_refuses_before_any_work(bad, tmp_path, small_census):
    out = tmp_path / ("store" if bad.command == "tokenize" else "s.h5ad")
    source = [] if "--input" in bad.cli else ["--census-uri", str(small_census)]
    args = [bad.command, *source, *bad.cli]
    if "--out" not in bad.cli:
        args += ["--out", str(out)]
    before = _files(tmp_path)
    line = assert_clean_error(CliRunner().invoke(app, args), codes=(2,), contains=bad.rule)
    assert bad.flag in line
    assert _files(tmp_path) == before  # no --out directory, no file


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
@pytest.mark.parametrize("bad", [b for b in BAD if b.sets is not None], ids=lambda b: b.id)
def test_a_recipe_refuses_the_same_values_in_a_run_and_a_dry_run(bad, dry_run, recipe, tmp_path):
    args = ["run", str(recipe), *(["--dry-run"] if dry_run else [])]
    for item in bad.sets or ():
        args += ["--set", item]
    before = _files(tmp_path)
    line = assert_clean_error(CliRunner().invoke(app, args), codes=(2,), contains=bad.rule)
    assert f"{recipe}: {bad.key}" in line
    assert _files(tmp_path) == before  # no out/, no stamp, no slice


@pytest.mark.parametrize("bad", [b for b in BAD if b.api is not None], ids=lambda b: b.id)
def test_the_python_api_refuses_the_same_values(bad, tmp_path):
    kwargs = dict(bad.api or {})
    source = kwargs.pop("source", {})
    spec = {k: v for k, v in source.items() if k in SOURCE_FIELDS}
    sliced = {k: v for k, v in source.items() if k not in SOURCE_FIELDS}

    def build() -> object:
        if sliced:
            return SliceConfig(source=SourceSpec(census="demo", **spec), **sliced)
        return TokenizeConfig(source=SourceSpec(census="demo", **spec), out=tmp_path / "store", **kwargs)

    with pytest.raises(UsageError, match=re.escape(bad.rule)) as caught:
        build()
    assert str(caught.value).startswith(bad.field)
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


# ---- recipe paths: outputs stay inside --out, inputs must exist ----------------------------------


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("../../x.h5ad", "leads out of"),
        ("../x.h5ad", "leads out of"),
        ("sub/../../x.h5ad", "leads out of"),
        ("{tmp}/abs.h5ad", "absolute path"),
        ("link/x.h5ad", "symlink"),
        ("link", "symlink"),
        ("", "path string"),
        ("tokens", "another stage"),
        ("recipe.resolved.json", "another stage"),
        (".stages/x.h5ad", "another stage"),
    ],
)
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_a_recipe_output_stays_inside_out(out, message, dry_run, recipe, tmp_path):
    root = tmp_path / "a" / "b"  # ../../x.h5ad would be tmp/x.h5ad
    root.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "link").symlink_to(elsewhere, target_is_directory=True)
    value = out.replace("{tmp}", str(tmp_path))
    args = ["run", str(recipe), "--out", str(root), "--set", f"slice.out='{value}'"]
    before = _files(tmp_path)
    line = assert_clean_error(
        CliRunner().invoke(app, [*args, *(["--dry-run"] if dry_run else [])]), codes=(2,), contains=message
    )
    assert f"{recipe}" in line
    assert "[slice] out" in line
    assert _files(tmp_path) == before
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "a\\b"])
def test_a_recipe_name_is_no_path(name, tmp_path, small_census):
    path = tmp_path / "a" / "b" / "r.toml"  # out/../../x would be tmp/a/x
    path.parent.mkdir(parents=True)
    path.write_text(
        f'name = "{name}"\n[source]\ncensus_uri = "{small_census}"\n[tokenize]\n'.replace("\\", "\\\\")
    )
    before = _files(tmp_path)
    for dry in ([], ["--dry-run"]):
        line = assert_clean_error(
            CliRunner().invoke(app, ["run", str(path), *dry]), codes=(2,), contains="name = "
        )
        assert str(path) in line
    assert _files(tmp_path) == before


def test_executor_options_are_checked_by_a_dry_run_too(recipe, tmp_path):
    r = CliRunner().invoke(app, ["run", str(recipe), "--dry-run", "--executor", "dask", "--workers", "0"])
    assert_clean_error(r, codes=(2,), contains="--workers")
    assert not (tmp_path / "out").exists()


def test_a_recipe_output_inside_out_is_where_it_says(recipe, tmp_path):
    plan = plan_recipe(load_recipe(recipe, ("slice.out='sub/cells.zarr'",), tmp_path / "o"))
    stage = next(s for s in plan.stages if s.name == "slice")
    assert stage.output == tmp_path / "o" / "sub" / "cells.zarr"
    assert stage.config.out == stage.output


MISSING = [
    ('[source]\ninput = ["nope.h5ad"]\n[tokenize]\n', "[source] input = "),
    ('[source]\ninput = ["nope.h5mu:rna"]\n[tokenize]\n', "[source] input = "),
    ('[source]\ncensus_uri = "nope_census"\n[tokenize]\n', "[source] census_uri = "),
    ('[source]\ncensus = "demo"\ngenes = "nope.txt"\n[slice]\n', "[source] genes = "),
    ('[source]\ncensus = "demo"\n[tokenize]\ntoken_dictionary = "nope.json"\n', "[tokenize] token_dictionary = "),
    ('[source]\ncensus = "demo"\n[tokenize]\ngene_medians = "nope.json"\n', "[tokenize] gene_medians = "),
    ('[source]\ncensus = "demo"\n[tokenize]\ngene_mapping = "nope.json"\n', "[tokenize] gene_mapping = "),
    ('[source]\ninput = ["{here}"]\n[harmonize]\nmapping = "nope.tsv"\n', "[harmonize] mapping = "),
    ('[source]\n[align.barcodes]\nrna = "nope.h5"\n[tokenize]\n', "[align.barcodes] rna = "),
    ('[source]\n[align.barcodes]\nrna = "{here}"\natac = "nope.h5:atac"\n[tokenize]\n', "[align.barcodes] atac = "),
    ('[source]\n[align.barcodes]\nrna = "{here}"\nbarcode_map = "nope.tsv"\n[tokenize]\n', "[align.barcodes] barcode_map = "),
    ('[source]\n[align.ccf]\nspatial = "nope.h5ad"\n[tokenize]\n', "[align.ccf] spatial = "),
    ('[source]\n[align.ccf]\nspatial = "{here}"\nregistration = "nope.json"\n[tokenize]\n', "[align.ccf] registration = "),
    ('[source]\n[align.ccf]\nspatial = "{here}"\ncrosswalk = "/nonexistent/c.csv"\n[tokenize]\n', "[align.ccf] crosswalk = "),
    ("[source]\n[tokenize]\n", "[source] needs census, census_uri or input"),
]  # fmt: skip


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
@pytest.mark.parametrize(("body", "key"), MISSING, ids=[k for _, k in MISSING])
def test_a_recipe_whose_inputs_are_missing_is_refused_before_anything(body, key, dry_run, tmp_path):
    here = tmp_path / "here.h5ad"
    here.write_bytes(b"")
    path = tmp_path / "r.toml"
    path.write_text('name = "t"\nout = "out"\n' + body.replace("{here}", str(here)))
    before = _files(tmp_path)
    r = CliRunner().invoke(app, ["run", str(path), *(["--dry-run"] if dry_run else [])])
    line = assert_clean_error(r, codes=(2,), contains=key)
    assert str(path) in line
    assert _files(tmp_path) == before


def test_absolute_input_paths_stay_allowed(tmp_path, small_census):
    path = tmp_path / "sub" / "r.toml"
    path.parent.mkdir()
    path.write_text(f'name = "t"\n[source]\ncensus_uri = "{small_census}"\n[tokenize]\nscheme = "raw"\n')
    plan = plan_recipe(load_recipe(path, (), tmp_path / "o"))
    assert plan.stages[-1].config.source.census_uri == str(small_census)


# ---- [filter] where: parsed, never evaluated -----------------------------------------------------


@pytest.fixture(scope="module")
def cells_h5ad(tmp_path_factory, small_census):
    """A small AnnData slice: a source whose filters pandas would evaluate."""
    from atlasprep.slice import slice_cells

    out = tmp_path_factory.mktemp("cells") / "cells.h5ad"
    slice_cells(SliceConfig(source=SourceSpec(census_uri=str(small_census), max_cells=50), out=out))
    return out


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_a_recipe_filter_runs_no_code(dry_run, cells_h5ad, tmp_path):
    pwned = tmp_path / "PWNED"
    path = tmp_path / "r.toml"
    where = f"@pd.io.common.os.system('touch {pwned}') == 0"
    path.write_text(
        f'name = "t"\nout = "out"\n[source]\ninput = ["{cells_h5ad}"]\n'
        f'[filter]\nall_data = true\nwhere = "{where}"\n[tokenize]\nscheme = "raw"\nmax_len = 16\n'
    )
    r = CliRunner().invoke(app, ["run", str(path), *(["--dry-run"] if dry_run else [])])
    assert not pwned.exists()
    line = assert_clean_error(r, codes=(2,))
    assert f"{path}: [filter] where" in line
    assert not (tmp_path / "out").exists()
