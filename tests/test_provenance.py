"""Every output carries one chain of steps: slice → harmonize → align → tokenize reads as one
list, each step with its command, configuration, versions, time and inputs (hashed files, the
Census with its build and the datasets to cite); nulls stay null."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from typer.testing import CliRunner

from atlasprep.cli import app
from atlasprep.provenance import PROVENANCE_KEY, read_steps
from atlasprep.shard import read_manifest


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_slice_harmonize_align_tokenize_is_one_chain(small_census, tmp_path):
    runner = CliRunner()
    sliced, harmonized, registered = tmp_path / "s.h5ad", tmp_path / "h.h5ad", tmp_path / "r.h5ad"
    steps = [
        [
            "slice",
            "--census-uri",
            str(small_census),
            "--tissue",
            "lung",
            "--max-cells",
            "60",
            "--out",
            str(sliced),
        ],
        ["harmonize", str(sliced), "--out", str(harmonized), "--set", "title=lung cells"],
    ]
    for args in steps:
        done = runner.invoke(app, args)
        assert done.exit_code == 0, done.output
    # a section needs coordinates: added in place, the chain kept in uns
    adata = ad.read_h5ad(harmonized)
    adata.obsm["spatial"] = np.random.default_rng(0).uniform(0, 500, (adata.n_obs, 2))
    adata.write_h5ad(harmonized)
    done = runner.invoke(
        app, ["align", "ccf", "--spatial", str(harmonized), "--neighbors", "4", "--out", str(registered)]
    )
    assert done.exit_code == 0, done.output
    done = runner.invoke(app, ["tokenize", str(registered), "--all-data", "--out", str(tmp_path / "store")])
    assert done.exit_code == 0, done.output

    chain = read_manifest(tmp_path / "store")["provenance"]
    assert [s["command"] for s in chain] == ["slice", "harmonize", "align ccf", "tokenize"]
    assert chain[0]["inputs"][0]["census_build"] is None or isinstance(
        chain[0]["inputs"][0]["census_build"], str
    )
    assert chain[0]["inputs"][0]["sha256"] is None  # a directory (the SOMA store) is not hashed
    assert chain[1]["inputs"][0] == {"path": str(sliced), "sha256": _sha(sliced)}
    assert chain[3]["inputs"][0]["sha256"] == _sha(registered)
    assert chain[0]["config"]["source"]["max_cells"] == 60
    assert all(s["atlasprep"] and "anndata" in s["versions"] for s in chain)
    assert all(s["time"] for s in chain[:3])
    assert chain[3]["time"] is None  # a store's bytes depend on its inputs and config only
    assert read_steps(registered) == chain[:3]  # each file carries the chain up to itself
    # nulls survive h5ad (a JSON string, not uns values)
    raw = json.loads(ad.read_h5ad(sliced).uns[PROVENANCE_KEY])
    assert raw[0]["config"]["source"]["genes"] is None
    # what to cite: the Census datasets the cells come from
    cited = runner.invoke(app, ["inspect", str(tmp_path / "store"), "--citations", "--json"])
    datasets = json.loads(cited.stdout)
    assert datasets
    assert all(d["collection_doi"] and d["dataset_title"] for d in datasets)
    assert {d["dataset_id"] for d in datasets} == set(ad.read_h5ad(sliced).obs["dataset_id"].astype(str))


def test_source_date_epoch_makes_outputs_byte_identical(tmp_path, monkeypatch):
    from conftest import shared_file

    src = shared_file("scrna/wu2020_200_v0_11.h5ad")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    runner = CliRunner()
    out = tmp_path / "out.h5ad"  # the same command twice (the output's path is recorded too)
    for name in ("a.h5ad", "b.h5ad"):
        done = runner.invoke(
            app, ["harmonize", str(src), "--out", str(out), "--map", "cluster_orig=cell_type"]
        )
        assert done.exit_code == 0, done.output
        out.rename(tmp_path / name)
    assert _sha(tmp_path / "a.h5ad") == _sha(tmp_path / "b.h5ad")
    assert read_steps(tmp_path / "a.h5ad")[0]["time"] == "2026-01-01T00:00:00+00:00"


def test_inputs_hashed_ahead_give_the_digest_of_the_file_as_recorded(tmp_path):
    import os

    from atlasprep.provenance import file_input, hash_ahead

    data = tmp_path / "cells.h5ad"
    data.write_bytes(os.urandom(3 << 20))
    hash_ahead([data, tmp_path])  # a directory is not hashed, ahead or not
    assert file_input(data)["sha256"] == _sha(data)
    assert file_input(tmp_path)["sha256"] is None
    # a file changed after its digest was started is hashed again, not given the old digest
    hash_ahead([data])
    data.write_bytes(b"changed since")
    os.utime(data, ns=(1, 1))
    assert file_input(data)["sha256"] == _sha(data)


def test_the_command_line_hashes_the_anndata_files_it_names_before_the_libraries_load(tmp_path):
    """``tokenize``/``slice``/``harmonize`` start hashing the existing .h5ad/.h5mu files among
    their arguments (positional, ``--input``, ``-i``, ``--input=``) as the process starts: not
    the value of ``--out``, not other files, nothing for ``--help`` or another command. The
    record then gives the file's own digest."""
    import os

    from atlasprep import _digests
    from atlasprep.cli._app import _hash_inputs_early
    from atlasprep.provenance import file_input

    files = {name: tmp_path / name for name in ("a.h5ad", "b.h5mu", "c.h5ad", "d.h5ad", "out.h5ad", "e.json")}
    for path in files.values():
        path.write_bytes(os.urandom(1 << 16))

    def started(argv: list[str]) -> set[str]:
        _digests._AHEAD.clear()
        _hash_inputs_early([argv[0]] if argv else None, argv)
        return {Path(key[0]).name for key in _digests._AHEAD}

    argv = [
        "tokenize", str(files["a.h5ad"]), "--input", str(files["b.h5mu"]), "-i", str(files["c.h5ad"]),
        f"--input={files['d.h5ad']}", "--out", str(files["out.h5ad"]),
        "--token-dictionary", str(files["e.json"]), str(tmp_path / "missing.h5ad"),
    ]  # fmt: skip
    assert started(argv) == {"a.h5ad", "b.h5mu", "c.h5ad", "d.h5ad"}
    assert file_input(files["a.h5ad"])["sha256"] == _sha(files["a.h5ad"])
    assert started(["slice", "-o", str(files["out.h5ad"]), "--input", str(files["a.h5ad"])]) == {"a.h5ad"}
    assert started(["harmonize", str(files["a.h5ad"]), "--help"]) == set()
    assert started(["validate", str(files["a.h5ad"])]) == set()
    assert started([]) == set()
    _digests._AHEAD.clear()


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 128, 200])
def test_a_files_digest_is_its_sha256_at_every_block_boundary(tmp_path, monkeypatch, size):
    """``sha256_file`` reads in steps of ``_BLOCK`` bytes (8 MiB; 64 here): any size, a step's
    edge included, gives the file's own sha256 (inputs and shards alike)."""
    import os

    from atlasprep import _digests
    from atlasprep.shard.format import sha256_of

    monkeypatch.setattr(_digests, "_BLOCK", 64)
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(size))
    assert _digests.sha256_file(path) == _sha(path)
    assert sha256_of(path) == _sha(path)
