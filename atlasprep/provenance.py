"""One provenance record for every output: a list of steps, each appended by the stage that ran.

A step says which command ran (``slice``, ``harmonize``, ``align barcodes``, ``align ccf``,
``tokenize``), with which configuration, when (UTC), with which versions of atlasprep and the
libraries that decide its output, and what it read: each input's path or URI, the Census build
for a Census, and the sha256 of a local file (a directory is not hashed). A stage reading an
AnnData or MuData file that atlasprep wrote continues its chain, so slice → harmonize → align →
tokenize reads as one list of four steps.

The step's time is ``$SOURCE_DATE_EPOCH`` where set, so outputs can be byte-identical from run
to run (reproducible builds). AnnData outputs keep the list as a JSON string in
``uns["atlasprep_provenance"]`` (h5ad cannot store a null; JSON keeps nulls as nulls); a token
store keeps it in its manifest (``provenance``).
Slices and stores from the Census also carry the datasets' citations (``citations``: dataset
id, title, collection DOI and the citation CELLxGENE asks for).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from atlasprep import __version__, _digests
from atlasprep.sources._paths import split_modality

__all__ = [
    "PROVENANCE_KEY",
    "citations_of",
    "file_input",
    "hash_ahead",
    "new_step",
    "now",
    "read_steps",
    "source_inputs",
    "steps_json",
]

PROVENANCE_KEY = "atlasprep_provenance"
_LIBRARIES = (
    "anndata",
    "numpy",
    "scipy",
    "pyarrow",
    "tiledbsoma",
    "cellxgene-census",
    "cellxgene-ontology-guide",
)


def new_step(
    command: str, config: Any, inputs: Sequence[dict[str, Any]], *, clock: bool = True
) -> dict[str, Any]:
    """A step: the command, its configuration (JSON-ready), versions, the time and the inputs.
    ``clock=False`` (a token store, whose bytes depend only on its inputs and configuration:
    a rerun or a Dask run gives the same manifest) records no wall-clock time, only
    ``$SOURCE_DATE_EPOCH`` where set."""
    return {
        "command": command,
        "config": _plain(config),
        "atlasprep": __version__,
        "versions": {name: _version(name) for name in _LIBRARIES},
        "time": now() if clock or os.environ.get("SOURCE_DATE_EPOCH") else None,
        "inputs": list(inputs),
    }


def _local(text: str) -> str:
    """A URL input's local copy (made when its source was opened; reused), else ``text``."""
    from atlasprep._remote import is_url
    from atlasprep.sources._fetch import split_input, staged

    return staged(text) if is_url(split_input(text)[0]) else text


def file_input(path: str | Path, **extra: Any) -> dict[str, Any]:
    """An input as a step records it: the path (``file.h5mu:rna`` names file.h5mu), its sha256
    where it is a file (None for a directory, or a file over 2 GiB), and ``extra``."""
    text = str(path)
    return {"path": text, "sha256": _digests.digest(split_modality(_local(text))[0]), **extra}


def hash_ahead(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Start hashing these inputs on background threads, so that :func:`file_input` finds
    their digests ready (:mod:`atlasprep._digests`). Call it once a URL input's local copy is
    made (the source opened)."""
    for path in paths:
        _digests.start(split_modality(_local(os.fspath(path)))[0])


def read_steps(path: str | Path) -> list[dict[str, Any]]:
    """The steps an AnnData/MuData file that atlasprep wrote carries (none for other files)."""
    text = _local(str(path))
    local = split_modality(text)[0]
    try:
        if local.is_file():
            import h5py

            with h5py.File(local, "r") as f:
                value = f.get(f"uns/{PROVENANCE_KEY}")
                raw = value[()] if value is not None else None
        elif (local / "zarr.json").is_file() or (local / ".zgroup").is_file():
            import zarr

            group: Any = zarr.open_group(local, mode="r")
            if "tables" in group and f"uns/{PROVENANCE_KEY}" not in group:  # SpatialData: its table's
                tables = sorted(group["tables"].group_keys())
                group = group["tables"][tables[0]] if tables else group
            raw = group[f"uns/{PROVENANCE_KEY}"][()] if f"uns/{PROVENANCE_KEY}" in group else None
        else:
            return []
    except (OSError, KeyError, ValueError):  # not an AnnData store: no chain to continue
        return []
    if raw is None:
        return []
    text_value = raw.decode() if isinstance(raw, bytes) else str(raw.item() if hasattr(raw, "item") else raw)
    try:
        steps = json.loads(text_value)
    except ValueError:
        return []
    return steps if isinstance(steps, list) else []


def source_inputs(
    spec: Any, source: Any, positions: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the steps the inputs already carry, the inputs as a step records them) for a stage that
    read ``positions`` of ``source`` through ``spec`` (a :class:`~atlasprep.sources.SourceSpec`):
    AnnData files hashed and their chains continued; a Census by URI and build, with the
    citations of the datasets the cells come from."""
    if spec.inputs:
        previous = [step for path in spec.inputs for step in read_steps(path)]
        return previous, [file_input(path) for path in spec.inputs]
    cite = getattr(source, "citations", None)
    return [], [
        {
            "path": spec.census_uri or f"census:{spec.census}",
            "sha256": None,
            "census_build": source.info.census_build or None,
            "datasets": [] if cite is None else cite(positions),
        }
    ]


def citations_of(steps: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The datasets every step's inputs name, once each (what to cite for a slice or store)."""
    seen: dict[str, dict[str, Any]] = {}
    for step in steps:
        for source in step.get("inputs", ()):
            for dataset in source.get("datasets") or ():
                seen.setdefault(str(dataset.get("dataset_id")), dataset)
    return list(seen.values())


def steps_json(steps: Sequence[dict[str, Any]]) -> str:
    """The chain as AnnData stores it (a JSON string: nulls stay nulls)."""
    return json.dumps(list(steps), sort_keys=True, default=str)


def now() -> str:
    """UTC now, or ``$SOURCE_DATE_EPOCH`` where set (the reproducible-builds convention: outputs
    byte-identical from run to run, the step's time included)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (
        dt.datetime.fromtimestamp(int(epoch), dt.UTC)
        if epoch and epoch.isdigit()
        else dt.datetime.now(dt.UTC)
    )
    return when.isoformat(timespec="seconds")


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _plain(value: Any) -> Any:
    """A configuration as JSON values (dataclasses as dicts, paths as strings, enums as values)."""
    import dataclasses
    import enum

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
