"""Run a measured command from a small launcher process, so its peak RSS is its own.

On Linux a child's ``ru_maxrss`` starts at its parent's high-water mark: a benchmark that built
a store or imported pandas before starting a method would floor every method's figure at its
own. :func:`launch` starts a fresh interpreter that imports only ``os``, ``subprocess``,
``json`` and ``time`` (about 10 MB), which starts the command, waits for it with ``wait4`` and
reports its wall time (imports and start-up included) and peak RSS.

Before the first launch, :func:`compile_atlasprep` writes atlasprep's bytecode, as installing a
package does: where ``PYTHONDONTWRITEBYTECODE`` is set (this project's CI VMs set it) an editable
checkout never gets any, and every measured process compiled atlasprep's 60-odd modules from
source (0.17 s of imports instead of 0.08 s for a tokenize), while the anchors' packages ran
from the bytecode pip wrote when it installed them.
"""

from __future__ import annotations

import compileall
import functools
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Launched", "compile_atlasprep", "launch", "launch_report"]

_LAUNCHER = """
import json, os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, text=True)
out = child.stdout.read()
_, status, usage = os.wait4(child.pid, 0)
print(json.dumps({"wall": time.perf_counter() - start, "code": os.waitstatus_to_exitcode(status),
                  "peak_rss_mb": usage.ru_maxrss / 1024, "disk_read_mb": usage.ru_inblock * 512 / 2**20,
                  "stdout": out}))
"""


@dataclass(frozen=True, slots=True)
class Launched:
    wall: float  # seconds from the command's start to its exit
    peak_rss_mb: float  # the command's own peak RSS (Linux reports KiB)
    stdout: str
    disk_read_mb: float = 0.0  # what it read from the disk, not the page cache (ru_inblock)


@functools.cache
def compile_atlasprep() -> None:
    """atlasprep's bytecode written once (the source newer than its bytecode: compiled again)."""
    spec = importlib.util.find_spec("atlasprep")
    if spec is not None and spec.submodule_search_locations:
        compileall.compile_dir(next(iter(spec.submodule_search_locations)), quiet=1)


def launch_report(argv: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[int, Launched, str]:
    """Run ``argv`` from a small launcher (with ``env`` added to this environment): its exit
    code, what it measured, and its stderr."""
    compile_atlasprep()
    proc = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *argv],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **env} if env else None,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise SystemExit(f"launcher failed: {proc.stderr.strip()[-300:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    launched = Launched(
        wall=report["wall"],
        peak_rss_mb=report["peak_rss_mb"],
        stdout=report["stdout"],
        disk_read_mb=report["disk_read_mb"],
    )
    return report["code"], launched, proc.stderr


def launch(argv: Sequence[str]) -> Launched:
    """Run ``argv`` from a small launcher; raise ``SystemExit`` naming the command if it fails."""
    code, launched, stderr = launch_report(argv)
    if code != 0:
        said = stderr.strip().splitlines()[-1:] or ["(nothing on stderr)"]
        raise SystemExit(f"{argv[:3]} failed with exit code {code}: {said[0][-300:]}")
    return launched
