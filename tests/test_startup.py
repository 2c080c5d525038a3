"""Start-up: ``--version``, ``--help`` and every command's ``--help`` import none of the heavy
libraries (a command imports the library when it runs), and the light copies of the options'
choices and defaults (``atlasprep/_names.py``) are the library's own.

Which modules a process imported is read from ``python -X importtime`` (every ``import``
statement), together with ``sys.modules`` at exit (``importlib.import_module``, which the lazy
package attributes use, bypasses ``-X importtime``). Not a timing test."""

from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from atlasprep import _names
from atlasprep.cli import register_commands
from atlasprep.cli._app import _MODULES

HEAVY = frozenset(
    {
        "anndata",
        "cellxgene_census",
        "cellxgene_ontology_guide",
        "dask",
        "h5py",
        "matplotlib",
        "mudata",
        "numba",
        "numpy",
        "pandas",
        "pyarrow",
        "scanpy",
        "scipy",
        "sklearn",
        "tiledbsoma",
        "torch",
        "zarr",
    }
)

# the console script's entry point (atlasprep/__main__.py), and the modules loaded, at exit
_RUN = (
    "import atexit, runpy, sys; "
    "atexit.register(lambda: print('modules:', *sorted(sys.modules), file=sys.stderr)); "
    "sys.argv = ['atlasprep', *sys.argv[1:]]; "
    "runpy.run_module('atlasprep', run_name='__main__')"
)


def _imported(*args: str, code: str = _RUN, top: bool = True) -> set[str]:
    """The top-level packages (``top=False``: the modules) a fresh ``python -X importtime``
    process imports."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    timed, at_exit = set(), set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and not line.endswith("imported package"):
            timed.add(line.rpartition("|")[2].strip())
        elif line.startswith("modules: "):
            at_exit.update(line.split()[1:])
    assert timed, "no -X importtime lines parsed"
    return {m.partition(".")[0] for m in timed | at_exit} if top else timed | at_exit


def _commands() -> list[tuple[str, ...]]:
    """Every command and subcommand the typer app registers (``align``, ``align ccf``, …)."""
    app = register_commands()
    found: list[tuple[str, ...]] = [(str(c.name),) for c in app.registered_commands]
    for group in app.registered_groups:
        assert group.typer_instance is not None
        found.append((str(group.name),))
        found += [(str(group.name), str(c.name)) for c in group.typer_instance.registered_commands]
    return found


def test_the_command_list_is_complete():
    """Every command the entry point knows (``_MODULES``) is checked, with the groups' subcommands."""
    found = _commands()
    assert {c[0] for c in found} == set(_MODULES)
    assert {"tokenizer export", "cache clear", "cache info", "align ccf", "align barcodes"} <= {
        " ".join(c) for c in found
    }


@pytest.mark.parametrize("args", [("--version",), ("--help",)], ids=["version", "help"])
def test_the_root_imports_no_library(args):
    assert sorted(_imported(*args) & HEAVY) == []


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
def test_a_commands_help_imports_no_library(command):
    assert sorted(_imported(*command, "--help") & HEAVY) == []


def test_the_check_sees_a_heavy_import():
    """The detector itself: importing a library module shows numpy and pandas."""
    code = "import atlasprep.tokenize.config"
    assert {"numpy", "pandas"} <= _imported(code=code)


def test_the_loaders_import_no_anndata():
    """A loader over a store or a SOMA source needs neither anndata nor the zarr and dask it
    brings (0.4-0.5 s): only reading an AnnData file imports them."""
    assert sorted(_imported(code="import atlasprep.loader") & {"anndata", "dask", "h5py"}) == []


def test_a_cheap_command_runs_without_the_library(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLASPREP_CACHE", str(tmp_path))
    assert sorted(_imported("cache", "info", "--json") & HEAVY) == []


def test_the_choices_are_defined_once():
    """The library's choice enums are the light module's own (one definition), and its
    constants equal the library's."""
    from atlasprep.align._barcode_keys import JoinHow
    from atlasprep.harmonize._embedding import Embedding
    from atlasprep.harmonize._report import Profile
    from atlasprep.ontology import DEFAULT_ONTOLOGIES, SCHEMA_VERSION
    from atlasprep.run.dask import Executor
    from atlasprep.shard.format import ShardFormatName
    from atlasprep.tokenize.config import DEFAULT_OBS_COLUMNS, TOKENIZE_BATCH_SIZE, Scheme, TieOrder

    assert (Scheme, ShardFormatName, JoinHow, Embedding, Executor, Profile, TieOrder) == (
        _names.Scheme,
        _names.ShardFormatName,
        _names.JoinHow,
        _names.Embedding,
        _names.Executor,
        _names.Profile,
        _names.TieOrder,
    )
    assert _names.SCHEMA_VERSION == SCHEMA_VERSION
    assert _names.DEFAULT_ONTOLOGIES == DEFAULT_ONTOLOGIES
    assert _names.DEFAULT_OBS_COLUMNS == DEFAULT_OBS_COLUMNS
    assert _names.TOKENIZE_BATCH_SIZE == TOKENIZE_BATCH_SIZE


def test_the_light_defaults_are_the_configs():
    from atlasprep.sources import SourceSpec
    from atlasprep.tokenize.config import TokenizeConfig

    spec = SourceSpec()
    config = TokenizeConfig(source=spec, out=Path("."))
    for name in (f.name for f in dataclasses.fields(_names.SourceDefaults)):
        assert getattr(_names.SOURCE_DEFAULTS, name) == getattr(spec, name), name
    for name in (f.name for f in dataclasses.fields(_names.TokenizeDefaults)):
        if name != "source":
            assert getattr(_names.TOKENIZE_DEFAULTS, name) == getattr(config, name), name
    assert _names.TOKENIZE_DEFAULTS.source == _names.SOURCE_DEFAULTS


_BUILD = ("tokenize", "--max-cells", "200", "--shard-cells", "100")


@pytest.fixture(scope="module")
def build_modules(small_census: Path, tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The modules a build without ``--split-by`` imports (one fresh process, shared)."""
    out = tmp_path_factory.mktemp("whole") / "store"
    loaded = _imported(*_BUILD, "--census-uri", str(small_census), "--all-data", "--out", str(out), top=False)
    assert "atlasprep.tokenize.api" in loaded  # it ran the build
    return loaded


def test_a_build_without_linked_groups_imports_no_graph_code(build_modules, small_census, tmp_path):
    """scipy's csgraph (and the LAPACK it brings, 0.1 s) loads only for ``--split-by``: the one
    step that needs connected components."""
    assert "scipy.sparse.csgraph" not in build_modules
    split = ("--split-by", "donor_id,dataset_id")
    linked = _imported(
        *_BUILD, "--census-uri", str(small_census), *split, "--out", str(tmp_path / "ln"), top=False
    )
    assert "scipy.sparse.csgraph" in linked


_SEEN_AT_RUN = (
    "import gc, sys; from atlasprep.cli import _app; seen = {}\n"
    "def run(*args, **kwargs):\n"
    "    libraries = ('atlasprep.tokenize.api', 'atlasprep.slice', 'atlasprep.harmonize.api')\n"
    "    seen.update(loaded=sorted(m for m in libraries if m in sys.modules),\n"
    "                collecting=gc.isenabled(), frozen=gc.get_freeze_count())\n"
    "    print(seen, flush=True)\n"
    "    return 0\n"
    "type(_app.app).__call__ = run\n"
    "sys.argv = ['atlasprep', *sys.argv[1:]]\n"
    "_app.main()"
)


@pytest.mark.parametrize(
    ("args", "loaded"),
    [
        (("tokenize", "--census", "demo", "--out", "x"), ["atlasprep.tokenize.api"]),
        (("slice", "--census", "demo", "--out", "x.h5ad"), ["atlasprep.slice"]),
        (("harmonize", "in.h5ad", "--out", "out.h5ad"), ["atlasprep.harmonize.api", "atlasprep.slice"]),
        (("tokenize", "--help"), []),
    ],
    ids=["tokenize", "slice", "harmonize", "help"],
)
def test_a_build_loads_its_library_before_the_collector_freeze(args, loaded):
    """A build command's library is imported with the collector off and frozen with the rest
    of start-up (its full collections cost a 50,000-cell tokenize 0.2-0.4 s); --help loads none."""
    command = [sys.executable, "-c", _SEEN_AT_RUN, *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert seen["loaded"] == loaded
    assert seen["collecting"]
    if loaded:  # the library's objects are among the frozen ones: numpy and pandas alone are
        # about 110,000 objects and the command line about 33,000 (a tokenize froze 198,000)
        assert seen["frozen"] > 150_000


@pytest.mark.parametrize(
    ("command", "preset", "expected"),
    [
        ("tokenize", None, "1"),
        ("slice", None, "1"),
        ("tokenize", "4", "4"),
        ("run", None, None),
        (None, None, None),
    ],
)
def test_tokenize_and_slice_run_blas_on_one_thread_unless_told(monkeypatch, command, preset, expected):
    """OpenBLAS's idle threads spin on the other core as numpy and scipy load; neither command
    calls BLAS. A value the user set is kept; other commands (harmonize's PCA in a recipe) keep
    OpenBLAS's own default."""
    from atlasprep import _heap
    from atlasprep.cli import _app

    monkeypatch.setattr(_heap, "keep_allocations", lambda: False)  # not this process's malloc
    monkeypatch.setattr(_heap, "map_large_allocations", lambda *a: False)
    if preset is None:
        monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OPENBLAS_NUM_THREADS", preset)
    _app._heap_policy([command] if command else None)
    assert os.environ.get("OPENBLAS_NUM_THREADS") == expected


def test_a_build_loads_no_help_renderer(build_modules):
    """typer's help renderer (``typer.rich_utils``, with rich's markdown: about 30 ms) loads for
    help only; a piped run passes the help width through ``TERMINAL_WIDTH`` instead."""
    assert "typer.rich_utils" not in build_modules
    assert "typer.rich_utils" in _imported("tokenize", "--help", top=False)


@pytest.mark.parametrize(
    "module", ["atlasprep.shard.zarr", "atlasprep.shard.arrow", "atlasprep.shard.format"]
)
def test_a_shard_format_module_imports_first(module):
    """A program's first atlasprep import may be any module: a shard format's module imports
    the format table's, which must not need the format's module finished (it did, made at
    import: ``import atlasprep.shard.zarr`` failed on a circular import)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import {module}; from atlasprep.shard import FORMATS; print(sorted(FORMATS))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[<ShardFormatName.arrow: 'arrow'>, <ShardFormatName.zarr: 'zarr'>]"
