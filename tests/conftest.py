from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from atlasprep.testing import small_census as _build_small_census

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def small_census(tmp_path_factory) -> Path:
    """A ~1,500-cell Census-layout store built by the demo generator (same code, small size)."""
    return _build_small_census(tmp_path_factory.mktemp("census"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tests never touch the user's cache; the demo atlas they build lives in a session dir."""
    monkeypatch.setenv("ATLASPREP_CACHE", str(tmp_path_factory.getbasetemp() / "atlasprep-cache"))


def demo_cells(census: Path, n_cells: int, batch_size: int = 128):  # type: ignore[no-untyped-def]
    """The first ``n_cells`` primary cells of a demo store: (CSR counts, float32; var gene IDs)."""
    import numpy as np
    import scipy.sparse as sp

    from atlasprep.sources import CellFilter, open_census, resolve_filter

    source = open_census(census_uri=str(census))
    try:
        positions = source.select(source.compile(resolve_filter(CellFilter())))[:n_cells]
        X = sp.vstack(
            [b.X for b in source.iter_batches(positions, var_positions=None, batch_size=batch_size)]
        )
        genes = list(source.var().index)
    finally:
        source.close()
    return sp.csr_matrix(X, dtype=np.float32), genes


def source_module(package: str, src: str, name: str, **attributes: object):  # type: ignore[no-untyped-def]
    """``package.name`` loaded from ``src/name.py`` of a reference tool's source checkout (its
    package ``__init__`` would import the whole model stack): the package is a stub holding
    ``attributes``, the names the module imports from it."""
    import importlib.util
    import sys
    import types

    stub = types.ModuleType(package)
    stub.__path__ = [src]
    for key, value in attributes.items():
        setattr(stub, key, value)
    sys.modules.setdefault(package, stub)
    spec = importlib.util.spec_from_file_location(f"{package}.{name}", Path(src) / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shared_file(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"../shared/data/{relative} is not here")
    return path


def assert_clean_error(result, *, codes=(1, 2), contains: str | None = None) -> str:  # type: ignore[no-untyped-def]
    """A CLI result (typer's CliRunner, ``catch_exceptions=True``) that failed as the shell
    contract says: exit 1 or 2, no exception escaped (no traceback), and stderr holding exactly
    one ``Error: …`` line (``contains`` in it when given). Returns that line."""
    assert result.exit_code in codes, (result.exit_code, result.stdout, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    if contains is not None:
        assert contains in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A moto S3 server on a free local port (moto[server], the test extra); its endpoint URL.
    Never the network."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (the test extra)")
    pytest.importorskip("s3fs", reason="s3fs is not installed (the s3 extra)")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The environment a user sets for an S3-compatible endpoint; a fresh bucket each test.
    Returns the bucket's URL."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_NO_SIGN_REQUEST", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never the network
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the staging directory
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    bucket = f"corpora-{hashlib.sha256(str(tmp_path).encode()).hexdigest()[:8]}"
    from atlasprep._remote import open_root

    open_root(f"s3://{bucket}/x").fs.mkdir(bucket)
    return f"s3://{bucket}"
