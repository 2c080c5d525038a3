"""The sha256 of local input files, computed ahead on background threads.

A provenance record names each input file with its digest (:mod:`atlasprep.provenance`). Hashing
a 350 MB h5ad takes 0.3 s of a core; hashlib releases the GIL as it reads and hashes, so started
early the digest costs the build no time. Digests are kept by (file, size, mtime): a file changed
after its hash was started is hashed again when the record asks. Only hashlib and the standard
library are loaded here, so the command line can start hashing before the heavy libraries load.
"""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import Future
from pathlib import Path

__all__ = ["HASH_LIMIT", "digest", "hash_key", "sha256_file", "start"]

HASH_LIMIT = 2 << 30  # files up to 2 GiB are hashed (a few seconds); larger ones are not

Key = tuple[str, int, int]

_AHEAD: dict[Key, Future[str]] = {}
_LOCK = threading.Lock()


def hash_key(local: Path) -> Key | None:
    """(file, size, mtime) of a local file that is hashed: at most ``HASH_LIMIT`` bytes; None
    for a directory, a missing path or a larger file."""
    if not local.is_file():
        return None
    stat = local.stat()
    return None if stat.st_size > HASH_LIMIT else (str(local.resolve()), stat.st_size, stat.st_mtime_ns)


def start(local: Path) -> None:
    """Start hashing ``local`` on a daemon thread (a command that fails before its record is
    made does not wait for it), unless it is being hashed already or is not hashed at all."""
    key = hash_key(local)
    with _LOCK:
        if key is None or key in _AHEAD:
            return
        future: Future[str] = Future()
        _AHEAD[key] = future

    def run(target: Path = Path(key[0]), done: Future[str] = future) -> None:
        try:
            done.set_result(sha256_file(target))
        except BaseException as exc:  # (the record then raises it, as hashing there would)
            done.set_exception(exc)

    threading.Thread(target=run, name="atlasprep-hash", daemon=True).start()


def digest(local: Path) -> str | None:
    """The sha256 of ``local`` (the one computed ahead, when its file is unchanged since), or
    None where it is not hashed."""
    key = hash_key(local)
    if key is None:
        return None
    with _LOCK:
        ahead = _AHEAD.pop(key, None)
    return ahead.result() if ahead is not None else sha256_file(Path(key[0]))


_BLOCK = 8 << 20  # bytes read and hashed per step


def sha256_file(path: Path) -> str:
    """A file's sha256, read in 8 MiB steps into one reused buffer. Reading and hashing release
    the GIL, but each step takes it back: ``hashlib.file_digest``'s 256 KiB steps, on a thread
    beside imports or other Python work, waited for the GIL so often that a 350 MB h5ad took
    0.73-0.75 s instead of 0.27 s; in 8 MiB steps it takes 0.51 s there, done within the
    imports (0.26-0.29 s alone for either)."""
    digest = hashlib.sha256()
    view = memoryview(bytearray(_BLOCK))
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            digest.update(view[:n])
    return digest.hexdigest()
