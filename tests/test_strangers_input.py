"""Inputs a stranger could give, each a one-line ``Error:`` (helper sweeps of the command line)."""

from __future__ import annotations

import json
import shutil

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import assert_clean_error
from typer.testing import CliRunner

from atlasprep.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def store(small_census, tmp_path_factory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("store") / "store"
    args = ["tokenize", "--census-uri", str(small_census), "--max-cells", "60", "--scheme", "rank"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    return out


def test_an_error_no_check_names_is_one_line_and_vv_shows_its_traceback(store, monkeypatch):
    import atlasprep.shard as shard

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(shard, "inspect_store", broken)
    line = assert_clean_error(runner.invoke(app, ["inspect", str(store)]), codes=(1,))
    assert line.startswith("Error: ZeroDivisionError: division by zero second line (unexpected:")
    shown = runner.invoke(app, ["-vv", "inspect", str(store)])
    assert isinstance(shown.exception, ZeroDivisionError)  # under -vv it is raised, traceback and all


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda m: m.update(labels=[1, 2]), "labels: expected term ID -> label"),
        (lambda m: m["tokenizer"].update(scheme="evil"), "tokenizer.scheme 'evil': expected one of"),
    ],
)
def test_a_manifest_with_fields_of_the_wrong_shape_is_refused(store, tmp_path, edit, words):
    copy = tmp_path / "s"
    shutil.copytree(store, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert_clean_error(runner.invoke(app, ["inspect", str(copy)]), contains=words)
    checked = runner.invoke(app, ["validate", str(copy)])
    assert checked.exit_code == 1
    assert f"manifest.json: {words}" in checked.stdout


def test_a_manifest_nested_too_deeply_is_refused(store, tmp_path):
    copy = tmp_path / "s"
    shutil.copytree(store, copy)
    (copy / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    for command in ("inspect", "validate"):
        assert_clean_error(runner.invoke(app, [command, str(copy)]), contains="nested too deeply")


@pytest.mark.parametrize("damage", ["garbage", "deleted"])
def test_damaged_gene_medians_of_a_store_are_named(store, tmp_path, damage):
    copy = tmp_path / "s"
    shutil.copytree(store, copy)
    medians = copy / "gene_medians.parquet"
    if damage == "garbage":
        medians.write_text("x")
    else:
        medians.unlink()
    result = runner.invoke(app, ["tokenizer", "export", str(copy), "--out", str(tmp_path / "t")])
    line = assert_clean_error(result, contains="the tokenizer's gene medians cannot be read")
    assert ("(no such file)" in line) == (damage == "deleted")
    assert not (tmp_path / "t").exists()
    checked = runner.invoke(app, ["validate", str(copy)])  # (it said "valid")
    assert checked.exit_code == 1
    assert "tokenizer.json: " in checked.stdout
    assert "gene medians cannot be read" in checked.stdout


def test_validate_finds_an_edited_tokenizer(store, tmp_path):
    copy = tmp_path / "s"
    shutil.copytree(store, copy)
    (copy / "tokenizer.json").write_text("{")
    checked = runner.invoke(app, ["validate", str(copy)])
    assert checked.exit_code == 1
    assert "sha256 differs from the manifest" in checked.stdout


def test_a_context_column_named_twice_is_refused(small_census, tmp_path):
    args = ["tokenize", "--census-uri", str(small_census), "--max-cells", "20", "--context", "assay,assay"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "s")])
    assert_clean_error(result, codes=(2,), contains="assay is named more than once")


def test_an_embedding_of_counts_without_a_value_is_refused():
    pytest.importorskip("scanpy")
    from atlasprep.errors import InputFormatError
    from atlasprep.harmonize._embedding import Embedding, compute_embedding

    with pytest.raises(InputFormatError, match="0 nonzero values in 0 genes, so there is nothing to embed"):
        compute_embedding(sp.csr_matrix((20, 10), dtype=np.float32), Embedding.pca, seed=0)
    one_gene = sp.csr_matrix(np.c_[np.ones((20, 1)), np.zeros((20, 9))].astype(np.float32))
    with pytest.raises(InputFormatError, match="in 1 genes"):  # (scipy's ARPACK: "starting vector is zero")
        compute_embedding(one_gene, Embedding.pca, seed=0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("context", "tissue"),
        ("format_version", "9.9"),
        ("seed", -1),
        ("special_tokens", "yes"),
        ("max_len", 1.5),
    ],
)
def test_an_exported_tokenizer_with_a_field_of_the_wrong_kind_is_refused(store, tmp_path, field, value):
    from atlasprep.errors import CorruptStoreError
    from atlasprep.tokenize import Tokenizer

    folder = tmp_path / "tok"
    assert runner.invoke(app, ["tokenizer", "export", str(store), "--out", str(folder)]).exit_code == 0
    record = json.loads((folder / "tokenizer.json").read_text())
    record[field] = value
    (folder / "tokenizer.json").write_text(json.dumps(record))
    with pytest.raises(CorruptStoreError, match=rf"tokenizer\.json: {field} {value!r}: expected"):
        Tokenizer.load(folder)


def test_ctrl_c_in_a_command_is_one_line_and_exit_130(small_census, tmp_path):
    """typer turns Ctrl-C in a command into exit code 130, silently; the process also ended
    through the interpreter's teardown, where a TileDB reading thread could crash it (139)."""
    import subprocess
    import sys

    script = (
        "import sys, atlasprep.slice as sliced, atlasprep.slice.api as api\n"
        "def interrupted(*a, **k): raise KeyboardInterrupt\n"
        "api.slice_cells = sliced.slice_cells = interrupted\n"
        "import atlasprep.cli._app as cli\n"
        f"sys.argv = ['atlasprep', 'slice', '--census-uri', {str(small_census)!r}, '--out', 'x.h5ad']\n"
        "cli.main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert done.returncode == 130, done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("Error:")] == [
        "Error: interrupted; re-run the same command to finish the job."
    ]
    assert "Traceback" not in done.stderr


def test_ctrl_c_while_the_command_line_starts_is_one_line_and_exit_130(small_census, tmp_path):
    """Ctrl-C before the command runs (typer, the command's module and its library still being
    imported: seconds on a loaded machine) printed a traceback and died by the signal; here it
    arrives while the command's library loads. After start-up Python's handler is back."""
    import subprocess
    import sys

    script = (
        "import os, signal, sys, atlasprep.cli._app as cli\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)  # (a background job ignores it)\n"
        "loads = cli._preload\n"
        "def preload(*a):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    loads(*a)\n"
        "cli._preload = preload\n"
        f"sys.argv = ['atlasprep', 'slice', '--census-uri', {str(small_census)!r}, '--out', 'x.h5ad']\n"
        "from atlasprep._console import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr == "Error: interrupted; re-run the same command to finish the job.\n"
    assert list(tmp_path.iterdir()) == []
    after = (
        "import signal, sys, typer\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "python = lambda: signal.getsignal(signal.SIGINT) is signal.default_int_handler\n"
        "typer.Typer.__call__ = lambda self, **k: print(python()) or 0\n"
        "sys.argv = ['atlasprep', 'terms', 'lung']\n"
        "from atlasprep._console import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", after], capture_output=True, text=True, check=False)
    assert done.stdout.strip() == "True", done.stderr


def test_opening_a_soma_store_leaves_ctrl_c_to_python(small_census):
    """Opening a TileDB context installed TileDB's own SIGINT handler (an interrupted slice then
    crashed with SIGSEGV); the source gives it back to Python. In a fresh process: TileDB
    installs its handler once."""
    import subprocess
    import sys

    script = f"""
import ctypes, signal
class Action(ctypes.Structure):
    _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16), ("flags", ctypes.c_int),
                ("restorer", ctypes.c_void_p)]
def os_handler():
    action = Action()
    ctypes.CDLL(None).sigaction(signal.SIGINT, None, ctypes.byref(action))
    return action.handler
signal.signal(signal.SIGINT, signal.default_int_handler)
python = os_handler()
from atlasprep.sources import CellFilter, SourceSpec, open_source
source = open_source(SourceSpec(census_uri={str(small_census)!r}, filter=CellFilter(primary_only=False)))
print(os_handler() == python, signal.getsignal(signal.SIGINT) is signal.default_int_handler)
source.close()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.stdout.split() == ["True", "True"], done.stderr


@pytest.mark.parametrize("command", ["tokenize", "slice"])
def test_a_file_url_as_output_is_refused(small_census, tmp_path, command):
    out = f"file://{tmp_path}/x" + (".h5ad" if command == "slice" else "")
    result = runner.invoke(
        app, [command, "--census-uri", str(small_census), "--max-cells", "5", "--out", out]
    )
    assert_clean_error(result, codes=(2,), contains="a file: URL; give the local path itself")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["s3://bucket/../other/x", "s3://bucket/a/./x", "gs://bucket/a/.."])
def test_a_storage_url_with_dot_segments_is_refused(url):
    from atlasprep._remote import open_root
    from atlasprep.errors import UsageError

    with pytest.raises(UsageError, match=r"a '\.' or '\.\.' segment"):
        open_root(url)


def test_split_fractions_without_split_by_are_refused_even_the_default_ones(small_census, tmp_path):
    """--split 0.8,0.1,0.1 alone put every cell in train: the config could not tell it from its
    default, which a recipe's split refuses."""
    args = ["tokenize", "--census-uri", str(small_census), "--max-cells", "20", "--split", "0.8,0.1,0.1"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "s")])
    assert_clean_error(result, codes=(2,), contains="--split (0.8, 0.1, 0.1): applies to a column's groups")
    assert not (tmp_path / "s").exists()


def test_align_ccf_overwrites_its_own_spatialdata_store(tmp_path):
    """A SpatialData store (no AnnData encoding, its shapes in Parquet) that align ccf wrote is
    replaced with --overwrite; one holding a file of the user's is not."""
    from conftest import shared_file

    visium = shared_file("spatial/visium_1.0.0")
    out = tmp_path / "visium.zarr"
    args = ["align", "ccf", "--spatial", str(visium), "--bin-size", "0.5", "--spatialdata", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, [*args, "--overwrite"])  # was refused: "not an AnnData Zarr store"
    assert again.exit_code == 0, again.stderr
    (out / "notes.txt").write_text("mine")
    assert_clean_error(runner.invoke(app, [*args, "--overwrite"]), codes=(2,), contains="holds notes.txt")


@pytest.mark.parametrize(("medians", "warned"), [("gc30M", True), ("gc104M", False)])
def test_a_vocabulary_whose_genes_lack_medians_is_warned_of(small_census, tmp_path, medians, warned):
    from conftest import shared_file

    tokens = shared_file("geneformer/token_dictionary_gc104M.json")
    median_file = shared_file(f"geneformer/gene_median_dictionary_{medians}.json")
    args = ["tokenize", "--census-uri", str(small_census), "--max-cells", "20", "--scheme", "rank"]
    dictionaries = ["--token-dictionary", str(tokens), "--gene-medians", str(median_file)]
    result = runner.invoke(app, [*args, *dictionaries, "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.stderr
    assert ("have no median in" in " ".join(result.stderr.split())) == warned


def test_a_mapping_table_mapping_one_value_two_ways_is_refused(tmp_path):
    from atlasprep.errors import InputFormatError
    from atlasprep.harmonize.labels import load_mapping_table

    table = tmp_path / "labels.tsv"
    table.write_text("column\tvalue\tterm_id\nct\tT\tCL:0000084\nct\tB\tCL:0000236\nct\tT\tCL:0000236\n")
    twice = r"line 4 maps ct 'T' to CL:0000236, an earlier line to CL:0000084"
    with pytest.raises(InputFormatError, match=twice):
        load_mapping_table(table)
    table.write_text("column\tvalue\tterm_id\nct\tT\tCL:0000084\nct\tT\tCL:0000084\n")  # the same twice: fine
    assert load_mapping_table(table) == {("ct", "T"): "CL:0000084"}
    table.write_text("")
    with pytest.raises(InputFormatError, match="cannot read it as TSV"):
        load_mapping_table(table)


def test_harmonize_of_a_file_without_cells_is_refused(tmp_path):
    adata = ad.AnnData(sp.csr_matrix((0, 3), dtype=np.float32))
    adata.var_names = ["ENSG00000141510", "ENSG00000146648", "ENSG00000012048"]
    adata.write_h5ad(tmp_path / "none.h5ad")
    result = runner.invoke(app, ["harmonize", str(tmp_path / "none.h5ad"), "--out", str(tmp_path / "h.h5ad")])
    assert_clean_error(result, codes=(1,), contains="no cell to harmonize")
    assert not (tmp_path / "h.h5ad").exists()


def test_max_len_giving_a_modality_two_budgets_is_refused():
    from atlasprep.errors import UsageError
    from atlasprep.tokenize.config import parse_max_len

    with pytest.raises(UsageError, match="rna has two budgets"):
        parse_max_len("rna=5,rna=6")
    with pytest.raises(UsageError, match="rna has two budgets"):
        parse_max_len("1536,rna=6")
    assert parse_max_len("rna=1536,atac=512") == {"rna": 1536, "atac": 512}


@pytest.mark.parametrize("command", ["slice", "tokenize"])
def test_float64_counts_beyond_float32_are_named_as_such(tmp_path, command):
    """A float64 value past float32's range became inf in the float32 batch, then was called
    non-finite (with numpy's overflow warning on stderr)."""
    X = sp.csr_matrix(np.array([[1.0, 1e300], [2.0, 3.0]]))
    adata = ad.AnnData(X)
    adata.var_names = ["ENSG00000141510", "ENSG00000146648"]
    adata.write_h5ad(tmp_path / "big.h5ad")
    out = tmp_path / ("s.h5ad" if command == "slice" else "s")
    args = [command, "--input", str(tmp_path / "big.h5ad"), "--all-data", "--out", str(out)]
    result = runner.invoke(app, args)
    assert_clean_error(result, codes=(2,), contains="holds values beyond float32's range")
    assert "overflow" not in result.stderr
