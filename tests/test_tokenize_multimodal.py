"""Multimodal tokens on aligned MuData: RNA then an ATAC or protein segment, or protein targets."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from conftest import shared_file
from typer.testing import CliRunner

from atlasprep.align.barcodes import align_barcodes
from atlasprep.cli import app
from atlasprep.shard import validate_store


def _store(out):
    manifest = json.loads((out / "manifest.json").read_text())
    tables = []
    for shard in manifest["shards"]:
        with pa.memory_map(str(out / shard["path"])) as source:
            tables.append(pa.ipc.open_stream(source).read_all())
    vocab = json.loads((out / "vocab.json").read_text())
    return manifest, pa.concat_tables(tables), {i: t for t, i in vocab.items()}


def _read_mod(path, name):
    import h5py
    from anndata.io import read_elem

    with h5py.File(path, "r") as f:
        return read_elem(f["mod"][name])


@pytest.fixture(scope="module")
def multiome(tmp_path_factory):
    src = shared_file("multiome/test_rna_atac.h5mu")
    out = tmp_path_factory.mktemp("mo") / "mo.h5mu"
    align_barcodes(f"{src}:rna", atac=f"{src}:atac", out=out)
    return out


def test_rna_then_atac_segment_within_budgets_ranked_by_tf_idf(multiome, tmp_path):
    runner = CliRunner()
    args = ["tokenize", "--input", str(multiome), "--modalities", "rna,atac", "--max-len", "rna=24,atac=12"]
    args += ["--scheme", "rank", "--all-data", "--shard-cells", "300"]
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.stderr
    manifest, table, names = _store(tmp_path / "a")
    assert manifest["n_cells"] == 1000
    assert manifest["tokenizer"]["segments"]["atac"]["budget"] == 12
    atac = _read_mod(multiome, "atac")
    X = atac.X.tocsr().astype(np.float64)
    n_with = np.bincount(X.indices[X.data != 0], minlength=X.shape[1])
    idf = np.log(1 + X.shape[0] / (1 + n_with))
    row_of = {b: i for i, b in enumerate(atac.obs_names)}
    peaks = list(atac.var_names)
    for ids, types, cell in zip(
        table["input_ids"].to_pylist(),
        table["token_type"].to_pylist(),
        table["cell_id"].to_pylist(),
        strict=True,
    ):
        tokens = [names[i] for i in ids]
        assert tokens[0] == "<cls>"
        assert tokens[-1] == "<eos>"
        sep = tokens.index("<sep:atac>")
        assert sep <= 23  # <cls> + at most 22 genes
        assert types[1:sep] == [1] * (sep - 1)
        got = tokens[sep + 1 : -1]
        assert len(got) <= 12
        assert set(types[sep + 1 : -1]) <= {2}
        row = X[row_of[cell]]
        scores = np.log1p(row.data / row.data.sum() * 1e4) * idf[row.indices]
        order = np.argsort(-scores, kind="stable")[:12]
        assert got == [f"peak:{peaks[row.indices[j]]}" for j in order]
    assert validate_store(tmp_path / "a") == []
    again = runner.invoke(app, [*args, "--out", str(tmp_path / "b")])
    assert again.exit_code == 0, again.stderr
    first = json.loads((tmp_path / "a" / "manifest.json").read_text())["shards"]
    second = json.loads((tmp_path / "b" / "manifest.json").read_text())["shards"]
    assert [s["sha256"] for s in first] == [s["sha256"] for s in second]


def test_rna_then_protein_by_clr_and_protein_targets(tmp_path):
    tar = shared_file("citeseq/pbmc_10k_protein_v3/filtered_feature_bc_matrix.tar.gz")
    aligned = tmp_path / "cite.h5mu"
    report = align_barcodes(str(tar), protein=str(tar), out=aligned)
    assert report.n_obs == 1024
    r = CliRunner().invoke(
        app,
        ["tokenize", "--input", str(aligned), "--modalities", "rna,prot", "--targets", "prot",
         "--scheme", "raw", "--max-len", "rna=32,prot=5", "--all-data", "--out", str(tmp_path / "t")],
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    manifest, table, names = _store(tmp_path / "t")
    prot = _read_mod(aligned, "prot")
    logged = np.log1p(prot.X.toarray().astype(np.float64))
    clr = logged - logged.mean(axis=1, keepdims=True)
    row_of = {b: i for i, b in enumerate(prot.obs_names)}
    features = manifest["tokenizer"]["targets"]["prot"]["features"]
    assert features == list(prot.var_names)
    for ids, values, target, cell in zip(
        table["input_ids"].to_pylist()[:100],
        table["values"].to_pylist()[:100],
        table["target_prot"].to_pylist()[:100],
        table["cell_id"].to_pylist()[:100],
        strict=True,
    ):
        want = clr[row_of[cell]]
        np.testing.assert_allclose(target, want, rtol=1e-6, atol=1e-6)
        sep = [names[i] for i in ids].index("<sep:prot>")
        order = np.argsort(-want, kind="stable")[:5]
        assert [names[i] for i in ids[sep + 1 :]] == [f"prot:{prot.var_names[j]}" for j in order]
        np.testing.assert_allclose(values[sep + 1 :], want[order], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--modalities", "atac,rna"], "RNA comes first"),
        (["--max-len", "rna=8,prot=4"], "--modalities"),
        (["--modalities", "rna,atac", "--max-len", "rna=8,prot=4"], "not in --modalities"),
    ],
)
def test_bad_multimodal_options_are_usage_errors(multiome, tmp_path, args, message):
    r = CliRunner().invoke(app, ["tokenize", "--input", str(multiome), "--out", str(tmp_path / "x"), *args])
    assert r.exit_code == 2, r.stderr
    assert message in r.stderr
