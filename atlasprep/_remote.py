"""Object storage (S3 and any fsspec URL): naming a store by URL, opening it, and one-line errors.

A URL (``s3://bucket/prefix``, ``gs://…``, ``memory://…``) names a :class:`RemoteRoot`: an fsspec
filesystem and the path of the store in it. Its members (:class:`RemotePath`) answer the few
questions atlasprep asks a local path (``exists``, ``is_file``, ``read_bytes``, ``/``), so the
manifest and vocabulary checks run unchanged on both; object stores have no symlinks, so
:func:`atlasprep._io.inside` checks a remote path's parts only.

Storage options come from the standard environment, never from atlasprep: credentials as
botocore reads them (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, …), the endpoint from
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (a MinIO or a test server), anonymous access
with ``AWS_NO_SIGN_REQUEST=1``. Shards are read with range requests and read-ahead
(:data:`READ_BLOCK` bytes a request).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import urlsplit

from atlasprep.errors import SourceError, UsageError

__all__ = [
    "READ_BLOCK",
    "RemotePath",
    "RemoteRoot",
    "StoreRoot",
    "is_url",
    "open_root",
    "remote_errors",
    "staging_dir",
    "storage_options",
    "store_root",
    "tiledb_s3_config",
]

READ_BLOCK = 8 << 20  # bytes a range request reads ahead
_CREDENTIAL_ERRORS = ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError")
_BUCKETED = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})
_UNREACHABLE = ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError")


def is_url(location: object) -> bool:
    """Whether ``location`` names object storage (``scheme://…``) rather than a local path."""
    if not isinstance(location, str):
        return False
    scheme, sep, _ = location.partition("://")
    return bool(sep) and scheme.isascii() and scheme.replace("+", "").isalnum() and scheme != "file"


def storage_options(protocol: str) -> dict[str, Any]:
    """The fsspec options for ``protocol`` that the environment sets (endpoint, anonymous access);
    credentials are left to botocore's own chain."""
    if protocol not in ("s3", "s3a"):
        return {}
    options: dict[str, Any] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint_url"] = endpoint
    if os.environ.get("AWS_NO_SIGN_REQUEST", "").lower() in ("1", "true", "yes"):
        options["anon"] = True
    return options


def tiledb_s3_config() -> dict[str, str]:
    """TileDB's ``vfs.s3.*`` settings from the same environment, for a SOMA store in S3
    (``--census-uri s3://…``): the endpoint (path-style addressing, as S3-compatible servers
    want), the region, and signed requests when credentials are set (the Census's own
    defaults are anonymous)."""
    config: dict[str, str] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        config["vfs.s3.endpoint_override"] = parts.netloc + parts.path.rstrip("/")
        config["vfs.s3.scheme"] = parts.scheme
        config["vfs.s3.use_virtual_addressing"] = "false"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        config["vfs.s3.region"] = region
    if os.environ.get("AWS_NO_SIGN_REQUEST", "").lower() in ("1", "true", "yes"):
        config["vfs.s3.no_sign_request"] = "true"
    elif any(os.environ.get(name) for name in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE")):
        config["vfs.s3.no_sign_request"] = "false"  # TileDB's AWS SDK finds the credentials
    return config


@dataclass(frozen=True, slots=True)
class RemotePath:
    """A file (or a folder: a Zarr shard) under a :class:`RemoteRoot`."""

    root: RemoteRoot
    relative: str  # posix, relative to the root ("" is the root)

    @property
    def path(self) -> str:
        """The path in the filesystem (``bucket/prefix/relative``)."""
        return f"{self.root.path}/{self.relative}" if self.relative else self.root.path

    @property
    def name(self) -> str:
        return PurePosixPath(self.relative).name

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.relative).suffix

    def __str__(self) -> str:
        return f"{self.root.url}/{self.relative}" if self.relative else self.root.url

    def __truediv__(self, part: str) -> RemotePath:
        return RemotePath(self.root, f"{self.relative}/{part}" if self.relative else part)

    def exists(self) -> bool:
        with remote_errors(str(self)):
            return bool(self.root.fs.exists(self.path))

    def is_file(self) -> bool:
        with remote_errors(str(self)):
            return bool(self.root.fs.isfile(self.path))

    def is_dir(self) -> bool:
        with remote_errors(str(self)):
            return bool(self.root.fs.isdir(self.path))

    def is_symlink(self) -> bool:
        return False  # object stores have none

    def read_bytes(self) -> bytes:
        with remote_errors(str(self)):
            return bytes(self.root.fs.cat_file(self.path))

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def open_read(self) -> IO[bytes]:
        """The object for reading with range requests and read-ahead (sequential reads)."""
        with remote_errors(str(self)):
            opened: IO[bytes] = self.root.fs.open(
                self.path, "rb", block_size=READ_BLOCK, cache_type="readahead"
            )
            return opened


@dataclass(frozen=True, slots=True, eq=False)
class RemoteRoot:
    """A store's root in object storage: the URL as given, its filesystem and path there."""

    url: str
    path: str
    fs_type: type  # an fsspec.AbstractFileSystem subclass (fsspec is untyped)
    fs_options: dict[str, Any]

    @property
    def fs(self) -> Any:
        """The filesystem, made in this process (fsspec keeps one per process and options: an
        async one is not fork-safe, and DataLoader workers are forked)."""
        return self.fs_type(**self.fs_options)

    def __str__(self) -> str:
        return self.url

    def __truediv__(self, part: str) -> RemotePath:
        return RemotePath(self, part)

    def joinpath(self, *parts: str) -> RemotePath:
        return RemotePath(self, "/".join(parts))

    def is_dir(self) -> bool:
        """Whether any object lies under the root (object stores have no empty folders)."""
        with remote_errors(self.url):
            self.fs.invalidate_cache(self.path)
            return bool(self.fs.isdir(self.path))

    def exists(self) -> bool:
        return self.is_dir()

    def check_bucket(self) -> None:
        """:class:`SourceError` when the bucket the root is in does not exist (object stores with
        buckets: s3, gs, az); a build checks it before any work."""
        protocol = self.url.partition("://")[0]
        if protocol not in _BUCKETED:
            return
        bucket = self.path.split("/", 1)[0]
        try:
            with remote_errors(self.url):
                self.fs.info(bucket)
        except FileNotFoundError:
            raise SourceError(
                f"{self.url}: the bucket does not exist; check the URL, or create the bucket"
            ) from None

    def listing(self) -> dict[str, int]:
        """Every object under the root: relative path -> bytes (one listing, not cached)."""
        with remote_errors(self.url):
            self.fs.invalidate_cache(self.path)
            found = self.fs.find(self.path, detail=True, withdirs=False) if self.is_dir() else {}
        prefix = self.path.rstrip("/") + "/"
        return {
            name[len(prefix) :]: int(info.get("size") or 0)
            for name, info in found.items()
            if name.startswith(prefix)
        }


StoreRoot = Path | RemoteRoot  # where a token store lives


def open_root(url: str) -> RemoteRoot:
    """The filesystem and path a URL names, with the environment's storage options; a one-line
    :class:`UsageError` for a scheme fsspec does not know or whose package is missing."""
    import fsspec  # an optional reach: local work never imports it

    protocol, _, rest = url.partition("://")
    if any(part in (".", "..") for part in rest.split("/")):  # keys stay under the prefix named
        raise UsageError(f"{url}: a '.' or '..' segment; name the bucket and prefix plainly")
    try:
        fs, path = fsspec.core.url_to_fs(url, **storage_options(protocol))
    except ImportError as exc:
        raise UsageError(
            f"{url}: {protocol}:// needs a package ({exc}); for s3://, pip install 'atlasprep[s3]'"
        ) from None
    except ValueError as exc:
        raise UsageError(f"{url}: not a storage URL fsspec knows ({exc})") from None
    path = str(path).rstrip("/")
    if not path or path == protocol:
        raise UsageError(f"{url}: name a bucket and a prefix, e.g. s3://bucket/corpus")
    return RemoteRoot(url=url.rstrip("/"), path=path, fs_type=type(fs), fs_options=dict(fs.storage_options))


def store_root(location: str | Path | RemoteRoot) -> StoreRoot:
    """A local path, or the :class:`RemoteRoot` a URL names."""
    if isinstance(location, RemoteRoot):
        return location
    if isinstance(location, str) and is_url(location):
        return open_root(location)
    return Path(location)


def staging_dir(url: str) -> Path:
    """Where a store for ``url`` is built before it is uploaded: the same place for the same URL
    (``$TMPDIR/atlasprep-staging-<hash>``), so a re-run finds what a killed run left."""
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"atlasprep-staging-{digest}"


@contextlib.contextmanager
def remote_errors(where: str) -> Iterator[None]:
    """Object storage's failures as one line that says what to do: no credentials, access
    denied, no such bucket, an endpoint that does not answer."""
    try:
        yield
    except FileNotFoundError as exc:
        if "bucket" in str(exc).lower():
            raise SourceError(
                f"{where}: the bucket does not exist; check the URL, or create the bucket"
            ) from None
        raise
    except PermissionError as exc:
        raise SourceError(
            f"{where}: access denied ({exc}); check the credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE) "
            "and the bucket's policy"
        ) from None
    except Exception as exc:
        name = type(exc).__name__
        if name in _CREDENTIAL_ERRORS:
            raise SourceError(
                f"{where}: no credentials for object storage; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or AWS_NO_SIGN_REQUEST=1 for a public bucket"
            ) from None
        if name in _UNREACHABLE:
            raise SourceError(
                f"{where}: the storage endpoint does not answer ({exc}); "
                "check AWS_ENDPOINT_URL and the network"
            ) from None
        raise
