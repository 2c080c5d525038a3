"""Open the CELLxGENE Census (remote, by version), a Census-layout SOMA on disk, or the demo atlas."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

import tiledbsoma as soma

from atlasprep.errors import NetworkError, SourceError, UsageError
from atlasprep.sources.base import SourceInfo
from atlasprep.sources.organisms import ORGANISMS, experiment_name
from atlasprep.sources.soma import SomaSource

__all__ = ["ORGANISMS", "census_summary", "experiment_name", "open_census"]

log = logging.getLogger("atlasprep.sources")


def open_census(
    *,
    census: str | None = None,
    census_uri: str | os.PathLike[str] | None = None,
    organism: str = "Homo sapiens",
    tiledb_config: dict[str, Any] | None = None,
    X_name: str = "raw",
) -> SomaSource:
    """Open one Census-layout source and return it as a :class:`SomaSource`.

    ``census`` is a Census version (``"stable"``, ``"latest"``, ``"2025-11-08"``) or
    ``"demo"``; ``census_uri`` a local path or URI. The dated build a floating version
    resolves to is logged and recorded in the source info.
    """
    if (census is None) == (census_uri is None):
        raise UsageError("name exactly one source: set census (a version or 'demo') or census_uri (a path)")
    config = dict(tiledb_config or {})
    version: str | None = None
    build: str | None = None
    if census_uri is not None:
        uri, kind = str(census_uri), "soma"
        if "://" not in uri and not os.path.isdir(uri):
            raise SourceError(f"census_uri {uri}: no such directory")
        collection = _open(lambda: _open_uri(uri, config), uri)
    elif census == "demo":
        from atlasprep.demo import demo_census_uri

        uri, kind = str(demo_census_uri()), "demo"
        collection = _open(lambda: _open_uri(uri, config), uri)
    else:
        import cellxgene_census  # imported on use: it pulls in the whole S3 client stack

        assert census is not None
        version, kind = census, "census"
        build = _resolve_build(census)
        uri = f"census:{build}"
        collection = _open(
            lambda: cellxgene_census.open_soma(census_version=build, tiledb_config=config), uri
        )
    if isinstance(collection, soma.Experiment):  # one experiment (tiledbsoma.io.from_h5ad's)
        info = SourceInfo(kind=kind, uri=uri, organism=None)
        return SomaSource(collection, info=info, owner=collection, X_name=X_name)
    exp_name = experiment_name(organism)
    data = _census_data(collection, uri, organism, exp_name)
    summary = census_summary(collection)
    info = SourceInfo(
        kind=kind,
        uri=uri,
        organism=ORGANISMS.get(exp_name, (organism,))[0],
        census_version=version,
        census_build=build or summary.get("census_build_date"),
        schema_version=summary.get("census_schema_version"),
        extra={"dataset_schema_version": summary["dataset_schema_version"]}
        if "dataset_schema_version" in summary
        else {},
    )
    return SomaSource(data[exp_name], info=info, owner=collection, X_name=X_name)


def _open_uri(uri: str, config: dict[str, Any]) -> soma.Collection | soma.Experiment:
    """A Census-layout collection at ``uri``, or (local) one SOMA Experiment: a local directory
    opens with tiledbsoma alone (``cellxgene_census.open_soma`` would add only S3 settings, and
    0.5 s importing the S3 client stack); a remote URI through ``cellxgene_census.open_soma``,
    with its S3 defaults."""
    if "://" not in uri or uri.startswith("file://"):
        context = soma.SOMATileDBContext(tiledb_config=config)
        opened = soma.open(uri, mode="r", context=context)
        if not isinstance(opened, soma.Collection | soma.Experiment):
            kind = type(opened).__name__
            opened.close()
            raise SourceError(
                f"census_uri {uri}: a SOMA {kind}, not a Census-layout collection or an Experiment; "
                "name the collection (or experiment) directory that holds it"
            )
        return opened
    import cellxgene_census

    from atlasprep._remote import tiledb_s3_config  # endpoint, region, credentials: the environment's

    s3 = tiledb_s3_config() if uri.startswith("s3://") else {}
    return cellxgene_census.open_soma(uri=uri, tiledb_config={**s3, **config})


def _census_data(collection: soma.Collection, uri: str, organism: str, exp_name: str) -> soma.Collection:
    """``census_data``, holding the organism's experiment; the collection is closed on an error."""
    try:
        data = collection["census_data"]
    except (KeyError, soma.DoesNotExistError):
        collection.close()
        raise SourceError(f"{uri}: not a Census-layout store (no census_data collection)") from None
    if exp_name not in data:
        found = ", ".join(sorted(data.keys())) or "none"
        collection.close()
        raise UsageError(f"organism = {organism!r}: {uri} has no experiment {exp_name!r} (it has: {found})")
    return data


def census_summary(collection: soma.Collection) -> dict[str, str]:
    """``census_info/summary`` as label -> value (empty when the store has none)."""
    try:
        table = collection["census_info"]["summary"].read().concat()
    except (KeyError, soma.DoesNotExistError):
        return {}
    return dict(zip(table["label"].to_pylist(), table["value"].to_pylist(), strict=True))


def _resolve_build(version: str) -> str:
    import cellxgene_census

    try:
        description = cellxgene_census.get_census_version_description(version)
    except ValueError:
        raise UsageError(
            f"census = {version!r}: not a Census version; use 'stable', 'latest' or a dated build"
        ) from None
    except Exception as exc:  # no network, proxy, DNS …
        raise NetworkError(
            f"cannot reach the CELLxGENE Census release directory ({exc.__class__.__name__}: {exc}); "
            "set census_uri to a local copy, or census = 'demo'"
        ) from None
    build = str(description.get("release_build", version))
    if build != version:
        log.warning("Census %r resolves to build %s; pass --census %s to pin it", version, build, build)
    return build


def _open(opener: Any, uri: str) -> Any:
    try:
        opened = opener()
    except (soma.DoesNotExistError, ValueError, soma.SOMAError) as exc:
        raise SourceError(f"cannot open {uri} as a SOMA collection or experiment: {exc}") from None
    _python_handles_interrupts()
    return opened


def _python_handles_interrupts() -> None:
    """Give Ctrl-C back to Python. Opening a TileDB context installs TileDB's own SIGINT
    handler, and an interrupted slice then crashed (SIGSEGV, exit 139) instead of raising
    KeyboardInterrupt (a one-line error, exit 130, the output left for the re-run)."""
    if threading.current_thread() is not threading.main_thread():
        return  # (only the main thread may set a handler; a worker's is its host's)
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) or handler in (signal.SIG_DFL, signal.SIG_IGN):
        signal.signal(signal.SIGINT, handler)
