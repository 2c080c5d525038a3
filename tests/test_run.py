"""`atlasprep run`: every recipe loads and dry-runs; demo.toml runs; Dask gives the same bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_clean_error
from typer.testing import CliRunner

from atlasprep.cli import app
from atlasprep.run import load_recipe, plan_recipe
from atlasprep.run.recipe import RecipeError

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.toml"))


def test_the_recipes_the_issue_names_are_there():
    names = {p.stem for p in RECIPES}
    assert {"demo", "lung_immune", "liver_kidney_stream"} <= names


# recipes that read the user's own files: (the key named when they are missing, --set giving them)
YOURS = {
    "heart_ccf": ("[source] input", ("source.input=['{f}']", "align.ccf.spatial='{f}'")),
    "liver_zonation_multiome": (
        "[align.barcodes] rna",
        ("align.barcodes.rna='{f}'", "align.barcodes.atac='{f}'"),
    ),
}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_loads_and_dry_runs(recipe, tmp_path):
    args = ["run", str(recipe), "--dry-run", "--json", "--out", str(tmp_path / "o")]
    if recipe.stem in YOURS:  # without the data: exit 2 naming the key; with it: the plan
        key, sets = YOURS[recipe.stem]
        assert_clean_error(CliRunner().invoke(app, args), codes=(2,), contains=f"{key} = ")
        data = tmp_path / "yours.h5"
        data.write_bytes(b"")  # a dry run checks that the files are there; it does not read them
        for item in sets:
            args += ["--set", item.format(f=data)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["stages"]
    assert plan["pins"]["cellxgene_schema"] == "7.1.0"
    assert not (tmp_path / "o").exists()  # a dry run writes nothing


def test_demo_recipe_runs_end_to_end_resumes_and_pins(tmp_path):
    out = tmp_path / "demo"
    runner = CliRunner()
    demo = str(RECIPES[0].parent / "demo.toml")
    args = ["run", demo, "--out", str(out), "--set", "source.max_cells=3000", "--set", "tokenize.max_len=256"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.stderr
    manifest = json.loads((out / "tokens" / "manifest.json").read_text())
    assert manifest["tokenizer"]["max_len"] == 256
    assert manifest["tokenizer"]["shard_format"] == "zarr"
    assert set(manifest["splits"]["n_cells"]) == {"train", "val", "test"}
    resolved = json.loads((out / "recipe.resolved.json").read_text())
    assert resolved["pins"]["census"] == "demo"
    assert resolved["pins"]["census_build"]
    assert resolved["pins"]["ontologies"]["CL"]
    before = (out / "tokens" / "manifest.json").stat().st_mtime_ns
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.stderr
    assert "done already" in again.stderr
    assert (out / "tokens" / "manifest.json").stat().st_mtime_ns == before
    changed = runner.invoke(app, [*args[:-1], "tokenize.max_len=128"])
    assert changed.exit_code == 0, changed.stderr
    assert json.loads((out / "tokens" / "manifest.json").read_text())["tokenizer"]["max_len"] == 128


def test_a_stage_replaces_only_its_own_output_and_redoes_a_damaged_one(tmp_path, small_census):
    """A slice stage's output path holding a user's file is refused (run replaced it); after a
    run, a stage whose output was deleted, truncated or rewritten is redone, not "done already"."""
    recipe = tmp_path / "s.toml"
    recipe.write_text(
        f'name = "s"\nout = "o"\n[source]\ncensus_uri = "{small_census}"\nmax_cells = 40\n'
        '[filter]\nall_data = true\n[slice]\nout = "s.h5ad"\n'
    )
    (tmp_path / "o").mkdir()
    mine = tmp_path / "o" / "s.h5ad"
    mine.write_text("my notes")
    runner = CliRunner()
    refused = runner.invoke(app, ["run", str(recipe)])
    assert refused.exit_code == 2
    assert_clean_error(refused, contains="exists and no run of a recipe wrote it")
    assert mine.read_text() == "my notes"
    mine.unlink()
    assert runner.invoke(app, ["run", str(recipe)]).exit_code == 0
    again = runner.invoke(app, ["run", str(recipe)])
    assert "done already" in again.stderr
    size = mine.stat().st_size
    with open(mine, "r+b") as f:
        f.truncate(size // 2)
    redone = runner.invoke(app, ["run", str(recipe)])
    assert redone.exit_code == 0, redone.stderr
    assert "done already" not in redone.stderr
    assert mine.stat().st_size == size


def _recipe(tmp_path, small_census, body=""):
    path = tmp_path / "r.toml"
    path.write_text(
        f'name = "t"\n[source]\ncensus_uri = "{small_census}"\nbatch_size = 100\n[filter]\nall_data = true\n'
        '[tokenize]\nscheme = "bin"\nmax_len = 64\nsplit_by = "donor_id"\nshard_cells = 200\n' + body
    )
    return path


def test_dask_two_workers_give_the_same_bytes_as_local(tmp_path, small_census):
    pytest.importorskip("distributed")
    recipe = _recipe(tmp_path, small_census)
    runner = CliRunner()
    local = runner.invoke(app, ["run", str(recipe), "--out", str(tmp_path / "local")])
    assert local.exit_code == 0, local.stderr
    dask = runner.invoke(
        app, ["run", str(recipe), "--out", str(tmp_path / "dask"), "--executor", "dask", "--workers", "2"]
    )
    assert dask.exit_code == 0, dask.stderr
    a = (tmp_path / "local" / "tokens" / "manifest.json").read_bytes()
    b = (tmp_path / "dask" / "tokens" / "manifest.json").read_bytes()
    assert a == b  # shard checksums included
    for shard in json.loads(a)["shards"]:
        assert (tmp_path / "local" / "tokens" / shard["path"]).read_bytes() == (
            tmp_path / "dask" / "tokens" / shard["path"]
        ).read_bytes()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("max_lenght = 3\n", "[tokenize] has no key 'max_lenght'; did you mean 'max_len'?"),
        ("format = 'parquet'\n", "choose one of"),
        ("[tokenise]\n", "top level has no key 'tokenise'; did you mean 'tokenize'?"),
        ("split = [0.5, 0.5]\n", "needs 3 values"),
    ],
)
def test_bad_recipes_name_file_table_and_key(tmp_path, small_census, body, message):
    recipe = _recipe(tmp_path, small_census, body)
    with pytest.raises(RecipeError) as caught:
        plan_recipe(load_recipe(recipe))
    assert str(recipe) in str(caught.value)
    assert message in str(caught.value)
    r = CliRunner().invoke(app, ["run", str(recipe), "--dry-run"])
    assert r.exit_code == 2
    assert r.stderr.startswith("Error:")


def test_set_overrides_parse_toml_values_and_executor_options_are_checked(tmp_path, small_census):
    recipe = load_recipe(
        _recipe(tmp_path, small_census), ("tokenize.context=['assay']", "filter.tissue=lung")
    )
    plan = plan_recipe(recipe)
    tokenize = plan.stages[-1].config
    assert tokenize.context == ("assay",)
    assert tokenize.source.filter.tissue == ("lung",)
    r = CliRunner().invoke(app, ["run", str(recipe.path), "--workers", "2"])
    assert r.exit_code == 2
    assert "--executor dask" in r.stderr


def test_a_spatial_recipe_bins_real_coordinates_into_context_tokens(tmp_path):
    import pyarrow as pa
    from conftest import shared_file

    loom = shared_file("spatial/starmap/mpfc-starmap.loom")
    recipe = tmp_path / "starmap.toml"
    recipe.write_text(
        f'name = "starmap"\n[source]\ninput = ["{loom}"]\norganism = "Mus musculus"\n'
        "[filter]\nall_data = true\n"
        "[align.ccf]\nneighbors = 6\nbin_size = 0.5\n"
        '[tokenize]\nscheme = "raw"\nmax_len = 64\ncontext = ["spatial_bin"]\nshard_cells = 1000\n'
    )
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out)])
    assert r.exit_code == 0, r.stderr
    import anndata as ad

    registered = ad.read_h5ad(out / "registered.h5ad")
    assert registered.obsp["spatial_connectivities"].shape == (3704, 3704)
    manifest = json.loads((out / "tokens" / "manifest.json").read_text())
    vocab = json.loads((out / "tokens" / "vocab.json").read_text())
    names = {i: t for t, i in vocab.items()}
    shard = out / "tokens" / manifest["shards"][0]["path"]
    with pa.memory_map(str(shard)) as source:
        first = pa.ipc.open_stream(source).read_all()["input_ids"].to_pylist()
    assert all(names[cell[0]].startswith("<spatial_bin:x") for cell in first)
    bins = {t for t in vocab if t.startswith("<spatial_bin:") and t != "<spatial_bin:<unk>>"}
    assert len(bins) == registered.obs["spatial_bin"].nunique() > 1


def test_heart_ccf_recipe_runs_on_a_section_placed_in_the_septum_block(tmp_path):
    import anndata as ad
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import scipy.sparse as sp
    from conftest import shared_file

    shared_file("hra/VH_F_Heart.glb")
    rng = np.random.default_rng(0)
    ij = np.stack(np.meshgrid(np.arange(20), np.arange(20), indexing="ij"), -1).reshape(-1, 2)
    genes = [f"ENSG{i:011d}" for i in range(1, 201)]
    section = tmp_path / "section.h5ad"
    ad.AnnData(
        X=sp.csr_matrix(rng.poisson(0.5, (len(ij), len(genes))).astype(np.float32)),
        obs=pd.DataFrame(index=[f"spot{k}" for k in range(len(ij))]),
        var=pd.DataFrame(index=genes),
        obsm={"spatial": ij[:, ::-1] * 10.0},
    ).write_h5ad(section)
    recipe = RECIPES[0].parent / "heart_ccf.toml"
    overrides = [
        f'source.input=["{section}"]',
        f'align.ccf.spatial="{section}"',
        "align.ccf.pixel_size=60.0",
        "tokenize.max_len=32",
    ]
    args = ["run", str(recipe), "--out", str(tmp_path / "o")]
    for item in overrides:
        args += ["--set", item]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.stderr
    tokens = tmp_path / "o" / "tokens"
    manifest = json.loads((tokens / "manifest.json").read_text())
    assert manifest["n_cells"] == 400
    names = {i: t for t, i in json.loads((tokens / "vocab.json").read_text()).items()}
    with pa.memory_map(str(tokens / manifest["shards"][0]["path"])) as source:
        cells = pa.ipc.open_stream(source).read_all()["input_ids"].to_pylist()
    septum = "<anatomical_structure_ontology_term_id:UBERON:0002094>"  # interventricular septum
    assert all(names[cell[0]] == "<cls>" and names[cell[1]] == septum for cell in cells)
    assert all(names[cell[2]].startswith("<spatial_bin:") for cell in cells)


def test_a_multiome_recipe_aligns_then_tokenizes_rna_and_atac(tmp_path):
    from conftest import shared_file

    src = shared_file("multiome/test_rna_atac.h5mu")
    recipe = tmp_path / "mo.toml"
    recipe.write_text(
        'name = "mo"\n[source]\n[filter]\nall_data = true\n'
        f'[align.barcodes]\nrna = "{src}:rna"\natac = "{src}:atac"\nmin_match = 0.9\n'
        '[tokenize]\nscheme = "rank"\nmax_len = "rna=16,atac=8"\nmodalities = ["atac"]\n'
    )
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out)])
    assert r.exit_code == 0, r.stderr
    manifest = json.loads((out / "tokens" / "manifest.json").read_text())
    assert manifest["n_cells"] == 1000
    assert manifest["tokenizer"]["segments"]["atac"]["budget"] == 8
    resolved = json.loads((out / "recipe.resolved.json").read_text())
    assert [s["stage"] for s in resolved["stages"]] == ["align.barcodes", "tokenize"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            '[source]\ninputs = ["a.h5ad"]\n[tokenize]\n',
            "[source] inputs: the key is input now (the flag's name, --input)",
        ),
        (
            '[source]\ncensus = "demo"\nlayer = "raw"\n[tokenize]\n',
            "[source] layer: the key is counts_layer now",
        ),
        (
            '[source]\ncensus = "demo"\n[tokenize]\nshuffle = false\n',
            "[tokenize] shuffle: the key is no_shuffle now",
        ),
        (
            '[source]\ncensus = "demo"\n[tokenize]\nsegment_max_len = [["atac", 8]]\n',
            '[tokenize] segment_max_len: give it as max_len = "rna=1536,atac=512", as --max-len',
        ),
        (
            '[source]\ncensus = "demo"\n[align.ccf]\nspatial = "s.h5ad"\npixel_size_um = 0.5\n[tokenize]\n',
            "[align.ccf] pixel_size_um: the key is pixel_size now (the flag's name, --pixel-size)",
        ),
        (
            '[source]\ncensus = "demo"\n[tokenize]\nmax_len = "rna=x"\n',
            "[tokenize] max_len = 'rna=x': expected a number",
        ),
    ],
)
def test_recipe_keys_are_the_flags_names(tmp_path, body, message):
    from atlasprep.run import load_recipe

    recipe = tmp_path / "r.toml"
    recipe.write_text(body)
    with pytest.raises(RecipeError) as err:
        load_recipe(recipe)
    assert message in str(err.value)


def test_flag_named_keys_reach_the_configs(tmp_path):
    from atlasprep.run import load_recipe, plan_recipe

    recipe = tmp_path / "r.toml"
    recipe.write_text(
        '[source]\ncensus = "demo"\ncounts_layer = "raw"\n[tokenize]\nno_shuffle = true\nmax_len = 96\n'
    )
    stages = {s.name: s for s in plan_recipe(load_recipe(recipe)).stages}
    config = stages["tokenize"].config
    assert config.shuffle is False
    assert config.max_len == 96
    assert config.source.layer == "raw"


def test_a_train_stage_trains_on_the_recipes_store_with_balanced_sampling(small_census, tmp_path):
    recipe = tmp_path / "t.toml"
    recipe.write_text(
        f'name = "t"\n[source]\ncensus_uri = "{small_census}"\nmax_cells = 300\n'
        '[tokenize]\nmax_len = 48\nsplit_by = "donor_id"\n'
        '[train]\nsteps = 4\nbatch_size = 8\nmax_len = 48\nsampling = "balanced:cell_type"\n'
    )
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out)])
    assert r.exit_code == 0, r.stderr
    record = json.loads((out / "model" / "train.json").read_text())
    assert len(record["losses"]) == 4
    assert record["sampling"] == "balanced:cell_type"
    assert record["store"] == str(out / "tokens")
    assert (out / "model" / "model.pt").stat().st_size > 0
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[source]\ncensus_uri = "{small_census}"\n[tokenize]\n[train]\nsteps = 0\n')
    refused = CliRunner().invoke(app, ["run", str(bad), "--dry-run"])
    assert refused.exit_code == 2
    assert "[train] steps = 0: must be at least 1" in refused.output


@pytest.mark.parametrize(
    ("tokenize", "missing"),
    [
        ('split_by = "donr_id"', "donr_id"),
        ('context = ["assy"]', "assy"),
        ('split_by = "donor_id"\nstratify = "celltype"', "celltype"),
        ('split_by = "donor_id"\nholdout = ["dev=adult"]', "dev"),
    ],
)
def test_a_dry_run_refuses_the_obs_columns_the_run_would(small_census, tmp_path, tokenize, missing):
    """A column the tokenize stage reads that the source lacks: the dry run refuses it as the
    run does, and the run refuses it before its first pass (no fit, no store)."""
    import atlasprep.tokenize.api as api

    recipe = tmp_path / "r.toml"
    recipe.write_text(f'name = "r"\n[source]\ncensus_uri = "{small_census}"\n[tokenize]\n{tokenize}\n')
    out = tmp_path / "o"
    dry = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out), "--dry-run"])
    assert_clean_error(dry, codes=(2,), contains=f"obs has no column {missing} (it has: ")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(api, "fit", lambda *a, **k: pytest.fail("a pass over the cells ran"))
        ran = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out)])
    assert_clean_error(ran, codes=(2,), contains=f"obs has no column {missing} (it has: ")
    assert not (out / "tokens").exists()
