"""Token stores in object storage, against a local S3-compatible server (moto's server mode, on
127.0.0.1; never the network): build → S3 → ShardDataset → every cell once; the objects are a
local build's bytes; a killed build resumes to the same bytes; stranger objects and paths
leading out are refused as locally."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("moto.server", reason="moto[server] is not installed (the test extra)")
pytest.importorskip("s3fs", reason="s3fs is not installed (the s3 extra)")

from conftest import assert_clean_error

from atlasprep._remote import open_root
from atlasprep.errors import (
    ForeignOutputError,
    InputFormatError,
    OutputExistsError,
    SourceError,
    UnsafePathError,
)
from atlasprep.loader import ShardDataset
from atlasprep.shard.publish import RemoteBuild
from atlasprep.sources import CellFilter, SourceSpec
from atlasprep.tokenize.api import tokenize_cells
from atlasprep.tokenize.config import TokenizeConfig
from atlasprep.tokenize.remote import staging_dir, tokenize_to_url

BUCKET = "corpora"


def _config(census: Path, fmt: str = "arrow", **changes: object) -> TokenizeConfig:
    values: dict[str, object] = {
        "source": SourceSpec(census_uri=str(census), filter=CellFilter(primary_only=False), max_cells=600),
        "out": Path("unused"),
        "scheme": "bin",
        "max_len": 128,
        "shard_cells": 97,
        "split_by": "donor_id",
        "split": (0.8, 0.1, 0.1),
        "format": fmt,
        "seed": 0,
    }
    values.update(changes)
    return TokenizeConfig(**values)  # type: ignore[arg-type]


def _local_files(store: Path) -> dict[str, str]:
    return {
        p.relative_to(store).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(store.rglob("*"))
        if p.is_file()
    }


def _remote_files(url: str) -> dict[str, str]:
    root = open_root(url)
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in sorted(root.listing())}


@pytest.fixture(scope="module")
def local_stores(small_census: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("local")
    made = {}
    for fmt in ("arrow", "zarr"):
        made[fmt] = base / fmt
        tokenize_cells(_config(small_census, fmt, out=made[fmt]))
    return made


@pytest.mark.parametrize("fmt", ["arrow", "zarr"])
def test_s3_store_is_the_local_bytes_and_loads_every_cell_once(
    small_census: Path, local_stores: dict[str, Path], s3: str, fmt: str
) -> None:
    url = f"{s3}/corpus/{fmt}"
    tokenize_to_url(_config(small_census, fmt), url)
    assert _remote_files(url) == _local_files(local_stores[fmt])
    assert not staging_dir(url).exists()  # the staging store is removed once uploaded

    local = ShardDataset(local_stores[fmt], "train", seed=3, buffer_size=64)
    remote = ShardDataset(url, "train", seed=3, buffer_size=64)
    remote_ids = [cell["cell_id"] for cell in remote]
    assert len(remote_ids) == len(set(remote_ids)) == remote.num_cells
    assert remote_ids == [cell["cell_id"] for cell in local]  # the same cells, in the same order
    first_remote, first_local = next(iter(remote.batched(16))), next(iter(local.batched(16)))
    assert first_remote["input_ids"].tolist() == first_local["input_ids"].tolist()
    assert ShardDataset(url, "train", verify="sha256").num_cells == remote.num_cells


@pytest.mark.parametrize("fmt", ["arrow", "zarr"])
def test_s3_loader_workers_read_each_cell_once(
    small_census: Path, local_stores: dict[str, Path], s3: str, fmt: str
) -> None:
    from torch.utils.data import DataLoader

    url = f"{s3}/corpus/workers-{fmt}"
    tokenize_to_url(_config(small_census, fmt), url)
    dataset = ShardDataset(url, "train", batch_size=32)
    loader = DataLoader(dataset, batch_size=None, num_workers=2)
    ids = [cell for batch in loader for cell in batch["cell_id"]]
    assert len(ids) == len(set(ids)) == dataset.num_cells


def test_killed_upload_resumes_to_the_same_bytes(
    small_census: Path, local_stores: dict[str, Path], s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{s3}/corpus/resumed"
    put = RemoteBuild._put_shard
    calls = {"n": 0}

    def failing(self: RemoteBuild, local: Path, relative: str) -> None:
        if calls["n"] == 3:
            raise ConnectionError("the network went away")
        calls["n"] += 1
        put(self, local, relative)

    monkeypatch.setattr(RemoteBuild, "_put_shard", failing)
    with pytest.raises(ConnectionError):
        tokenize_to_url(_config(small_census, "zarr"), url)
    listing = open_root(url).listing()
    assert "manifest.json" not in listing  # incomplete: no reader takes it for a store
    assert ".atlasprep-build.json" in listing
    with pytest.raises(InputFormatError, match=r"no manifest\.json"):
        ShardDataset(url)

    monkeypatch.setattr(RemoteBuild, "_put_shard", put)
    shutil.copytree(local_stores["zarr"], staging_dir(url))  # what a kill -9 during the upload leaves
    kept: list[int] = []
    publish = RemoteBuild.publish

    def counting(self: RemoteBuild, local: Path, manifest: dict) -> None:  # type: ignore[type-arg]
        publish(self, local, manifest)  # type: ignore[arg-type]
        kept.append(self.kept)

    monkeypatch.setattr(RemoteBuild, "publish", counting)
    tokenize_to_url(_config(small_census, "zarr"), url)
    assert kept == [3]  # the shards uploaded before the failure were kept, not uploaded again
    assert _remote_files(url) == _local_files(local_stores["zarr"])


def test_complete_store_needs_overwrite_and_stale_shards_go(small_census: Path, s3: str) -> None:
    url = f"{s3}/corpus/again"
    tokenize_to_url(_config(small_census, shard_cells=50), url)
    with pytest.raises(OutputExistsError, match="overwrite"):
        tokenize_to_url(_config(small_census), url)
    tokenize_to_url(_config(small_census, overwrite=True), url)  # fewer, larger shards
    root = open_root(url)
    manifest = json.loads((root / "manifest.json").read_bytes())
    listed = {s["path"] for s in manifest["shards"]}
    assert {n for n in root.listing() if n.startswith("shards/")} == listed


def test_objects_atlasprep_did_not_write_are_refused_and_kept(small_census: Path, s3: str) -> None:
    url = f"{s3}/corpus/theirs"
    root = open_root(url)
    root.fs.pipe_file((root / "notes/readme.txt").path, b"mine")
    with pytest.raises(ForeignOutputError, match="did not write"):
        tokenize_to_url(_config(small_census), url)
    assert set(root.listing()) == {"notes/readme.txt"}


def test_manifest_paths_leading_out_are_refused(
    small_census: Path, local_stores: dict[str, Path], s3: str
) -> None:
    url = f"{s3}/corpus/evil"
    tokenize_to_url(_config(small_census), url)
    root = open_root(url)
    manifest = json.loads((root / "manifest.json").read_bytes())
    manifest["shards"][0]["path"] = "shards/../../other/secret.arrow"
    root.fs.pipe_file((root / "manifest.json").path, json.dumps(manifest).encode())
    with pytest.raises(UnsafePathError, match="leads out"):
        ShardDataset(url)


def test_missing_shard_and_missing_bucket_are_one_line_errors(small_census: Path, s3: str) -> None:
    from atlasprep.errors import CorruptStoreError

    url = f"{s3}/corpus/damaged"
    tokenize_to_url(_config(small_census), url)
    root = open_root(url)
    manifest = json.loads((root / "manifest.json").read_bytes())
    root.fs.rm((root / manifest["shards"][0]["path"]).path)
    with pytest.raises(CorruptStoreError, match="missing"):
        ShardDataset(url)
    with pytest.raises(SourceError, match="bucket does not exist"):
        tokenize_to_url(_config(small_census), "s3://no-such-bucket-here/corpus")


def _cli(*args: str):  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from atlasprep.cli import app

    return CliRunner().invoke(app, list(args))


def _cli_args(census: Path, out: str) -> list[str]:
    return [
        "tokenize", "--census-uri", str(census), "--all-data", "--max-cells", "600", "--scheme", "bin",
        "--max-len", "128", "--shard-cells", "97", "--split-by", "donor_id", "--seed", "0", "--out", out,
    ]  # fmt: skip


def test_cli_tokenize_out_s3_is_the_local_store(small_census: Path, s3: str, tmp_path: Path) -> None:
    url = f"{s3}/cli/store"
    result = _cli(*_cli_args(small_census, url))
    assert result.exit_code == 0, result.stderr
    assert url in result.stdout
    assert _cli(*_cli_args(small_census, str(tmp_path / "local"))).exit_code == 0
    assert _remote_files(url) == _local_files(tmp_path / "local")
    again = _cli(*_cli_args(small_census, url))
    assert_clean_error(again, codes=(2,), contains="overwrite")


def test_missing_credentials_are_one_line(
    small_census: Path, s3_server: str, s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask an instance's metadata service
    # the same server by another name: a filesystem fsspec has not cached (with credentials)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.replace("127.0.0.1", "localhost"))
    result = _cli(*_cli_args(small_census, f"{s3}/cli/nocreds"))
    assert_clean_error(result, codes=(2,), contains="no credentials")
    with pytest.raises(SourceError, match="no credentials"):
        ShardDataset(f"{s3}/cli/nocreds")


def test_cli_slice_out_s3_zarr_is_the_local_slice(
    small_census: Path, s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # the provenance's time: the same bytes
    args = ["slice", "--census-uri", str(small_census), "--tissue", "lung", "--out"]
    url = f"{s3}/slices/lung.zarr"
    done = _cli(*args, url)
    assert done.exit_code == 0, done.stderr
    assert url in done.stdout
    assert _cli(*args, str(tmp_path / "lung.zarr")).exit_code == 0
    provenance = "uns/atlasprep_provenance/c"  # its step names the output: the URL, the path
    remote, local = _remote_files(url), _local_files(tmp_path / "lung.zarr")
    assert {k: v for k, v in remote.items() if k != provenance} == {
        k: v for k, v in local.items() if k != provenance
    }
    import anndata as ad

    steps = json.loads(ad.read_zarr(url).uns["atlasprep_provenance"])
    assert steps[-1]["config"]["out"] == url
    assert_clean_error(_cli(*args, url), codes=(2,), contains="overwrite")
    assert _cli(*args, url, "--overwrite").exit_code == 0
    assert _remote_files(url) == remote

    theirs = f"{s3}/slices/theirs.zarr"
    root = open_root(theirs)
    root.fs.pipe_file((root / "data.bin").path, b"mine")
    assert_clean_error(_cli(*args, theirs, "--overwrite"), codes=(2,), contains="not an AnnData Zarr store")
    assert set(root.listing()) == {"data.bin"}
    assert_clean_error(_cli(*args, f"{s3}/slices/lung.h5ad"), codes=(2,), contains="Zarr store")
    mine = open_root(url)
    mine.fs.pipe_file((mine / "notes.txt").path, b"mine")  # a file put inside our own store
    assert_clean_error(_cli(*args, url, "--overwrite"), codes=(2,), contains="(notes.txt)")
    assert "notes.txt" in mine.listing()


def test_inspect_and_validate_a_store_on_s3(
    small_census: Path, local_stores: dict[str, Path], s3: str
) -> None:
    from atlasprep.shard.store import find_leaks, inspect_store, validate_store

    url = f"{s3}/corpus/checked"
    tokenize_to_url(_config(small_census, "zarr"), url)
    root = open_root(url)
    assert validate_store(root) == []
    columns = ["donor_id", "cell_type_ontology_term_id"]
    remote, local = inspect_store(root, columns=columns), inspect_store(local_stores["zarr"], columns=columns)
    assert remote.to_json() == local.to_json()
    assert find_leaks(root, ["donor_id"]) == []
    first = json.loads((root / "manifest.json").read_bytes())["shards"][0]["path"]
    root.fs.pipe_file((root / f"{first}/offsets/c/0").path, b"\x00" * 8)  # a damaged chunk
    root.fs.pipe_file((root / "shards/stray.txt").path, b"?")
    found = {p.where: p.what for p in validate_store(root)}
    assert "sha256" in found[first] or "bytes" in found[first]
    assert found["shards/stray.txt"] == "not listed in the manifest"


def test_census_uri_on_s3_tokenizes_as_the_local_copy(
    small_census: Path, local_stores: dict[str, Path], s3: str
) -> None:
    census = f"{s3}/mirror/census"
    root = open_root(census)
    files = sorted(p for p in small_census.rglob("*") if p.is_file())
    root.fs.put(
        [str(p) for p in files], [(root / p.relative_to(small_census).as_posix()).path for p in files]
    )
    url = f"{s3}/corpus/from-s3"
    spec = SourceSpec(census_uri=census, filter=CellFilter(primary_only=False), max_cells=600)
    tokenize_to_url(_config(small_census, source=spec), url)
    remote = _remote_files(url)
    local = _local_files(local_stores["arrow"])
    shards = {k for k in local if k.startswith("shards/")}
    assert shards  # the cells, tokenized, are the same bytes (the manifest names the other source)
    assert {k: remote[k] for k in shards} == {k: local[k] for k in shards}
    source = json.loads((open_root(url) / "manifest.json").read_bytes())["source"]
    assert source["uri"] == census


def test_killed_slice_upload_is_finished_and_strangers_kept(
    small_census: Path, s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from atlasprep.slice import remote

    args = ["slice", "--census-uri", str(small_census), "--tissue", "lung", "--out"]
    url = f"{s3}/slices/killed.zarr"
    root = open_root(url)
    root.fs.pipe_file((root / remote.UPLOAD_MARKER).path, b"{}")  # what a killed upload leaves
    root.fs.pipe_file((root / "X/data/c/0").path, b"half")
    done = _cli(*args, url)  # no --overwrite needed: the upload is atlasprep's to finish
    assert done.exit_code == 0, done.stderr
    listing = root.listing()
    assert remote.UPLOAD_MARKER not in listing
    assert "zarr.json" in listing

    root.fs.pipe_file((root / remote.UPLOAD_MARKER).path, b"{}")
    root.fs.pipe_file((root / "notes.txt").path, b"mine")  # not a Zarr file: never deleted
    assert_clean_error(_cli(*args, url, "--overwrite"), codes=(2,), contains="not an AnnData Zarr store")
    assert "notes.txt" in root.listing()


_KILLED_BUILD = """
import os, signal, sys
from pathlib import Path
from atlasprep.shard.publish import RemoteBuild
from atlasprep.sources import CellFilter, SourceSpec
from atlasprep.tokenize.config import TokenizeConfig
from atlasprep.tokenize.remote import tokenize_to_url

put, done = RemoteBuild._put_shard, []

def dying(self, local, relative):
    if len(done) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: as the OOM killer does
    put(self, local, relative)
    done.append(relative)

RemoteBuild._put_shard = dying
census, url = sys.argv[1], sys.argv[2]
spec = SourceSpec(census_uri=census, filter=CellFilter(primary_only=False), max_cells=600)
config = TokenizeConfig(source=spec, out=Path("unused"), scheme="bin", max_len=128, shard_cells=97,
                        split_by="donor_id", split=(0.8, 0.1, 0.1), format="arrow", seed=0)
tokenize_to_url(config, url)
"""


def test_kill_9_during_upload_resumes_to_the_same_bytes(
    small_census: Path, local_stores: dict[str, Path], s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal
    import subprocess
    import sys

    url = f"{s3}/corpus/killed"
    killed = subprocess.run([sys.executable, "-c", _KILLED_BUILD, str(small_census), url], check=False)
    assert killed.returncode == -signal.SIGKILL
    assert staging_dir(url).is_dir()  # the killed run's staging store is left, and replaced
    marker = json.loads((open_root(url) / ".atlasprep-build.json").read_bytes())
    assert len(marker["uploaded"]) == 2
    kept: list[int] = []
    publish = RemoteBuild.publish

    def counting(self: RemoteBuild, local: Path, manifest: dict) -> None:  # type: ignore[type-arg]
        publish(self, local, manifest)  # type: ignore[arg-type]
        kept.append(self.kept)

    monkeypatch.setattr(RemoteBuild, "publish", counting)
    tokenize_to_url(_config(small_census), url)
    assert kept == [2]
    assert _remote_files(url) == _local_files(local_stores["arrow"])
