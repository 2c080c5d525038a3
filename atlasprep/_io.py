"""Writing and reading files safely: one temp-then-rename, one stale-temp sweep, one path check.

* :func:`atomic_output` gives a temporary path beside the output (``<name>.tmp-<pid>``); the
  output appears, by one rename, only when the block ends without error. On any error the
  temporary file or directory is removed and the output is untouched. :class:`TempOutput` is
  the same for a writer whose work spans several calls (the slice writer).
* :func:`write_bytes_atomic` / :func:`write_json_atomic` are that for a small file.
* :func:`sweep_stale_temps` removes the temporary paths of crashed runs (their process gone).
* :func:`inside` resolves a path read from a file (a manifest, a recipe) under its root, and
  refuses absolute paths, ``..`` and symlinks that lead out.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, overload

from atlasprep.errors import ForeignOutputError, OutputExistsError, UnsafePathError, UsageError

if TYPE_CHECKING:
    from atlasprep._remote import RemotePath, RemoteRoot

__all__ = [
    "TempOutput",
    "atomic_output",
    "check_file_output",
    "check_output",
    "describe_os_error",
    "inside",
    "is_stale_temp",
    "pid_alive",
    "remove_path",
    "sweep_stale_temps",
    "temp_path",
    "write_bytes_atomic",
    "write_json_atomic",
]

log = logging.getLogger("atlasprep.io")

TEMP_MARK = ".tmp-"


def temp_path(path: Path, *, hidden: bool = False, suffix: str = "") -> Path:
    """The temporary name this process writes ``path`` under (same directory, so a rename is
    atomic): ``<name>.tmp-<pid>``, ``.``-prefixed when ``hidden``; ``suffix`` names a second
    temporary file of the same output (``<name>.tmp-<pid>.obs.arrow``), swept with it."""
    return path.with_name(f"{'.' if hidden else ''}{path.name}{TEMP_MARK}{os.getpid()}{suffix}")


def remove_path(path: Path) -> None:
    """Remove a file, a symlink (not what it points to) or a directory tree; nothing if absent."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (killed, not yet reaped: its temporary
    files are left for good, as a gone process's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: the state after the command name in parentheses
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[:1]
    except OSError:
        return True
    return state not in (["Z"], ["X"])


def _temp_pid(name: str) -> int | None:
    digits = name.rsplit(TEMP_MARK, 1)[-1].split(".")[0]
    return int(digits) if digits.isdigit() else None


def is_stale_temp(name: str) -> bool:
    """Whether ``name`` is a :func:`temp_path` whose process is gone."""
    pid = _temp_pid(name) if TEMP_MARK in name else None
    return pid is not None and not pid_alive(pid)


def sweep_stale_temps(out: Path) -> list[Path]:
    """Remove the temporary paths (:func:`temp_path`, any suffix, hidden or not) left by crashed
    runs writing ``out``: those whose process is gone. Returns them."""
    removed: list[Path] = []
    if not out.parent.is_dir():
        return removed
    # (``.<name>.old.tmp-<pid>``: an output being replaced, moved aside by TempOutput.commit)
    for pattern in (f"{out.name}{TEMP_MARK}*", f".{out.name}{TEMP_MARK}*", f".{out.name}.old{TEMP_MARK}*"):
        for stale in out.parent.glob(pattern):
            if is_stale_temp(stale.name):
                log.info("removing %s left by an interrupted run", stale)
                remove_path(stale)
                removed.append(stale)
    return removed


@dataclass(frozen=True, slots=True, kw_only=True)
class TempOutput:
    """An output being written under its temporary name: :meth:`commit` renames it into place,
    :meth:`discard` removes it. For a writer whose work spans calls (open, append, finish);
    a block of code uses :func:`atomic_output`."""

    path: Path
    tmp: Path

    @classmethod
    def begin(cls, path: Path, *, hidden: bool = False) -> TempOutput:
        tmp = temp_path(path, hidden=hidden)
        remove_path(tmp)  # an earlier process with our pid crashed here (pids repeat in containers)
        return cls(path=path, tmp=tmp)

    def commit(self, *, replace: bool = True) -> None:
        """Rename the finished temporary path to ``path``: a file by one rename; a directory
        replaces an old one moved out of the way first, then removed. ``replace=False`` refuses
        (``FileExistsError``) an output that appeared meanwhile."""
        path = self.path
        if path.exists() or path.is_symlink():
            if not replace:
                raise FileExistsError(errno.EEXIST, "exists", str(path))
            if path.is_dir() and not path.is_symlink():  # a directory cannot be replaced by a rename
                old = temp_path(path.with_name(f"{path.name}.old"), hidden=True)
                os.replace(path, old)
                os.replace(self.tmp, path)
                remove_path(old)
                return
        os.replace(self.tmp, path)

    def discard(self) -> None:
        """Remove the temporary path; never raises ``OSError`` (the error that made the caller
        give up is the one to report)."""
        with contextlib.suppress(OSError):
            remove_path(self.tmp)


@contextlib.contextmanager
def atomic_output(path: Path, *, hidden: bool = False, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to (a file or a directory); rename it
    into place when the block succeeds, remove it when the block fails (whatever the error).

    ``replace=False`` refuses (``FileExistsError``) an output that appeared meanwhile.
    """
    output = TempOutput.begin(path, hidden=hidden)
    try:
        yield output.tmp
        output.commit(replace=replace)
    except BaseException:
        output.discard()
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_output(path, hidden=True) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: Path, value: Any, *, sort_keys: bool = True) -> None:
    text = json.dumps(value, indent=2, sort_keys=sort_keys, default=str) + "\n"
    write_bytes_atomic(path, text.encode())


@overload
def inside(root: Path, relative: object, *, what: str) -> Path: ...
@overload
def inside(root: RemoteRoot, relative: object, *, what: str) -> RemotePath: ...
@overload
def inside(root: Path | RemoteRoot, relative: object, *, what: str) -> Path | RemotePath: ...
def inside(root: Path | RemoteRoot, relative: object, *, what: str) -> Path | RemotePath:
    """``root / relative`` for a path read from a file, refused (:class:`UnsafePathError`) unless
    it is a relative path string that stays inside ``root``: no absolute path, no ``..`` part,
    no symlink on the way that leads out. ``what`` names where it was read (for the message).
    A root in object storage (:class:`~atlasprep._remote.RemoteRoot`) has no symlinks: its
    paths are checked by their parts."""
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise UnsafePathError(f"{what}: {relative!r} is not a path")
    posix = PurePosixPath(relative.replace("\\", "/"))
    if posix.is_absolute() or relative.startswith(("/", "\\")) or (len(relative) > 1 and relative[1] == ":"):
        raise UnsafePathError(f"{what}: {relative!r} is an absolute path; paths here must be relative")
    if ".." in posix.parts:
        raise UnsafePathError(f"{what}: {relative!r} leads out of {root} ('..')")
    if not isinstance(root, Path):
        return root.joinpath(*posix.parts)
    target = root.joinpath(*posix.parts)
    real_root = root.resolve()
    real = target.resolve()
    if real != real_root and real_root not in real.parents:
        raise UnsafePathError(f"{what}: {relative!r} leads out of {root} (a symlink to {real})")
    return target


_OS_HINTS = {
    errno.EACCES: "check the permissions, or choose another location",
    errno.EPERM: "check the permissions, or choose another location",
    errno.EROFS: "the file system is read-only; choose another location",
    errno.ENOSPC: "the disk is full; free some space or choose another location, then re-run",
    errno.EDQUOT: "the disk quota is exhausted; free some space or choose another location, then re-run",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file, not a directory; check the path",
    errno.EISDIR: "it is a directory; give a file",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) and re-run",
    errno.EIO: "the device reported an I/O error; check the disk",
}


def describe_os_error(exc: OSError) -> str:
    """One line for an ``OSError``: the path, what went wrong and what to do."""
    where = exc.filename if exc.filename is not None else None
    what = exc.strerror or str(exc) or exc.__class__.__name__
    hint = _OS_HINTS.get(exc.errno or -1, "")
    text = f"{where}: {what}" if where else what
    return f"{text}; {hint}" if hint else text


_ANNDATA_ENCODINGS = frozenset({"anndata", "MuData", "SpatialData"})  # stores atlasprep writes


def check_output(path: Path, *, overwrite: bool, field: str = "out") -> None:
    """Refuse to replace ``path`` unless ``overwrite``; and even then refuse a directory that is
    not an AnnData/MuData Zarr store (``out = x.zarr`` naming someone's folder of other files
    deletes nothing). A file is replaced by one rename, as ``cp`` replaces it. ``field`` names
    the argument ``path`` came from (the CLI shows its flag)."""
    if not (path.exists() or path.is_symlink()):
        return
    if not overwrite:
        raise OutputExistsError(f"{field} {path} exists; set overwrite to replace it")
    if path.is_dir() and not path.is_symlink():
        encoding = _zarr_encoding(path)
        if encoding not in _ANNDATA_ENCODINGS:
            raise ForeignOutputError(
                f"{field} {path} is a directory that is not an AnnData Zarr store; atlasprep replaces "
                "only a store it could have written: move it away or choose another output"
            )
        stranger = _stranger_in_store(path, spatialdata=encoding == "SpatialData")
        if stranger is not None:
            raise ForeignOutputError(
                f"{field} {path} holds {stranger.relative_to(path)}, which is not part of a Zarr store; "
                "atlasprep replaces only a store it could have written: move that file away or choose "
                "another output"
            )
    elif path.suffix in _HDF5_SUFFIXES and path.stat().st_size and not _is_hdf5(path):
        raise ForeignOutputError(  # (an empty file holds nothing to lose)
            f"{field} {path} is not an HDF5 file; atlasprep replaces only a file it could have "
            "written: move it away or choose another output"
        )


def check_new_output(path: Path, *, overwrite: bool, field: str = "out") -> None:
    """:func:`check_output`, and the directory that will hold ``path`` exists."""
    check_output(path, overwrite=overwrite, field=field)
    if not path.parent.is_dir():
        raise UsageError(f"{field} {path}: directory {path.parent} does not exist")


def check_file_output(path: Path, *, overwrite: bool, field: str, example: str) -> None:
    """A single file a command writes beside its main output (a report, a plot): not a
    directory, in a directory that exists, and new unless ``overwrite``, checked before any
    work. ``example`` is a file name the message suggests inside a directory given instead."""
    if path.is_dir():
        raise UsageError(f"{field} {path}: is a directory; give a file name, e.g. {path / example}")
    check_new_output(path, overwrite=overwrite, field=field)


ZARR_ROOT_META = ("zarr.json", ".zattrs", ".zgroup", ".zmetadata")  # a reader's entry: written last
_HDF5_SUFFIXES = frozenset({".h5ad", ".h5mu", ".h5", ".hdf5"})
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def zarr_object(name: str) -> bool:
    """Whether a file's path inside a store (``/``-separated) is one a Zarr store gives:
    metadata, or a v3 (``…/c/0/1``; ``…/c`` for a scalar) or v2 (``0.1``, ``0/1``) chunk key."""
    parts = PurePosixPath(name).parts
    return (
        parts[-1] in (*ZARR_ROOT_META, ".zarray", "c")
        or "c" in parts[:-1]
        or bool(re.fullmatch(r"\d+([./]\d+)*", parts[-1]))
    )


def _stranger_in_store(store: Path, *, spatialdata: bool = False) -> Path | None:
    """The first file (or link) under ``store`` that a Zarr store does not hold, or None. A
    SpatialData store also holds its shapes and points as (Geo)Parquet files."""
    for entry in sorted(store.rglob("*")):
        if entry.is_symlink():
            return entry
        if not entry.is_file():
            continue
        name = entry.relative_to(store).as_posix()
        parquet = spatialdata and name.split("/")[0] in ("shapes", "points") and ".parquet" in name
        if not (zarr_object(name) or parquet):
            return entry
    return None


def _is_hdf5(path: Path) -> bool:
    """Whether ``path`` starts with HDF5's signature (at 0, or after a user block of 512 bytes,
    1 KiB, 2 KiB …, as the format allows)."""
    try:
        with open(path, "rb") as f:
            offset = 0
            while True:
                f.seek(offset)
                head = f.read(8)
                if head == _HDF5_SIGNATURE:
                    return True
                if len(head) < 8:
                    return False
                offset = 512 if offset == 0 else offset * 2
    except OSError:
        return False


def _zarr_encoding(path: Path) -> str | None:
    """The root group's ``encoding-type`` (``anndata``, ``MuData``), or ``SpatialData`` for a
    SpatialData store (``align ccf --spatialdata`` writes one); None for anything else."""
    for name, get in (("zarr.json", lambda d: d.get("attributes", {})), (".zattrs", lambda d: d)):
        meta = path / name
        if meta.is_file():
            try:
                attrs = get(json.loads(meta.read_text(encoding="utf-8")))
                value = attrs.get("encoding-type") if isinstance(attrs, dict) else None
            except (OSError, ValueError, AttributeError, RecursionError):
                return None
            if value is None and isinstance(attrs, dict) and "spatialdata_attrs" in attrs:
                return "SpatialData"
            return value if isinstance(value, str) else None
    return None
