"""One :class:`SourceSpec` names where cells come from and which; every stage honours all of it.

A spec's values are checked when it is made; :func:`select` is the one selection (filter,
per_group, max_cells, genes); tokenize selects exactly what slice selects; and in a recipe
with both stages the token store holds exactly the slice's cells and genes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from atlasprep.cli import app
from atlasprep.errors import UsageError
from atlasprep.run import load_recipe, plan_recipe, run_recipe
from atlasprep.shard import read_manifest, read_shard
from atlasprep.slice import SliceConfig, slice_cells
from atlasprep.sources import CellFilter, SourceSpec, open_source, read_gene_list, select
from atlasprep.tokenize.api import TokenizeConfig, tokenize_cells

CELL_TYPE = "cell_type_ontology_term_id"


@pytest.fixture(scope="module")
def var_ids(small_census) -> list[str]:
    source = open_source(SourceSpec(census_uri=str(small_census)))
    try:
        return [str(g) for g in source.var().index]
    finally:
        source.close()


@pytest.fixture
def gene_list(tmp_path, var_ids) -> tuple[Path, list[str]]:
    """A gene-list file: every 50th gene of var (one with a version suffix), a comment and an
    ID no source has."""
    wanted = var_ids[::50]
    path = tmp_path / "genes.txt"
    path.write_text("# genes to keep\n" + f"{wanted[0]}.7\n" + "\n".join(wanted[1:]) + "\nENSG99999999999\n")
    return path, wanted


def _store(store: Path) -> tuple[Any, pa.Table]:
    manifest = read_manifest(store)
    return manifest, pa.concat_tables(read_shard(store, shard["path"]) for shard in manifest["shards"])


def _vocab_genes(store: Path) -> set[str]:
    return {t for t in json.loads((store / "vocab.json").read_text()) if not t.startswith("<")}


def _contents(store: Path) -> dict[str, object]:
    """What a store holds, file by file: vocab.json's bytes, each shard's rows (obs strings as
    one Arrow type: the Census gives large_string, AnnData string) and the medians' values."""
    manifest, _ = _store(store)
    held: dict[str, object] = {"vocab.json": (store / "vocab.json").read_bytes()}
    for shard in manifest["shards"]:
        table = read_shard(store, shard["path"])
        schema = pa.schema(
            [pa.field(f.name, pa.string()) if f.type == pa.large_string() else f for f in table.schema]
        )
        held[shard["path"]] = table.cast(schema).to_pylist()
    medians = store / "gene_medians.parquet"
    if medians.exists():
        held[medians.name] = pq.read_table(medians).to_pylist()
    return held


# ---- the spec's values, checked when it is made ----------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_cells": 0}, "max_cells = 0: must be at least 1"),
        ({"max_cells": True}, "max_cells = True: must be a whole number"),
        (
            {"census": "demo", "inputs": ("a.h5ad",)},
            "census = 'demo' and inputs = ('a.h5ad',): name exactly one",
        ),
        ({"census_uri": ""}, "census_uri = '': must be a non-empty name"),
        ({"inputs": ("",)}, "inputs = ('',): each name must be a non-empty string"),
        ({"per_group": ("", 3)}, "per_group = ('', 3): name an obs column"),
        (
            {"per_group": (CELL_TYPE, 0)},
            f"per_group = ('{CELL_TYPE}', 0): the cells per group must be at least 1",
        ),
        ({"per_group": (CELL_TYPE,)}, "per_group = "),
        ({"genes": ()}, "genes = (): name at least one gene ID"),
        (
            {"genes": ("ENSG00000000003", " ")},
            "genes = ('ENSG00000000003', ' '): each gene ID must be a non-empty string",
        ),
        ({"seed": -1}, "seed = -1: must be at least 0"),
        ({"seed": 2**64}, "seed = 18446744073709551616: must be at most"),
        ({"batch_size": 0}, "batch_size = 0: must be at least 1"),
        ({"organism": " "}, "organism = ' ': name an organism"),
        ({"filter": "tissue == 'lung'"}, "filter = \"tissue == 'lung'\": must be a CellFilter"),
    ],
)
def test_a_spec_refuses_bad_values_naming_the_field(kwargs, message):
    with pytest.raises(UsageError) as caught:
        SourceSpec(**kwargs)
    assert str(caught.value).startswith(message)


def test_the_stages_configs_take_a_spec():
    SourceSpec()  # names no source yet: opening it says so
    with pytest.raises(UsageError, match="name exactly one source"):
        open_source(SourceSpec())
    with pytest.raises(UsageError, match=r"source = .*must be a SourceSpec"):
        SliceConfig(source=SliceConfig())  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"source = .*must be a SourceSpec"):
        TokenizeConfig(source=SliceConfig(), out=Path("x"))  # type: ignore[arg-type]


def test_a_gene_list_file(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("# a comment\n\nENSG00000000003\n  ENSG00000000005.2  \n")
    assert read_gene_list(path) == ("ENSG00000000003", "ENSG00000000005.2")
    with pytest.raises(UsageError, match=r"^genes = '.*nope.txt': no such file"):
        read_gene_list(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(UsageError, match=r"^genes = .*no gene IDs in it"):
        read_gene_list(tmp_path / "empty.txt")


# ---- select: the one selection -----------------------------------------------------------------


def _select(spec: SourceSpec):
    source = open_source(spec)
    try:
        selection = select(spec, source)
        groups = source.obs_values(selection.positions, [CELL_TYPE])[CELL_TYPE]
        everything = source.obs_values(source.select(selection.compiled), [CELL_TYPE])[CELL_TYPE]
        return selection, groups.value_counts(), everything.value_counts()
    finally:
        source.close()


def test_select_per_group_is_balanced_and_seeded(small_census):
    spec = SourceSpec(census_uri=str(small_census), per_group=(CELL_TYPE, 20), seed=3)
    selection, counts, available = _select(spec)
    assert selection.n_matched == available.sum() > selection.n_cells
    for group, n in available.items():
        assert counts.get(group, 0) == min(n, 20)  # every group, up to 20 cells each
    assert np.all(np.diff(selection.positions) > 0)  # storage order
    again, _, _ = _select(spec)
    other, _, _ = _select(SourceSpec(census_uri=str(small_census), per_group=(CELL_TYPE, 20), seed=4))
    assert np.array_equal(again.positions, selection.positions)
    assert not np.array_equal(other.positions, selection.positions)


def test_select_max_cells_caps_after_per_group(small_census):
    capped, _, _ = _select(SourceSpec(census_uri=str(small_census), max_cells=50))
    assert capped.n_cells == 50
    both, counts, _ = _select(
        SourceSpec(census_uri=str(small_census), per_group=(CELL_TYPE, 5), max_cells=60)
    )
    assert both.n_cells == 60
    assert counts.max() <= 5
    assert capped.var_positions is None  # no genes named: every gene


def test_select_genes_gives_var_positions(small_census, var_ids, caplog):
    wanted = (var_ids[30], f"{var_ids[7]}.12", var_ids[500], "ENSG99999999999")
    with caplog.at_level(logging.WARNING, logger="atlasprep.sources"):
        selection, _, _ = _select(SourceSpec(census_uri=str(small_census), genes=wanted, max_cells=5))
    assert selection.var_positions is not None
    assert selection.var_positions.tolist() == [7, 30, 500]  # sorted: var order
    assert "1 of 4 names are not in this source's var" in caplog.text
    with pytest.raises(UsageError, match=r"^genes = \('ENSG99999999999',\): none of its 1 IDs or symbols"):
        _select(SourceSpec(census_uri=str(small_census), genes=("ENSG99999999999",)))


def test_genes_by_symbol_where_var_has_feature_name(small_census):
    from atlasprep.sources import open_source

    source = open_source(SourceSpec(census_uri=str(small_census)))
    try:
        var = source.var()
    finally:
        source.close()
    symbols = [str(var["feature_name"].iloc[i]) for i in (3, 40)]
    mixed = (symbols[0], str(var.index[12]), symbols[1])
    selection, _, _ = _select(SourceSpec(census_uri=str(small_census), genes=mixed, max_cells=5))
    assert selection.var_positions is not None
    expected = sorted(
        {12, *np.flatnonzero(var["feature_name"].astype(str).isin(symbols).to_numpy()).tolist()}
    )
    assert selection.var_positions.tolist() == expected


# ---- tokenize honours the whole spec, as slice does --------------------------------------------


def test_tokenize_selects_what_slice_selects(small_census, tmp_path, gene_list):
    """Tokenizing with per_group, max_cells and genes writes the same store as slicing with that
    spec and tokenizing the slice: the same vocabulary, and the same rows in the same shards."""
    genes, wanted = gene_list
    spec = SourceSpec(
        census_uri=str(small_census),
        filter=CellFilter(primary_only=False),
        per_group=(CELL_TYPE, 6),
        max_cells=150,
        genes=read_gene_list(genes),
        seed=2,
    )
    sliced = slice_cells(SliceConfig(source=spec, out=tmp_path / "slice.h5ad"))
    assert sliced.n_cells == 150
    assert sliced.n_genes == len(wanted)
    for scheme in ("rank", "bin"):
        direct = tmp_path / f"direct-{scheme}"
        via = tmp_path / f"via-{scheme}"
        options = {"scheme": scheme, "max_len": 32, "split_by": "donor_id", "shard_cells": 40}
        tokenize_cells(TokenizeConfig(source=spec, out=direct, **options))
        read_back = SourceSpec(inputs=(str(sliced.out),), filter=CellFilter(primary_only=False))
        tokenize_cells(TokenizeConfig(source=read_back, out=via, **options))
        assert _contents(direct) == _contents(via)
        manifest, table = _store(direct)
        assert manifest["n_cells"] == 150
        assert sorted(table["cell_id"].to_pylist()) == sorted(ad.read_h5ad(sliced.out).obs_names)
        assert _vocab_genes(direct) == set(wanted)


def test_the_tokenize_cli_takes_per_group_and_genes(small_census, tmp_path, gene_list):
    genes, wanted = gene_list
    out = tmp_path / "store"
    args = ["tokenize", "--census-uri", str(small_census), "--scheme", "raw", "--max-len", "16"]
    r = CliRunner().invoke(
        app, [*args, "--per-group", f"{CELL_TYPE}=4", "--genes", str(genes), "--out", str(out)]
    )
    assert r.exit_code == 0, r.stderr
    _, table = _store(out)
    assert table.to_pandas()[CELL_TYPE].value_counts().max() <= 4
    assert _vocab_genes(out) == set(wanted)
    bad = CliRunner().invoke(
        app, [*args, "--genes", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "x")]
    )
    assert bad.exit_code == 2
    assert "--genes" in bad.stderr
    assert "no such file" in bad.stderr
    assert not (tmp_path / "x").exists()


# ---- a recipe: tokenize reads the slice the pipeline wrote ---------------------------------------


def test_a_recipe_with_per_group_genes_and_both_stages_tokenizes_exactly_the_slice(
    small_census, tmp_path, gene_list
):
    genes, wanted = gene_list
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'name = "t"\nout = "out"\n'
        f'[source]\ncensus_uri = "{small_census}"\nper_group = ["{CELL_TYPE}", 3]\ngenes = "{genes.name}"\n'
        "[filter]\nall_data = true\n"
        '[slice]\nout = "slice.h5ad"\n'
        '[tokenize]\nscheme = "raw"\nmax_len = 64\n'
    )
    plan = plan_recipe(load_recipe(recipe))
    tokenize = plan.stages[-1].config
    assert tokenize.source.inputs == (str(tmp_path / "out" / "slice.h5ad"),)
    assert tokenize.source.per_group is None  # the slice applied them
    assert tokenize.source.genes is None
    run_recipe(plan)
    out = tmp_path / "out"
    sliced = ad.read_h5ad(out / "slice.h5ad")
    manifest, table = _store(out / "tokens")
    assert 0 < sliced.n_obs < 1453  # sampled: up to 3 cells per cell type
    assert sliced.obs[CELL_TYPE].value_counts().max() <= 3
    assert manifest["n_cells"] == sliced.n_obs
    assert sorted(table["cell_id"].to_pylist()) == sorted(sliced.obs_names)
    assert list(sliced.var_names) == sorted(wanted, key=list(sliced.var_names).index)
    assert set(sliced.var_names) == set(wanted) == _vocab_genes(out / "tokens")


def test_a_recipe_gene_list_may_be_ids_and_slice_refuses_paired_modalities(small_census, tmp_path, var_ids):
    recipe = tmp_path / "r.toml"
    ids = ", ".join(f'"{g}"' for g in var_ids[:5])
    recipe.write_text(
        f'name = "t"\n[source]\ncensus_uri = "{small_census}"\ngenes = [{ids}]\n'
        '[slice]\n[tokenize]\nscheme = "raw"\n'
    )
    plan = plan_recipe(load_recipe(recipe))
    assert plan.stages[0].config.source.genes == tuple(var_ids[:5])
    mo = tmp_path / "mo.toml"
    mo.write_text(
        f'name = "t"\n[source]\ncensus_uri = "{small_census}"\n[slice]\n[tokenize]\nmodalities = ["atac"]\n'
    )
    with pytest.raises(UsageError, match=r"\[tokenize\] modalities/targets .* \[slice\]"):
        plan_recipe(load_recipe(mo))


def test_a_closed_soma_source_is_freed_with_what_it_cached(small_census):
    """A SOMA source's var and enumeration caches live on the source: once closed and dropped,
    nothing holds it (nor its TileDB context and threads), however often a process opens one
    (a StreamDataset opens one each epoch)."""
    import gc
    import weakref

    spec = SourceSpec(census_uri=str(small_census), filter=CellFilter(tissue=("lung",)))
    source = open_source(spec)
    assert select(spec, source).n_cells > 0  # the filter's enumerations, read and cached
    assert source.var() is source.var()
    assert source.distinct_values("tissue") is source.distinct_values("tissue")
    freed = weakref.ref(source)
    source.close()
    del source
    gc.collect()
    assert freed() is None


def test_configs_take_paths_as_strings_and_refuse_urls_and_other_values(tmp_path):
    """Python callers name files as strings: the stages' configs hold them as Paths; a URL (object
    storage goes through the command line) or a number is refused by name."""
    from atlasprep import HarmonizeConfig

    spec = SourceSpec(inputs=("a.h5ad",), filter=CellFilter(primary_only=False))
    (tmp_path / "tokens.json").write_text("{}")
    tokens = str(tmp_path / "tokens.json")
    config = TokenizeConfig(source=spec, out=str(tmp_path / "store"), token_dictionary=tokens)
    assert config.out == tmp_path / "store"
    assert config.token_dictionary == tmp_path / "tokens.json"
    assert config.gene_medians is None
    assert SliceConfig(source=spec, out=str(tmp_path / "s.h5ad")).out == tmp_path / "s.h5ad"
    assert HarmonizeConfig(source="a.h5ad", out=str(tmp_path / "h.h5ad")).out == tmp_path / "h.h5ad"
    with pytest.raises(UsageError, match=r"out = 's3://bucket/store': must be a local path here"):
        TokenizeConfig(source=spec, out="s3://bucket/store")
    with pytest.raises(UsageError, match=r"out = 3: must be a path"):
        SliceConfig(source=spec, out=3)  # type: ignore[arg-type]
