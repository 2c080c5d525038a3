"""The README runs as written: every shell block, in order, in one scratch directory beside
``../shared`` (the real data the examples read), with the repository's recipes, examples and
benchmarks linked in.

Each command must exit 0, or 1 where its comment says it exits 1 (a check that finds
something). Skipped, and said so: installs, the test and lint commands themselves (this suite
runs them), benchmarks, and what needs the network (``--census stable``). Blocks that take more
than a few seconds are marked ``slow`` (``python -m pytest -m slow``).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SHARED = ROOT.parent / "shared"

_SKIP = (
    re.compile(r"^pip install"),
    re.compile(r"^python -m pytest"),
    re.compile(r"^bash \.ci/run"),
    re.compile(r"^ruff "),
    re.compile(r"^python benchmarks/"),
    re.compile(r"--census stable"),  # the live Census: network
)
_ASSIGNMENT = re.compile(r"^([A-Za-z_]\w*)=(\S+)\s*(#.*)?$")


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def commands(block: str) -> list[str]:
    """A block's commands: continuation lines joined, comment-only and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def _allowed(command: str) -> set[int]:
    comment = command.partition(" #")[2]
    return {0, 1} if "exit 1" in comment else {0}


BLOCKS = shell_blocks(README)
# blocks that tokenize or train on the whole demo atlas, or run whole recipes: minutes, not seconds
_SLOW = {
    i
    for i, block in enumerate(BLOCKS)
    if re.search(r"train_masked_gene|run recipes/demo|--executor dask", block)
}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared (the README's example data) is not beside the repository")
    base = tmp_path_factory.mktemp("readme")
    (base / "shared").symlink_to(SHARED)
    work = base / "work"
    work.mkdir()
    for name in ("recipes", "examples", "benchmarks"):
        (work / name).symlink_to(ROOT / name)
    return work


def _run(command: str, work: Path, variables: dict[str, str]) -> None:
    if any(pattern.search(command) for pattern in _SKIP):
        return
    if match := _ASSIGNMENT.match(command):
        variables[match.group(1)] = match.group(2)
        return
    env = {
        **os.environ,
        **variables,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    done = subprocess.run(
        ["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, check=False
    )
    allowed = _allowed(command)
    assert done.returncode in allowed, (
        f"README command exited {done.returncode}: {shlex.quote(command)}\n{done.stderr[-2000:]}"
    )


@pytest.mark.parametrize(
    "index",
    [pytest.param(i, marks=[pytest.mark.slow] if i in _SLOW else []) for i in range(len(BLOCKS))],
    ids=[f"block{i}" for i in range(len(BLOCKS))],
)
def test_readme_block_runs_as_written(index: int, scratch: Path) -> None:
    # A block reads what the blocks before it wrote: the quick ones not run yet in this scratch
    # directory (deselected: ``-m slow`` runs the slow blocks alone) run first, as a reader
    # would have. A slow block is never one of them: the default run, which deselects them,
    # passes without what they write.
    for earlier in [*(i for i in range(index) if i not in _RAN and i not in _SLOW), index]:
        variables: dict[str, str] = {}
        for command in commands(BLOCKS[earlier]):
            _run(command, scratch, variables)
        _RAN.add(earlier)


_RAN: set[int] = set()  # the blocks run so far in the module's scratch directory


def test_the_blocks_are_found():
    assert len(BLOCKS) >= 10
    assert any("atlasprep slice --census demo" in b for b in BLOCKS)
