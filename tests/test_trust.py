"""Token stores from anyone: tampered stores are refused, foreign directories are never written
into or deleted, a failed build leaves nothing, a resumed build leaves no stale shard."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import assert_clean_error
from typer.testing import CliRunner

from atlasprep.cli import app
from atlasprep.errors import CorruptStoreError, ForeignOutputError, OutputExistsError, UnsafePathError
from atlasprep.shard import inspect_store, open_store, validate_store
from atlasprep.shard.manifest import BUILD_MARKER
from atlasprep.sources import SourceSpec
from atlasprep.tokenize.api import TokenizeConfig, tokenize_cells

torch = pytest.importorskip("torch")
from atlasprep.loader import ShardDataset  # noqa: E402

runner = CliRunner()


def _config(census: Path, out: Path, **kw) -> TokenizeConfig:  # type: ignore[no-untyped-def]
    options = {"shard_cells": 60, "split_by": "donor_id", "max_len": 64, **kw}
    return TokenizeConfig(
        source=SourceSpec(census_uri=str(census), max_cells=300, seed=1), out=out, **options
    )


@pytest.fixture(scope="module")
def built(small_census, tmp_path_factory) -> Path:
    """A small rank store (Arrow shards, three splits), never changed: tests tamper with copies."""
    out = tmp_path_factory.mktemp("trust") / "store"
    tokenize_cells(_config(small_census, out))
    return out


@pytest.fixture
def store(built, tmp_path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(built, copy, symlinks=True)
    return copy


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else b"")
        for p in sorted(root.rglob("*"))
    }


def _edit(store: Path, change) -> None:  # type: ignore[no-untyped-def]
    path = store / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _first_train(manifest: dict) -> dict:
    return next(s for s in manifest["shards"] if s["split"] == "train")


# -- tampering: each case refused by the loader, validate and inspect --------------------------


def _duplicate(m):
    m["shards"].append(dict(_first_train(m)))


def _lower_shard(m):
    _first_train(m)["n_cells"] -= 1


def _raise_shard(m):
    _first_train(m)["n_cells"] += 5


def _lower_total(m):
    m["n_cells"] -= 10


def _lower_shard_and_totals(m):  # consistent sums: only the shard itself tells the truth
    shard = _first_train(m)
    shard["n_cells"] -= 7
    m["n_cells"] -= 7
    m["splits"]["n_cells"]["train"] -= 7


def _absolute(m):
    _first_train(m)["path"] = "/etc/passwd"


def _dotdot(m):
    _first_train(m)["path"] = "shards/../../../../etc/passwd"


def _outside_shards(m):
    _first_train(m)["path"] = "vocab.json"


def _vocab_elsewhere(m):
    m["vocab"]["path"] = "../vocab.json"


def _future_format(m):
    m["format_version"] = "9.0.0"


def _not_a_count(m):
    _first_train(m)["n_cells"] = "12"


def _bad_digest(m):
    _first_train(m)["sha256"] = "x"


def _no_shards(m):
    del m["shards"]


MANIFEST_EDITS = {
    "duplicate shard entry": (_duplicate, CorruptStoreError, "listed twice"),
    "lowered shard n_cells": (_lower_shard, CorruptStoreError, "n_cells"),
    "raised shard n_cells": (_raise_shard, CorruptStoreError, "n_cells"),
    "lowered total n_cells": (_lower_total, CorruptStoreError, "n_cells"),
    "lowered shard and totals": (_lower_shard_and_totals, CorruptStoreError, "cells, the manifest says"),
    "absolute shard path": (_absolute, UnsafePathError, "absolute"),
    "'..' shard path": (_dotdot, UnsafePathError, "leads out"),
    "shard outside shards/": (_outside_shards, UnsafePathError, "not a file in shards/"),
    "vocab path leads out": (_vocab_elsewhere, UnsafePathError, "leads out"),
    "future format version": (_future_format, CorruptStoreError, "format version"),
    "n_cells not a count": (_not_a_count, CorruptStoreError, "not a count"),
    "sha256 not a digest": (_bad_digest, CorruptStoreError, "sha256"),
    "no shards list": (_no_shards, CorruptStoreError, "shards"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_EDITS))
def test_a_tampered_manifest_is_refused_everywhere(store, case):
    change, error, words = MANIFEST_EDITS[case]
    _edit(store, change)
    with pytest.raises(error, match=words):
        ShardDataset(store, "train")
    with pytest.raises(error, match=words):
        inspect_store(store)
    r = runner.invoke(app, ["inspect", str(store)])
    assert_clean_error(r, codes=(1, 2))
    r = runner.invoke(app, ["validate", str(store)])
    if error is CorruptStoreError and "format version" in words:
        assert_clean_error(r, codes=(1,), contains="format version")
    else:
        assert r.exit_code == 1, r.stderr
        assert words.split()[0] in r.stdout, r.stdout


def test_a_symlinked_shard_leading_out_is_refused(store, tmp_path):
    outside = tmp_path / "elsewhere.arrow"
    shard = store / _first_train(json.loads((store / "manifest.json").read_text()))["path"]
    shutil.copy(shard, outside)
    shard.unlink()
    shard.symlink_to(outside)
    with pytest.raises(UnsafePathError, match="symlink"):
        ShardDataset(store, "train")
    assert any("symlink" in str(p) for p in validate_store(store))


def test_a_symlinked_store_part_leading_out_is_refused(store, tmp_path):
    outside = tmp_path / "shards-elsewhere"
    shutil.move(store / "shards", outside)
    (store / "shards").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="leads out"):
        ShardDataset(store, "train")


@pytest.mark.parametrize("damage", ["missing", "edited", "no pad", "not json"])
def test_the_vocabulary_must_be_there_unchanged_and_name_pad(store, damage):
    vocab = store / "vocab.json"
    if damage == "missing":
        vocab.unlink()
    elif damage == "edited":
        tokens = json.loads(vocab.read_text())
        tokens["<pad>"], tokens["<mask>"] = tokens["<mask>"], tokens["<pad>"]
        vocab.write_text(json.dumps(tokens))
    else:
        tokens = json.loads(vocab.read_text())
        text = "{" if damage == "not json" else json.dumps({k: v for k, v in tokens.items() if k != "<pad>"})
        vocab.write_text(text)
        # the manifest hashed the old bytes; a tamperer rehashes too
        import hashlib

        _edit(store, lambda m: m["vocab"].update(sha256=hashlib.sha256(vocab.read_bytes()).hexdigest()))
    with pytest.raises(CorruptStoreError, match="vocab"):
        ShardDataset(store, "train")
    problems = [str(p) for p in validate_store(store)]
    assert any(p.startswith("vocab.json") for p in problems), problems


def test_shard_bytes_changed_size_checked_at_open_contents_with_sha256(store):
    manifest = json.loads((store / "manifest.json").read_text())
    shard = store / _first_train(manifest)["path"]
    data = bytearray(shard.read_bytes())
    data[-9] ^= 0xFF  # same size, other bytes
    shard.write_bytes(bytes(data))
    ShardDataset(store, "train")  # the cheap check at open: sizes and cell counts agree
    with pytest.raises(CorruptStoreError, match="sha256"):
        ShardDataset(store, "train", verify="sha256")
    assert any("sha256" in str(p) for p in validate_store(store))
    shard.write_bytes(bytes(data[:-100]))  # truncated
    with pytest.raises(CorruptStoreError, match="bytes"):
        ShardDataset(store, "train")
    r = runner.invoke(app, ["inspect", str(store)])
    assert_clean_error(r, codes=(1,), contains="bytes")


def test_a_missing_shard_is_refused(store):
    manifest = json.loads((store / "manifest.json").read_text())
    (store / _first_train(manifest)["path"]).unlink()
    with pytest.raises(CorruptStoreError, match="missing"):
        ShardDataset(store, "train")


@pytest.mark.parametrize("name", ["train-09999.arrow", ".train-00000.arrow.tmp-4242", "README.txt"])
def test_validate_reports_unlisted_files_in_shards(store, name):
    manifest = json.loads((store / "manifest.json").read_text())
    shutil.copy(store / _first_train(manifest)["path"], store / "shards" / name)
    problems = [str(p) for p in validate_store(store)]
    assert problems, "an unlisted file in shards/ is reported"
    assert problems == [p for p in problems if p.startswith(f"shards/{name}")], problems
    ShardDataset(store, "train")  # the loader reads only listed shards


@pytest.mark.parametrize("text", ["{", "[]", '{"format": "something-else"}', ""])
def test_a_manifest_that_is_not_ours_is_a_clean_error(store, text):
    (store / "manifest.json").write_text(text)
    for command in ("inspect", "validate"):
        assert_clean_error(runner.invoke(app, [command, str(store)]))
    with pytest.raises((CorruptStoreError, ValueError)):
        ShardDataset(store, "train")


def test_the_untampered_store_is_sound(built):
    assert validate_store(built) == []
    assert open_store(built, verify="sha256")["n_cells"] == 300
    assert ShardDataset(built, "train", verify="sha256").num_cells > 0


# -- never write into or delete what atlasprep did not write -----------------------------------


def _tokenize_cli(census: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    args = ["tokenize", "--census-uri", str(census), "--max-cells", "120", "--shard-cells", "60"]
    return runner.invoke(app, [*args, "--out", str(out), *extra])


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize(
    "contents",
    [
        {"notes.txt": "mine"},
        {"manifest.json": "{}", "data.csv": "a,b"},
        {"manifest.json": '{"format": "atlasprep-token-store"}', "thesis.tex": "x"},
        {BUILD_MARKER: "{}", "photo.jpg": "x"},
        {"shards/train-00000.arrow": "x", "keep.txt": "x"},
    ],
)
def test_a_foreign_directory_is_neither_written_nor_deleted(small_census, tmp_path, contents, overwrite):
    out = tmp_path / "out"
    for name, text in contents.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    before = _files(out)
    r = _tokenize_cli(small_census, out, *(["--overwrite"] if overwrite else []))
    assert_clean_error(r, codes=(2,), contains=str(out))
    assert _files(out) == before


def test_overwrite_of_a_store_with_foreign_files_deletes_nothing(built, small_census, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(built, out)
    (out / "shards" / "my-notes.txt").write_text("keep me")
    before = _files(out)
    r = _tokenize_cli(small_census, out, "--overwrite")
    assert_clean_error(r, codes=(2,), contains="my-notes.txt")
    assert _files(out) == before


def test_a_complete_store_is_replaced_only_with_overwrite(small_census, tmp_path):
    out = tmp_path / "s"
    assert _tokenize_cli(small_census, out).exit_code == 0
    first = _files(out)
    assert_clean_error(_tokenize_cli(small_census, out), codes=(2,), contains="--overwrite")
    assert _files(out) == first
    r = _tokenize_cli(small_census, out, "--overwrite")
    assert r.exit_code == 0, r.stderr
    assert _files(out) == first  # the same bytes again
    (tmp_path / "empty").mkdir()
    assert _tokenize_cli(small_census, tmp_path / "empty").exit_code == 0


def test_out_that_is_a_file_is_refused(small_census, tmp_path):
    out = tmp_path / "a-file"
    out.write_text("x")
    assert_clean_error(_tokenize_cli(small_census, out), codes=(2,), contains="not a directory")
    assert out.read_text() == "x"


# -- a failed build leaves nothing; a resumed one leaves no stale shard -------------------------


@pytest.mark.parametrize(
    ("where", "code"),
    [
        ("atlasprep.shard.zarr.write_zarr_shard", errno.ENOSPC),
        ("atlasprep.tokenize.jobs.write_spill", errno.EACCES),
        ("atlasprep.tokenize.api.write_json_atomic", errno.ENOSPC),
        ("atlasprep.tokenize.tokenizer_files.write_bytes_atomic", errno.EROFS),
    ],
)
@pytest.mark.parametrize("existing", [False, True])
def test_an_os_error_mid_build_is_one_line_and_leaves_nothing(
    small_census, tmp_path, monkeypatch, where, code, existing
):
    out = tmp_path / "s"
    if existing:
        out.mkdir()

    def fail(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(code, os.strerror(code), str(out / "shards" / "x"))

    monkeypatch.setattr(where, fail)
    r = _tokenize_cli(small_census, out, "--format", "zarr")
    line = assert_clean_error(r, codes=(1,), contains=os.strerror(code))
    assert str(out) in line
    if existing:
        assert out.is_dir()
        assert not any(out.iterdir())
    else:
        assert not out.exists()


def test_a_usage_error_found_late_leaves_no_output_directory(small_census, tmp_path):
    out = tmp_path / "never"
    r = _tokenize_cli(small_census, out, "--donor-id", "nobody-has-this-id")
    assert_clean_error(r, codes=(1, 2))
    assert not out.exists()


def _killed_at(target: str, config: TokenizeConfig, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A build killed where ``target`` runs: nothing cleaned up after it, as after kill -9."""
    from atlasprep.shard import directory

    def crash(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(directory.ClaimedStore, "abandon", lambda self: None)
        patch.setattr(target, crash)
        with pytest.raises(KeyboardInterrupt):
            tokenize_cells(config)


def test_a_rerun_after_a_crash_with_another_shard_size_leaves_no_stale_shard(
    small_census, tmp_path, monkeypatch
):
    out = tmp_path / "s"
    # a crash just before the manifest (as kill -9 would leave it: shards and the marker)
    _killed_at(
        "atlasprep.tokenize.api.write_json_atomic", _config(small_census, out, shard_cells=25), monkeypatch
    )
    assert (out / BUILD_MARKER).exists()
    assert len(list((out / "shards").iterdir())) > 6
    (out / "shards" / ".train-00003.arrow.tmp-999999999").write_bytes(b"half")
    result = tokenize_cells(_config(small_census, out, shard_cells=100))
    listed = {s["path"] for s in result.manifest["shards"]}
    assert {f"shards/{p.name}" for p in (out / "shards").iterdir()} == listed
    assert not (out / BUILD_MARKER).exists()
    assert not (out / ".work").exists()
    assert validate_store(out) == []
    clean = tmp_path / "clean"
    tokenize_cells(_config(small_census, clean, shard_cells=100))
    assert _files(clean) == _files(out)


def test_a_killed_build_of_the_same_configuration_is_resumed(small_census, tmp_path, monkeypatch, caplog):
    out = tmp_path / "s"
    _killed_at("atlasprep.shard.writer.ShardWriter.finish", _config(small_census, out), monkeypatch)
    assert (out / ".work").exists()
    with caplog.at_level("WARNING", logger="atlasprep"):
        tokenize_cells(_config(small_census, out))
    assert "finishing it" in caplog.text
    assert validate_store(out) == []


def test_the_library_refuses_as_the_cli_does(small_census, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("x")
    with pytest.raises(ForeignOutputError, match=r"thesis\.tex"):
        tokenize_cells(_config(small_census, out, overwrite=True))
    done = tmp_path / "done"
    tokenize_cells(_config(small_census, done))
    with pytest.raises(OutputExistsError):
        tokenize_cells(_config(small_census, done))


# -- inputs of the wrong shape: one line, exit 1 or 2, nothing written -------------------------

BAD_DICTIONARIES = {
    "token dictionary is a list": ("--token-dictionary", "[1, 2, 3]", "expected a JSON object"),
    "token ids are text": ("--token-dictionary", '{"<pad>": 0, "ENSG1": "one"}', "integer token id from 0"),
    "token ids negative": ("--token-dictionary", '{"<pad>": 0, "ENSG1": -4}', "integer token id from 0"),
    "token ids past int32": ("--token-dictionary", '{"<pad>": 0, "ENSG1": 2147483648}', "to 2,147,483,647"),
    "a pickle": ("--token-dictionary", "\x80\x04\x95 not json", "a Python pickle, not JSON"),
    "nested too deeply": ("--gene-medians", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "token ids shared": ("--token-dictionary", '{"<pad>": 0, "ENSG1": 0}', "share an id"),
    "no <pad> token": ("--token-dictionary", '{"ENSG1": 1}', "<pad>"),
    "not JSON": ("--token-dictionary", "{'a': 1", "not a JSON file"),
    "medians negative": ("--gene-medians", '{"ENSG1": -1.5}', "positive finite"),
    "medians text": ("--gene-medians", '{"ENSG1": "high"}', "positive finite"),
    "medians nested": ("--gene-medians", '{"ENSG1": {"m": 1}}', "positive finite"),
    "mapping to numbers": ("--gene-mapping", '{"TP53": 7157}', "gene ID"),
}


@pytest.mark.parametrize("case", sorted(BAD_DICTIONARIES))
def test_a_dictionary_of_the_wrong_shape_is_one_line(small_census, tmp_path, case):
    option, text, words = BAD_DICTIONARIES[case]
    path = tmp_path / "dict.json"
    path.write_bytes(text.encode("latin-1"))  # (the pickle case: its bytes as they are)
    out = tmp_path / "s"
    r = _tokenize_cli(small_census, out, option, str(path))
    assert_clean_error(r, codes=(2,), contains=words)
    assert not out.exists()


@pytest.mark.parametrize("command", ["inspect", "validate"])
@pytest.mark.parametrize("target", ["missing", "empty dir", "a file"])
def test_store_commands_on_what_is_no_store(tmp_path, command, target):
    path = tmp_path / "x"
    if target == "empty dir":
        path.mkdir()
    elif target == "a file":
        path.write_text("hello")
    line = assert_clean_error(runner.invoke(app, [command, str(path)]))
    if target == "a file" and command == "inspect":  # (it said "no such directory")
        assert "a file, not a token store" in line


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_inspect_plot_that_cannot_be_written_leaves_nothing(built, tmp_path, monkeypatch, code):
    import matplotlib.figure

    def fail(self, target, *args, **kwargs):  # type: ignore[no-untyped-def]
        Path(target).write_bytes(b"half a png")
        raise OSError(code, os.strerror(code), str(target))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", fail)
    png = tmp_path / "plots" / "store.png"
    png.parent.mkdir()
    r = runner.invoke(app, ["inspect", str(built), "--plot", str(png)])
    assert_clean_error(r, codes=(1,), contains=os.strerror(code))
    assert list(png.parent.iterdir()) == []


@pytest.mark.parametrize("name", ["cells.zarr", "cells.h5ad"])
def test_slice_overwrite_never_deletes_a_foreign_directory(small_census, tmp_path, name):
    out = tmp_path / name
    out.mkdir()
    (out / "experiment.csv").write_text("mine")
    before = _files(out)
    args = ["slice", "--census-uri", str(small_census), "--max-cells", "50", "--out", str(out)]
    assert_clean_error(runner.invoke(app, [*args, "--overwrite"]), codes=(2,), contains=str(out))
    assert _files(out) == before
    assert not list(tmp_path.glob(f"{name}.*"))  # no temp or spill left beside it


def test_slice_overwrite_replaces_its_own_zarr_store(small_census, tmp_path):
    out = tmp_path / "cells.zarr"
    args = ["slice", "--census-uri", str(small_census), "--max-cells", "50", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    r = runner.invoke(app, [*args, "--overwrite", "--seed", "3"])
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.zarr"]


def test_slice_overwrite_keeps_what_is_not_its_own(small_census, tmp_path):
    """--overwrite replaces an AnnData store, not a file a user put inside one, nor a file that
    is not HDF5 at an .h5ad path (each was deleted or replaced before)."""
    out = tmp_path / "cells.zarr"
    args = ["slice", "--census-uri", str(small_census), "--max-cells", "20", "--overwrite"]
    assert runner.invoke(app, [*args, "--out", str(out)]).exit_code == 0
    (out / "notes.txt").write_text("mine")
    r = runner.invoke(app, [*args, "--out", str(out)])
    assert r.exit_code == 2
    assert_clean_error(r, contains="holds notes.txt, which is not part of a Zarr store")
    assert (out / "notes.txt").read_text() == "mine"
    text = tmp_path / "notes.h5ad"
    text.write_text("mine")
    r = runner.invoke(app, [*args, "--out", str(text)])
    assert r.exit_code == 2
    assert_clean_error(r, contains="is not an HDF5 file")
    assert text.read_text() == "mine"
    h5 = tmp_path / "cells.h5ad"
    assert runner.invoke(app, [*args, "--out", str(h5)]).exit_code == 0
    assert runner.invoke(app, [*args, "--out", str(h5), "--seed", "2"]).exit_code == 0  # its own: replaced


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["tokenize", "--census", "demo", "--shard-cells", "many"], "Invalid value for '--shard-cells'"),
        (["tokenize", "--no-such-option"], "No such option"),
        (["tokenize", "--census", "demo", "--scheme", "words"], "'words' is not one of 'rank', 'bin', 'raw'"),
        (["tokenize", "--census", "demo", "--format", "parquet"], "'parquet' is not one of 'arrow', 'zarr'"),
        (["tokenize", "--census", "demo", "--tie-order", "sorted"], "'sorted' is not one of 'numpy'"),
        (["align", "barcodes", "--rna", "a", "--out", "b", "--how", "sideways"], "is not one of 'inner'"),
        (["validate"], "missing; give it as the first argument"),
        (["no-such-command"], "No such command"),
    ],
)
def test_the_parsers_own_refusals_are_one_line_from_the_shell(tmp_path, args, words):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "atlasprep", *args], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert words in lines[0], lines[0]
    assert "--help" in lines[0]
    assert list(tmp_path.iterdir()) == []
