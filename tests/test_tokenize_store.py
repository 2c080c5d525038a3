"""`tokenize` end to end: a store whose cells equal the encoder's, split by group, byte-stable, crash-safe."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp
from conftest import demo_cells, shared_file
from typer.testing import CliRunner

from atlasprep.cli import app
from atlasprep.errors import OutputExistsError
from atlasprep.sources import CellFilter, SourceSpec, open_census, resolve_filter
from atlasprep.tokenize import RankEncoder, load_json_dict
from atlasprep.tokenize.api import TokenizeConfig, tokenize_cells


def _cells(store):
    manifest = json.loads((store / "manifest.json").read_text())
    tables = []
    for shard in manifest["shards"]:
        with pa.memory_map(str(store / shard["path"])) as source:
            tables.append(pa.ipc.open_stream(source).read_all())
    return manifest, pa.concat_tables(tables)


@pytest.fixture
def dictionaries():
    return (
        shared_file("geneformer/token_dictionary_gc104M.json"),
        shared_file("geneformer/gene_median_dictionary_gc104M.json"),
    )


def _config(small_census, out, dictionaries, **kw):
    tokens, medians = dictionaries
    return TokenizeConfig(
        source=SourceSpec(census_uri=str(small_census), batch_size=200),
        out=out,
        token_dictionary=tokens,
        gene_medians=medians,
        split_by="donor_id",
        shard_cells=300,
        **kw,
    )


def test_store_cells_equal_the_rank_encoder_and_splits_hold_whole_donors(
    small_census, tmp_path, dictionaries
):
    result = tokenize_cells(_config(small_census, tmp_path / "s", dictionaries))
    manifest, table = _cells(tmp_path / "s")
    assert manifest["n_cells"] == table.num_rows == sum(s["n_cells"] for s in manifest["shards"])
    donors = table.to_pandas().groupby("donor_id")["split"].nunique()
    assert (donors == 1).all()
    assert set(manifest["splits"]["groups"]["test"]) == set(
        table.filter(pa.compute.equal(table["split"], "test"))["donor_id"].to_pylist()
    )
    # each stored cell is exactly what the encoder gives for that cell
    source = open_census(census_uri=str(small_census))
    ids = np.array([int(c) for c in table["cell_id"].to_pylist()[:50]])
    order = np.argsort(ids)
    (batch,) = source.iter_batches(ids[order], var_positions=None, batch_size=1000)
    encoder = RankEncoder.from_dictionaries(
        list(source.var().index),
        token_dictionary=load_json_dict(dictionaries[0]),
        gene_medians=load_json_dict(dictionaries[1]),
    )
    source.close()
    want = encoder.encode(batch.X)
    stored = table["input_ids"].to_pylist()[:50]
    for rank, i in enumerate(order):
        assert stored[i] == want.cell(rank).tolist()
    assert result.manifest["coverage"]["genes_outside_vocab_fraction"] < 0.2


def test_same_bytes_twice_refuses_complete_store_and_resumes_after_a_crash(
    small_census, tmp_path, dictionaries
):
    tokenize_cells(_config(small_census, tmp_path / "a", dictionaries))
    with pytest.raises(OutputExistsError):
        tokenize_cells(_config(small_census, tmp_path / "a", dictionaries))

    def crash(done, total):
        if done > 400:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tokenize_cells(_config(small_census, tmp_path / "b", dictionaries), progress=crash)
    assert not (tmp_path / "b" / "manifest.json").exists()
    tokenize_cells(_config(small_census, tmp_path / "b", dictionaries))  # the re-run finishes the job
    a, b = _cells(tmp_path / "a")[0], _cells(tmp_path / "b")[0]
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert (tmp_path / "a" / "vocab.json").read_bytes() == (tmp_path / "b" / "vocab.json").read_bytes()


@pytest.mark.parametrize("scheme", ["bin", "raw"])
def test_bin_and_raw_schemes_store_values(small_census, tmp_path, scheme):
    out = tmp_path / scheme
    r = CliRunner().invoke(
        app,
        [
            "tokenize",
            "--census-uri",
            str(small_census),
            "--scheme",
            scheme,
            "--max-len",
            "64",
            "--out",
            str(out),
            "--json",
            "--no-shuffle",
        ],
    )
    assert r.exit_code == 0, r.stderr
    _, table = _cells(out)
    assert json.loads(r.stdout)["n_cells"] == table.num_rows
    lengths = table["length"].to_numpy()
    assert np.array_equal(lengths, pa.compute.list_value_length(table["values"]).to_numpy())
    assert lengths.max() <= 64
    assert "outside the vocabulary" in r.stderr


def test_refuses_normalized_x_and_unknown_gene_column(tmp_path):
    import anndata as ad
    import scipy.sparse as sp

    from atlasprep.errors import InputFormatError, UsageError

    adata = ad.AnnData(sp.csr_matrix(np.array([[0.5, 1.25], [2.0, 0.0]], dtype=np.float32)))
    adata.var_names = ["ENSG00000141510", "ENSG00000012048"]
    adata.var["ensembl"] = list(adata.var_names)
    path = tmp_path / "norm.h5ad"
    adata.write_h5ad(path)
    config = TokenizeConfig(
        source=SourceSpec(inputs=(str(path),)), out=tmp_path / "s", scheme="bin", obs_columns=()
    )
    with pytest.raises(InputFormatError, match="assume_normalized") as refused:
        tokenize_cells(config)
    assert "scheme = 'bin' needs raw integer counts" in str(refused.value)  # the value, not the enum
    import dataclasses

    ok = tokenize_cells(dataclasses.replace(config, assume_normalized=True, gene_column="ensembl"))
    assert ok.manifest["n_cells"] == 2
    with pytest.raises(UsageError, match="not a var column"):
        tokenize_cells(
            dataclasses.replace(config, out=tmp_path / "t", gene_column="symbol", assume_normalized=True)
        )


def test_rank_without_medians_sketches_them_from_the_corpus(small_census, tmp_path):
    import pyarrow.parquet as pq

    from atlasprep.tokenize.medians import MedianSketch

    out = tmp_path / "sketched"
    result = tokenize_cells(
        TokenizeConfig(source=SourceSpec(census_uri=str(small_census)), out=out, max_len=32, obs_columns=())
    )
    medians = pq.read_table(out / "gene_medians.parquet").to_pandas().set_index("gene_id")["median"]
    assert "sketched" in result.manifest["gene_medians"]["source"]
    # compare with exact nonzero medians of counts per 10k
    source = open_census(census_uri=str(small_census))
    positions = source.select(source.compile(resolve_filter(CellFilter())))
    X = sp.vstack([b.X for b in source.iter_batches(positions, var_positions=None, batch_size=500)]).tocsc()
    genes = list(source.var().index)
    source.close()
    totals = np.asarray(X.sum(axis=0)).ravel()
    row_totals = np.asarray(X.sum(axis=1)).ravel()
    bound = MedianSketch(n_genes=0).relative_error
    checked = 0
    for j in np.argsort(-totals)[:40]:
        col = X[:, j]
        values = col.data / row_totals[col.indices] * 10_000
        if len(values) % 2 == 1:  # odd: the median is one value, whose bin the sketch returns
            exact = float(np.median(values))
            assert abs(medians[genes[j]] / exact - 1) <= bound + 1e-12
            checked += 1
    assert checked > 5


def test_kill_9_mid_run_then_rerun_gives_the_same_bytes(small_census, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    args = [
        sys.executable,
        "-m",
        "atlasprep",
        "tokenize",
        "--census-uri",
        str(small_census),
        "--scheme",
        "raw",
        "--max-len",
        "64",
        "--shard-cells",
        "100",
        "--batch-size",
        "50",
        "--split-by",
        "donor_id",
    ]
    clean = tmp_path / "clean"
    subprocess.run([*args, "--out", str(clean)], check=True, capture_output=True)
    killed = tmp_path / "killed"
    # every spill on disk (none kept in memory), so the kill finds some written: the re-run must
    # not take them for its own
    on_disk = {**os.environ, "ATLASPREP_SPILL_MEMORY": "0"}
    proc = subprocess.Popen(
        [*args, "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=on_disk
    )
    deadline = time.monotonic() + 60
    spill = killed / ".work" / "spill"
    while len(list(spill.glob("*.arrow"))) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "manifest.json").exists()
    subprocess.run([*args, "--out", str(killed)], check=True, capture_output=True)
    a, b = _cells(clean)[0], _cells(killed)[0]
    assert [(s["path"], s["sha256"]) for s in a["shards"]] == [(s["path"], s["sha256"]) for s in b["shards"]]
    assert not (killed / ".work").exists()


def test_inspect_and_validate_catch_damage(small_census, tmp_path):
    out = tmp_path / "s"
    tokenize_cells(
        TokenizeConfig(
            source=SourceSpec(census_uri=str(small_census)),
            out=out,
            scheme="raw",
            max_len=16,
            split_by="donor_id",
            shard_cells=400,
        )
    )
    runner = CliRunner()
    r = runner.invoke(app, ["inspect", str(out), "--by", "dataset_id", "--json"])
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["n_cells"] == sum(s["n_cells"] for s in summary["splits"].values())
    assert summary["length"]["max"] <= 16
    assert sum(summary["composition"]["dataset_id"].values()) <= summary["n_cells"]
    assert sum(s["n_cells"] for s in summary["shards"]) == summary["n_cells"]
    png = tmp_path / "store.png"
    drawn = runner.invoke(app, ["inspect", str(out), "--plot", str(png)])
    assert drawn.exit_code == 0, drawn.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "cell_type_ontology_term_id" in drawn.stdout  # default composition columns
    assert runner.invoke(app, ["inspect", str(out), "--plot", str(tmp_path / "x.txt")]).exit_code == 2
    svg, pdf = tmp_path / "store.svg", tmp_path / "store.pdf"
    for path in (svg, pdf):
        assert runner.invoke(app, ["inspect", str(out), "--plot", str(path)]).exit_code == 0
    assert pdf.read_bytes()[:5] == b"%PDF-"
    text = svg.read_text()
    assert "<svg" in text
    assert ">split<" in text  # the shard panel's legend names the splits
    first = svg.read_bytes()
    kept = runner.invoke(app, ["inspect", str(out), "--plot", str(svg)])
    assert kept.exit_code == 2
    assert "--overwrite" in kept.stderr
    assert svg.read_bytes() == first
    svg.write_text("replace me")
    assert runner.invoke(app, ["inspect", str(out), "--plot", str(svg), "--overwrite"]).exit_code == 0
    assert svg.read_bytes() == first  # the same store draws the same bytes
    ok = runner.invoke(app, ["validate", str(out)])
    assert ok.exit_code == 0
    assert "valid" in ok.stdout
    shard = next((out / "shards").iterdir())
    data = bytearray(shard.read_bytes())
    data[-20] ^= 0xFF
    shard.write_bytes(bytes(data))
    bad = runner.invoke(app, ["validate", str(out)])
    assert bad.exit_code == 1
    assert shard.name in bad.stdout
    assert "sha256" in bad.stdout
    missing = runner.invoke(app, ["validate", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    assert missing.stderr.startswith("Error:")


def test_shards_open_with_huggingface_datasets(small_census, tmp_path):
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "hf"
    tokenize_cells(
        TokenizeConfig(
            source=SourceSpec(census_uri=str(small_census)), out=out, scheme="raw", max_len=8, obs_columns=()
        )
    )
    manifest, table = _cells(out)
    shard = manifest["shards"][0]
    dataset = datasets.Dataset.from_file(str(out / shard["path"]))
    assert dataset.num_rows == shard["n_cells"]
    assert dataset[0]["input_ids"] == table["input_ids"][0].as_py()


def test_context_tokens_follow_cls_and_extend_the_vocabulary(small_census, tmp_path, dictionaries):
    out = tmp_path / "ctx"
    tokenize_cells(_config(small_census, out, dictionaries, context=("tissue_general", "assay"), max_len=20))
    manifest, table = _cells(out)
    vocab = json.loads((out / "vocab.json").read_text())
    assert manifest["tokenizer"]["context"] == ["tissue_general", "assay"]
    frame = table.to_pandas()
    row = table.slice(0, 1)
    ids = row["input_ids"][0].as_py()
    inverse = {v: k for k, v in vocab.items()}
    assert ids[0] == vocab["<cls>"]
    assert ids[-1] == vocab["<eos>"]
    assert inverse[ids[1]].startswith("<tissue_general:")
    assert inverse[ids[2]].startswith("<assay:")
    assert frame["length"].max() <= 20
    assert len(vocab) > 20_275  # Geneformer's 20,275 tokens plus the context values


def test_cli_passes_context_gene_column_and_assume_normalized(small_census, tmp_path):
    out = tmp_path / "cli"
    r = CliRunner().invoke(
        app,
        [
            "tokenize",
            "--census-uri",
            str(small_census),
            "--scheme",
            "raw",
            "--max-len",
            "8",
            "--context",
            "tissue_general",
            "--gene-column",
            "feature_name",
            "--assume-normalized",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.stderr
    manifest = json.loads(r.stdout)
    assert manifest["tokenizer"]["context"] == ["tissue_general"]
    assert manifest["recipe"]["gene_column"] == "feature_name"
    assert manifest["recipe"]["assume_normalized"] is True
    vocab = json.loads((out / "vocab.json").read_text())
    assert "CD3E" in vocab  # symbols, from --gene-column
    first = _cells(out)[1]["input_ids"][0].as_py()[0]
    assert {v: k for k, v in vocab.items()}[first].startswith("<tissue_general:")


def test_zarr_store_holds_the_same_cells_and_validates(small_census, tmp_path, dictionaries):
    from atlasprep.shard import read_shard, validate_store

    arrow = tokenize_cells(_config(small_census, tmp_path / "arrow", dictionaries))
    zarr_store = tokenize_cells(_config(small_census, tmp_path / "zarr", dictionaries, format="zarr"))
    again = tokenize_cells(_config(small_census, tmp_path / "zarr2", dictionaries, format="zarr"))
    assert [s["sha256"] for s in zarr_store.manifest["shards"]] == [
        s["sha256"] for s in again.manifest["shards"]
    ]
    assert validate_store(tmp_path / "zarr") == []
    for a, z in zip(arrow.manifest["shards"], zarr_store.manifest["shards"], strict=True):
        assert z["path"].endswith(".zarr")
        left, right = read_shard(tmp_path / "arrow", a["path"]), read_shard(tmp_path / "zarr", z["path"])
        assert left.column_names == right.column_names
        for name in left.column_names:
            assert left[name].to_pylist() == right[name].to_pylist(), name


def test_counts_layer_names_the_raw_counts(tmp_path):
    import anndata as ad
    import scipy.sparse as sp

    from atlasprep.errors import InputFormatError

    counts = np.array([[1, 3], [2, 0]], dtype=np.float32)
    adata = ad.AnnData(sp.csr_matrix(np.log1p(counts)))  # X normalized, counts in a layer
    adata.layers["counts"] = sp.csr_matrix(counts)
    adata.var_names = ["ENSG00000141510", "ENSG00000012048"]
    path = tmp_path / "layers.h5ad"
    adata.write_h5ad(path)
    base = TokenizeConfig(
        source=SourceSpec(inputs=(str(path),)), out=tmp_path / "a", scheme="bin", obs_columns=()
    )
    with pytest.raises(InputFormatError, match="non-integer"):
        tokenize_cells(base)
    import dataclasses

    ok = tokenize_cells(
        dataclasses.replace(base, out=tmp_path / "b", source=SourceSpec(inputs=(str(path),), layer="counts"))
    )
    assert ok.manifest["n_cells"] == 2
    with pytest.raises(InputFormatError, match="no layer"):
        tokenize_cells(
            dataclasses.replace(base, out=tmp_path / "c", source=SourceSpec(inputs=(str(path),), layer="x"))
        )


def test_bin_caps_cells_at_max_len_with_a_seeded_sample_whatever_the_batching(small_census, tmp_path):
    def build(out, batch_size, seed=0):
        config = TokenizeConfig(
            source=SourceSpec(census_uri=str(small_census), batch_size=batch_size),
            out=out,
            scheme="bin",
            max_len=100,
            seed=seed,
            shuffle=False,
        )
        tokenize_cells(config)
        return _cells(out)[1]

    a, b = build(tmp_path / "a", 128), build(tmp_path / "b", 500)
    assert a["input_ids"].equals(b["input_ids"])
    assert a["values"].equals(b["values"])
    lengths = a["length"].to_numpy()
    assert lengths.max() == 100  # demo cells hold hundreds of genes: every long cell is capped
    # the kept genes stay in vocabulary (column) order
    ids = a["input_ids"].to_pylist()
    assert all(cell == sorted(cell) for cell in ids[:50])  # corpus vocab ids follow column order
    other = build(tmp_path / "c", 128, seed=1)
    assert not other["input_ids"].equals(a["input_ids"])  # another seed, another sample


def test_n_hvg_keeps_the_most_variable_genes(small_census, tmp_path):
    from atlasprep.tokenize.hvg import GeneMoments

    out = tmp_path / "hvg"
    config = TokenizeConfig(
        source=SourceSpec(census_uri=str(small_census), batch_size=300),
        out=out,
        scheme="bin",
        n_hvg=200,
        max_len=4096,
    )
    manifest = tokenize_cells(config).manifest
    genes = manifest["tokenizer"]["hvg"]["genes"]
    assert len(genes) == 200
    vocab = json.loads((out / "vocab.json").read_text())
    _, table = _cells(out)
    used = set(pa.compute.list_flatten(table["input_ids"]).to_pylist())
    assert used <= {vocab[g] for g in genes}
    # the same selection as one pass over the whole matrix in memory
    source = open_census(census_uri=str(small_census))
    positions = source.select(source.compile(resolve_filter(CellFilter())))
    X = sp.vstack([b.X for b in source.iter_batches(positions, var_positions=None, batch_size=5000)])
    var = list(source.var().index)
    source.close()
    moments = GeneMoments(n_genes=X.shape[1])
    moments.add(X)
    second = moments.clipped()
    second.add(X)
    assert genes == [var[c] for c in second.top(200)]


def test_n_hvg_only_for_bin(small_census, tmp_path):
    r = CliRunner().invoke(
        app,
        [
            "tokenize",
            "--census-uri",
            str(small_census),
            "--scheme",
            "rank",
            "--n-hvg",
            "10",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert r.exit_code == 2
    assert "--n-hvg" in r.stderr


def test_spills_kept_in_memory_on_disk_or_both_give_the_same_bytes(
    small_census, tmp_path, dictionaries, monkeypatch
):
    """A build in one process keeps its first spills in memory while they fit
    (``ATLASPREP_SPILL_MEMORY`` bytes), the rest on disk; the shards are the same bytes."""
    from atlasprep.shard import spill
    from atlasprep.shard.writer import ShardWriter

    kinds: list[list[str]] = []
    sizes: list[int] = []  # of the rows kept in memory
    register = ShardWriter.register

    def noting(self, kept):  # type: ignore[no-untyped-def]
        if not self._spills:
            kinds.append([])
        kinds[-1].append("memory" if kept.rows is not None else "file")
        sizes.append(0 if kept.rows is None else kept.rows.nbytes)
        if kept.rows is None:
            assert kept.path.is_file()
        else:
            assert not kept.path.exists()
        return register(self, kept)

    monkeypatch.setattr(ShardWriter, "register", noting)
    hashes = {}
    for label in ("memory", "both", "disk"):
        if label == "memory":
            monkeypatch.delenv("ATLASPREP_SPILL_MEMORY", raising=False)
        else:  # room for the first half of the spills, then for none
            room = sum(sizes[: len(sizes) // 2]) if label == "both" else 0
            monkeypatch.setenv("ATLASPREP_SPILL_MEMORY", str(room))
        manifest = tokenize_cells(_config(small_census, tmp_path / label, dictionaries)).manifest
        hashes[label] = [s["sha256"] for s in manifest["shards"]]
        assert not (tmp_path / label / ".work").exists()
    memory, both, disk = kinds
    assert set(disk) == {"file"}
    assert set(memory) == {"memory"}
    assert "memory" in both
    assert "file" in both
    assert len(disk) == len(both) == len(memory) > 3
    assert hashes["disk"] == hashes["both"] == hashes["memory"]
    assert spill.SpillMemory.from_environment().left == 0
    monkeypatch.delenv("ATLASPREP_SPILL_MEMORY")
    assert spill.SpillMemory.from_environment().left == spill.SPILL_MEMORY
    monkeypatch.setenv("ATLASPREP_SPILL_MEMORY", "lots")  # not a byte count: the default
    assert spill.SpillMemory.from_environment().left == spill.SPILL_MEMORY


def test_shard_size_cuts_shards_by_bytes_independently_of_batching(small_census, tmp_path):
    def build(out, batch_size):
        args = ["tokenize", "--census-uri", str(small_census), "--scheme", "raw", "--max-len", "128"]
        args += ["--shard-size", "40KB", "--batch-size", str(batch_size), "--out", str(out), "--json"]
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, r.stderr
        return json.loads(r.stdout)

    a, b = build(tmp_path / "a", 200), build(tmp_path / "b", 700)
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert len(a["shards"]) > 3
    from atlasprep.shard.writer import row_nbytes

    for shard in a["shards"][:-1]:  # every shard but a split's last is full: <= 40 KB, near it
        with pa.memory_map(str(tmp_path / "a" / shard["path"])) as source:
            table = pa.ipc.open_stream(source).read_all()
        size = int(row_nbytes(table).sum())
        assert size <= 40_000
        assert size > 40_000 - int(row_nbytes(table).max()) - 1 or shard["split"] != "train"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shard-size", "lots"], "--shard-size"),
        (["--shard-size", "1MB", "--shard-cells", "10"], "not both"),
    ],
)
def test_bad_shard_size_is_a_usage_error(small_census, tmp_path, args, message):
    r = CliRunner().invoke(
        app, ["tokenize", "--census-uri", str(small_census), "--out", str(tmp_path / "x"), *args]
    )
    assert r.exit_code == 2
    assert message in r.stderr


def test_rank_reads_obs_n_counts_as_geneformer_does(small_census, tmp_path, dictionaries):
    """With obs["n_counts"] (float32 here) the store's tokens are the encoder's with those totals
    in their own dtype; the manifest says so; a named column that is missing is exit 2."""
    import anndata as ad

    X, genes = demo_cells(small_census, 300)
    n_counts = np.asarray(X.sum(axis=1)).ravel().astype(np.float32)
    adata = ad.AnnData(X)
    adata.var_names = genes
    adata.obs_names = [f"c{i}" for i in range(X.shape[0])]
    adata.obs["n_counts"] = n_counts
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    tokens, medians = dictionaries
    result = tokenize_cells(
        TokenizeConfig(
            source=SourceSpec(inputs=(str(path),)),
            out=tmp_path / "store",
            token_dictionary=tokens,
            gene_medians=medians,
            obs_columns=(),
            shuffle=False,
        )
    )
    assert result.manifest["tokenizer"]["n_counts"] == "obs['n_counts']"
    encoder = RankEncoder.from_dictionaries(
        genes, token_dictionary=load_json_dict(tokens), gene_medians=load_json_dict(medians)
    )
    want = encoder.encode(X, n_counts)
    _, table = _cells(tmp_path / "store")
    got = dict(zip(table["cell_id"].to_pylist(), table["input_ids"].to_pylist(), strict=True))
    assert [got[f"c{i}"] for i in range(X.shape[0])] == [want.cell(i).tolist() for i in range(X.shape[0])]
    r = CliRunner().invoke(
        app,
        [
            "tokenize", "--input", str(path), "--token-dictionary", str(tokens), "--gene-medians",
            str(medians), "--n-counts-column", "total", "--out", str(tmp_path / "bad"),
        ],
    )  # fmt: skip
    assert r.exit_code == 2
    assert "--n-counts-column 'total'" in r.output


@pytest.mark.parametrize("cut", ["cells", "bytes"])
def test_empty_cells_are_counted_kept_or_dropped_and_the_rest_stored_once(
    small_census, tmp_path, dictionaries, cut
):
    """Cells without a vocabulary gene (no counts at all, or only in a gene outside the
    vocabulary) are counted; kept as <cls><eos> by default, left out with drop_empty (as
    Geneformer leaves them out): every other cell is then stored exactly once, with the encoder's
    tokens, in shards that validate, however the shards are cut."""
    import dataclasses

    import anndata as ad

    from atlasprep.shard import validate_store

    X, genes = demo_cells(small_census, 300)
    X = sp.hstack([X, sp.csr_matrix((X.shape[0], 1), dtype=X.dtype)]).tocsr().tolil()
    empty = [3, 7, 50, 51, 299]
    for row in empty:
        X[row, :] = 0
    X[7, -1] = 5  # counts only in a gene the vocabulary does not have
    X = sp.csr_matrix(X)
    X.eliminate_zeros()
    adata = ad.AnnData(X)
    adata.var_names = [*genes, "ENSG99999999999"]
    adata.obs_names = [f"c{i}" for i in range(X.shape[0])]
    adata.obs["donor_id"] = [f"d{i % 7}" for i in range(X.shape[0])]
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    tokens, medians = dictionaries
    size = {"shard_cells": 40} if cut == "cells" else {"shard_bytes": 20_000}
    config = TokenizeConfig(
        source=SourceSpec(inputs=(str(path),), batch_size=64),
        out=tmp_path / "kept",
        token_dictionary=tokens,
        gene_medians=medians,
        obs_columns=("donor_id",),
        split_by="donor_id",
        **size,
    )
    kept = tokenize_cells(config)
    assert kept.manifest["empty_cells"] == {"n": len(empty), "dropped": False}
    manifest, table = _cells(tmp_path / "kept")
    ids = dict(zip(table["cell_id"].to_pylist(), table["input_ids"].to_pylist(), strict=True))
    vocab = load_json_dict(tokens)
    assert len(ids) == table.num_rows == 300
    assert all(ids[f"c{row}"] == [vocab["<cls>"], vocab["<eos>"]] for row in empty)

    dropped = tokenize_cells(dataclasses.replace(config, out=tmp_path / "dropped", drop_empty=True))
    assert dropped.manifest["empty_cells"] == {"n": len(empty), "dropped": True}
    manifest, table = _cells(tmp_path / "dropped")
    names = table["cell_id"].to_pylist()
    assert sorted(names) == sorted(f"c{i}" for i in range(300) if i not in empty)  # each once
    assert manifest["n_cells"] == sum(manifest["splits"]["n_cells"].values()) == 295
    assert [s["path"] for s in manifest["shards"]] == sorted(s["path"] for s in manifest["shards"])
    assert {c: ids[c] for c in names} == dict(zip(names, table["input_ids"].to_pylist(), strict=True))
    assert validate_store(tmp_path / "dropped") == []
    again = tokenize_cells(dataclasses.replace(config, out=tmp_path / "again", drop_empty=True))
    assert [s["sha256"] for s in again.manifest["shards"]] == [s["sha256"] for s in manifest["shards"]]


@pytest.mark.parametrize("alias", [False, True])
def test_a_file_joined_with_others_keeps_its_own_gene_order(small_census, tmp_path, dictionaries, alias):
    """Geneformer tokenizes each file with its own var, so genes with tied values come out in
    that file's order: a file's cells get the same tokens alone as joined with a file whose var
    runs the other way (ties are common: most demo cells have some). With a gene mapping, a
    gene named twice in the second file (ID and symbol) is summed and moved last there only."""
    import gzip
    import json

    import anndata as ad

    X, genes = demo_cells(small_census, 400)
    first = ad.AnnData(X[:200])
    first.var_names = genes
    first.obs_names = [f"a{i}" for i in range(200)]
    reverse = np.arange(len(genes))[::-1]
    names = [genes[i] for i in reverse]
    part = sp.csr_matrix(X[200:][:, reverse])
    mapping = None
    if alias:
        mapping = shared_file("geneformer/ensembl_mapping_dict_gc104M.json.gz")
        with gzip.open(mapping, "rt") as handle:
            symbols = {v: k for k, v in json.load(handle).items() if k != v}
        cells_with = X.getnnz(axis=0)  # (once: a CSR column slice per gene took 18 s)
        named = max((i for i, g in enumerate(genes) if g in symbols), key=lambda i: cells_with[i])
        names.append(symbols[genes[named]])
        part = sp.hstack([part, sp.csr_matrix(np.ones((200, 1), dtype=np.float32))], format="csr")
    second = ad.AnnData(part)
    second.var_names = names
    second.obs_names = [f"b{i}" for i in range(200)]
    first.write_h5ad(tmp_path / "a.h5ad")
    second.write_h5ad(tmp_path / "b.h5ad")
    tokens, medians = dictionaries

    def tokenized(*paths):
        out = tmp_path / "_".join(p.stem for p in paths)
        tokenize_cells(
            TokenizeConfig(
                source=SourceSpec(inputs=tuple(str(p) for p in paths), batch_size=64, join="outer"),
                out=out,
                token_dictionary=tokens,
                gene_medians=medians,
                gene_mapping=mapping,
                obs_columns=(),
            )
        )
        _, table = _cells(out)
        return dict(zip(table["cell_id"].to_pylist(), table["input_ids"].to_pylist(), strict=True))

    joined = tokenized(tmp_path / "a.h5ad", tmp_path / "b.h5ad")
    alone = tokenized(tmp_path / "b.h5ad")
    assert len(joined) == 400
    assert {c: joined[c] for c in alone} == alone
    assert {c: ids for c, ids in joined.items() if c.startswith("a")} == tokenized(tmp_path / "a.h5ad")


def test_geneformer_conventions_the_input_follows_are_pointed_out(
    small_census, tmp_path, dictionaries, caplog
):
    """Symbols in the var index with Ensembl IDs in var['ensembl_id'] (which Geneformer reads),
    and an obs filter_pass column (Geneformer keeps only filter_pass == 1): each gets a warning
    naming the option that does the same; with the options given, no warning."""
    import logging

    import anndata as ad

    X, genes = demo_cells(small_census, 50)
    adata = ad.AnnData(X)
    adata.var_names = [f"SYMBOL{i}" for i in range(len(genes))]
    adata.var["ensembl_id"] = genes
    adata.obs_names = [f"c{i}" for i in range(X.shape[0])]
    adata.obs["filter_pass"] = np.arange(X.shape[0]) % 2
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    tokens, medians = dictionaries
    config = TokenizeConfig(
        source=SourceSpec(inputs=(str(path),)),
        out=tmp_path / "a",
        token_dictionary=tokens,
        gene_medians=medians,
        obs_columns=(),
    )
    from atlasprep.errors import InputFormatError

    with caplog.at_level(logging.WARNING, logger="atlasprep"), pytest.raises(InputFormatError):
        tokenize_cells(config)  # no symbol is in the vocabulary: the hint comes before the error
    assert "set gene_column = ensembl_id, --gene-column" in caplog.text
    caplog.clear()
    import dataclasses

    with caplog.at_level(logging.WARNING, logger="atlasprep"):
        tokenize_cells(dataclasses.replace(config, out=tmp_path / "b", gene_column="ensembl_id"))
    assert "set where = 'filter_pass == 1' (--where)" in caplog.text
    assert "--gene-column" not in caplog.text
    caplog.clear()
    followed = dataclasses.replace(
        config,
        out=tmp_path / "c",
        gene_column="ensembl_id",
        source=SourceSpec(inputs=(str(path),), filter=CellFilter(where="filter_pass == 1")),
    )
    with caplog.at_level(logging.WARNING, logger="atlasprep"):
        result = tokenize_cells(followed)
    assert "--gene-column" not in caplog.text
    assert "filter_pass" not in caplog.text
    assert result.manifest["n_cells"] == 25


def test_a_store_is_read_by_its_path_as_a_string(tmp_path):
    """The library readers take a store as a user names it: a str works as a Path does."""
    from atlasprep.shard import read_manifest, read_shard

    spec = SourceSpec(
        inputs=(str(shared_file("scrna/wu2020_200_v0_11.h5ad")),), filter=CellFilter(primary_only=False)
    )
    tokenize_cells(TokenizeConfig(source=spec, out=tmp_path / "store", scheme="raw", max_len=16))
    by_path, by_text = read_manifest(tmp_path / "store"), read_manifest(str(tmp_path / "store"))
    assert by_path == by_text
    relative = by_text["shards"][0]["path"]
    assert read_shard(str(tmp_path / "store"), relative).equals(read_shard(tmp_path / "store", relative))
