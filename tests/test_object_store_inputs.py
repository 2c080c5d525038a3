"""AnnData inputs read from object storage (``--input s3://…``), against a local moto server:
the same output as the local file, one copy in the cache reused until the object changes, and
one-line errors for what is not there."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

pytest.importorskip("moto.server", reason="moto[server] is not installed (the test extra)")
pytest.importorskip("s3fs", reason="s3fs is not installed (the s3 extra)")

import anndata as ad
from conftest import assert_clean_error
from typer.testing import CliRunner

from atlasprep._remote import open_root
from atlasprep.cli import app
from atlasprep.slice import SliceConfig, slice_cells
from atlasprep.sources import (
    CellFilter,
    SourceSpec,
    _fetch,
)


@pytest.fixture
def cells(small_census: Path, tmp_path: Path) -> Path:
    out = tmp_path / "local" / "cells.h5ad"
    out.parent.mkdir()
    slice_cells(SliceConfig(source=SourceSpec(census_uri=str(small_census), max_cells=200, seed=2), out=out))
    return out


def _upload(local: Path, url: str) -> None:
    root = open_root(url)
    root.fs.put(str(local), root.path)


def _hashes(store: Path) -> dict[str, str]:
    return {
        str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(store.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def test_slice_and_tokenize_read_an_h5ad_url_as_the_local_file(cells: Path, s3: str, tmp_path: Path) -> None:
    url = f"{s3}/in/cells.h5ad"
    _upload(cells, url)
    runner = CliRunner()
    for name, source in (("local", str(cells)), ("remote", url)):
        done = runner.invoke(
            app, ["slice", "--input", source, "--all-data", "--out", str(tmp_path / f"{name}.h5ad")]
        )
        assert done.exit_code == 0, done.output
        done = runner.invoke(app, ["tokenize", source, "--all-data", "--out", str(tmp_path / f"tok-{name}")])
        assert done.exit_code == 0, done.output
    local, remote = ad.read_h5ad(tmp_path / "local.h5ad"), ad.read_h5ad(tmp_path / "remote.h5ad")
    assert (local.X != remote.X).nnz == 0
    assert local.obs.equals(remote.obs)
    local_files, remote_files = _hashes(tmp_path / "tok-local"), _hashes(tmp_path / "tok-remote")
    assert local_files.pop("README.md") != remote_files.pop("README.md")  # the card names its source
    assert local_files == remote_files
    assert url in (tmp_path / "tok-remote" / "README.md").read_text()
    # provenance names the URL, with the object's sha256
    text = str(remote.uns["atlasprep_provenance"])
    assert url in text
    assert hashlib.sha256(cells.read_bytes()).hexdigest() in text


def test_the_copy_is_reused_until_the_object_changes(cells: Path, s3: str, monkeypatch) -> None:
    url = f"{s3}/in/cells.h5ad"
    _upload(cells, url)
    fetched: list[str] = []
    original = _fetch._copy

    def counting(u: str) -> Path:
        before = {p: p.stat().st_mtime_ns for p in _cache_files()}
        local = original(u)
        if {p: p.stat().st_mtime_ns for p in _cache_files()} != before:
            fetched.append(u)
        return local

    monkeypatch.setattr(_fetch, "_copy", counting)
    first = _fetch.staged(url)
    assert _fetch.staged(url) == first
    assert fetched == [url]  # copied once
    smaller = ad.read_h5ad(cells)[:50].copy()
    changed = cells.parent / "changed.h5ad"
    smaller.write_h5ad(changed)
    _upload(changed, url)
    again = _fetch.staged(url)
    assert fetched == [url, url]  # a new version is copied again
    assert ad.read_h5ad(again).n_obs == 50
    assert not any(p.name.endswith(".partial") for p in _cache_files())


def _cache_files() -> list[Path]:
    from atlasprep._cache import cache_dir

    return [p for p in cache_dir().rglob("*") if p.is_file()]


def test_h5mu_modality_url_splits(s3: str) -> None:
    assert _fetch.split_input(f"{s3}/x.h5mu:rna") == (f"{s3}/x.h5mu", "rna")
    assert _fetch.split_input(f"{s3}/x.h5ad") == (f"{s3}/x.h5ad", None)
    assert _fetch.staged("/local/file.h5ad") == "/local/file.h5ad"  # a path is not touched


def test_a_missing_object_is_a_one_line_error(s3: str, tmp_path: Path) -> None:
    done = CliRunner().invoke(
        app, ["slice", "--input", f"{s3}/nothing/here.h5ad", "--all-data", "--out", str(tmp_path / "x.h5ad")]
    )
    assert "no such object" in assert_clean_error(done, codes=(2,))
    assert not (tmp_path / "x.h5ad").exists()


def test_spec_filters_apply_to_a_url_input(cells: Path, s3: str) -> None:
    from atlasprep.sources import open_source, select

    url = f"{s3}/in/cells.h5ad"
    _upload(cells, url)
    spec = SourceSpec(inputs=(url,), filter=CellFilter(primary_only=False), max_cells=20, seed=1)
    source = open_source(spec)
    try:
        assert select(spec, source).n_cells == 20
        assert source.info.uri == url
    finally:
        source.close()


@pytest.mark.parametrize("tail", ["in/..", "in/.hidden.h5ad"])
def test_a_url_naming_no_file_inside_the_cache_is_refused(s3: str, tail: str) -> None:
    """The copy's name comes from the URL: one that would leave its cache folder is refused."""
    from atlasprep._cache import cache_dir
    from atlasprep.errors import UsageError

    before = sorted(p.name for p in cache_dir().iterdir())
    with pytest.raises(UsageError, match=r"name an object|a '\.' or '\.\.' segment"):
        _fetch.staged(f"{s3}/{tail}")
    assert sorted(p.name for p in cache_dir().iterdir()) == before
