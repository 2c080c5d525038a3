"""Library errors name config fields and function arguments; the CLI names its flags.

Each row is one refusal, made twice: through the Python API, whose message must name the field
(and never a ``--flag``, which a recipe or Python user never typed), and through the command
line with the same inputs, whose ``Error:`` line must name the flag instead (the command
translates at the boundary, :func:`atlasprep.cli._app.in_flags`).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from atlasprep.align.barcodes import align_barcodes
from atlasprep.align.ccf import register_file, spatial_bins, spatial_neighbors
from atlasprep.cli import register_commands
from atlasprep.cli._app import field_flags, in_flags
from atlasprep.errors import AtlasprepError
from atlasprep.harmonize import HarmonizeConfig, harmonize
from atlasprep.ontology import resolve_term
from atlasprep.sources import CellFilter, SourceSpec
from atlasprep.sources.census import open_census
from atlasprep.tokenize.binning import bin_values, cap_genes
from atlasprep.tokenize.hvg import ClippedMoments

app = register_commands()
PACKAGE = Path(__file__).resolve().parents[1] / "atlasprep"
FLAG = re.compile(r"(?<![\w-])--[a-z]")


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    id: str
    call: Callable[[Path], object]  # the Python API, given a fresh directory
    field: str  # what the library's message says
    cli: Callable[[Path], list[str]] | None = None  # the same inputs on the command line
    flag: str = ""  # what the CLI's Error: line says instead
    exists: str = ""  # a file made first in the directory (an output that exists)


def _existing(tmp: Path, name: str) -> Path:
    path = tmp / name
    path.write_bytes(b"")
    return path


def _ccf(tmp: Path, **kwargs: object) -> object:
    return register_file(tmp / "s.h5ad", tmp / "o.h5ad", **kwargs)  # type: ignore[arg-type]


def _ccf_cli(*args: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["align", "ccf", "--spatial", str(tmp / "s.h5ad"), "--out", str(tmp / "o.h5ad"), *args]


def _barcodes_cli(*args: str) -> Callable[[Path], list[str]]:
    return lambda tmp: [
        "align",
        "barcodes",
        "--rna",
        str(tmp / "r.h5ad"),
        "--out",
        str(tmp / "o.h5mu"),
        *args,
    ]


def _harmonize(tmp: Path, *, batch_size: int | None = None, **kwargs: object) -> object:
    source: SourceSpec | Path = _existing(tmp, "in.h5ad")
    if batch_size is not None:
        source = SourceSpec(inputs=(str(source),), batch_size=batch_size)
    config = HarmonizeConfig(source=source, out=tmp / "o.h5ad", **kwargs)  # type: ignore[arg-type]
    return harmonize(config)


def _harmonize_cli(*args: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["harmonize", str(_existing(tmp, "in.h5ad")), "--out", str(tmp / "o.h5ad"), *args]


CASES = [
    Case(id="ccf pixel size", call=lambda t: _ccf(t, pixel_size_um=0.0, bin_size_mm=1.0),
         field="pixel_size_um = 0.0: must be a finite number > 0",
         cli=_ccf_cli("--pixel-size", "0", "--bin-size", "1"),
         flag="--pixel-size 0.0: must be a finite number > 0"),
    Case(id="ccf neighbors", call=lambda t: _ccf(t, neighbors=0), field="neighbors = 0: must be at least 1",
         cli=_ccf_cli("--neighbors", "0"), flag="--neighbors 0: must be at least 1"),
    Case(id="ccf bin size", call=lambda t: _ccf(t, bin_size_mm=-1.0),
         field="bin_size_mm = -1.0: must be a finite number > 0", cli=_ccf_cli("--bin-size", "-1"),
         flag="--bin-size -1.0: must be a finite number > 0"),
    Case(id="ccf registration alone", call=lambda t: _ccf(t, registration=t / "r.json"),
         field="registration, reference_organ and crosswalk go together",
         cli=_ccf_cli("--registration", "r.json"),
         flag="--registration, --reference-organ and --crosswalk go together"),
    Case(id="ccf nothing to do", call=_ccf,
         field="set registration (with reference_organ, crosswalk), neighbors or bin_size_mm", cli=_ccf_cli(),
         flag="pass --registration (with --reference-organ, --crosswalk), --neighbors or --bin-size"),
    Case(id="ccf out exists", call=lambda t: _ccf(t, neighbors=2),
         field="exists; set overwrite to replace it", cli=_ccf_cli("--neighbors", "2"),
         flag="exists; pass --overwrite to replace it", exists="o.h5ad"),
    Case(id="ccf out suffix", call=lambda t: register_file(t / "s.h5ad", t / "o.txt", neighbors=2),
         field="out ", cli=lambda t: ["align", "ccf", "--spatial", "s.h5ad", "--out", str(t / "o.txt")],
         flag="--out "),
    Case(id="bins", call=lambda t: spatial_bins(np.zeros((2, 3)), 0.0),
         field="bin_size_mm = 0.0: must be a finite number > 0 mm"),
    Case(id="kNN", call=lambda t: spatial_neighbors(np.zeros((2, 2)), 5),
         field="neighbors = 5: must be between 1"),
    Case(id="barcodes min match",
         call=lambda t: align_barcodes(str(t / "r.h5ad"), protein="p.h5ad", out=t / "o.h5mu", min_match=2),
         field="min_match = 2: give a fraction", cli=_barcodes_cli("--protein", "p.h5ad", "--min-match", "2"),
         flag="--min-match 2.0: give a fraction"),
    Case(id="barcodes out suffix",
         call=lambda t: align_barcodes(str(t / "r.h5ad"), protein="p.h5ad", out=t / "o.h5ad"),
         field="out ", cli=lambda t: ["align", "barcodes", "--rna", "r", "--protein", "p", "--out",
                                      str(t / "o.h5ad")], flag="--out "),
    Case(id="barcodes nothing", call=lambda t: align_barcodes(str(t / "r.h5ad"), out=t / "o.h5mu"),
         field="set atac or protein besides rna"),
    Case(id="barcodes protein missing",
         call=lambda t: align_barcodes(str(t / "r.h5ad"), protein=str(t / "p.h5ad"), out=t / "o.h5mu"),
         field="rna ", cli=lambda t: _barcodes_cli("--protein", str(t / "p.h5ad"))(t), flag="--rna "),
    Case(id="harmonize batch size", call=lambda t: _harmonize(t, batch_size=0),
         field="batch_size = 0: must be at least 1", cli=_harmonize_cli("--batch-size", "0"),
         flag="--batch-size 0: must be at least 1"),
    Case(id="harmonize map", call=lambda t: _harmonize(t, maps=(("c", "cell_typ"),)),
         field="maps: unknown field 'cell_typ'", cli=_harmonize_cli("--map", "c=cell_typ"),
         flag="--map: unknown field 'cell_typ'"),
    Case(id="harmonize out exists", call=_harmonize, field="exists; set overwrite to replace it",
         cli=_harmonize_cli(), flag="exists; pass --overwrite to replace it", exists="o.h5ad"),
    Case(id="harmonize report dir", call=lambda t: _harmonize(t, report=t),
         field="report ", cli=lambda t: _harmonize_cli("--report", str(t))(t), flag="--report "),
    Case(id="where", call=lambda t: CellFilter(where="a =="), field="where: ",
         cli=lambda t: ["slice", "--census", "demo", "--where", "a ==", "--out", str(t / "s.h5ad")],
         flag="--where: "),
    Case(id="census uri", call=lambda t: open_census(census_uri=str(t / "nope")), field="census_uri ",
         cli=lambda t: ["slice", "--census-uri", str(t / "nope"), "--dry-run"], flag="--census-uri "),
    Case(id="two ontologies", call=lambda t: resolve_term("extravillous trophoblast"),
         field="set ontologies to narrow it", cli=lambda t: ["terms", "extravillous trophoblast"],
         flag="pass --ontology to narrow it"),
    Case(id="n_bins", call=lambda t: bin_values(sp.csr_matrix((1, 1)), 2),
         field="n_bins = 2: must be at least 3"),
    Case(id="max_len",
         call=lambda t: cap_genes(sp.csr_matrix((1, 1)), 0, seed=0, row_keys=np.zeros(1),
                                  column_keys=np.zeros(1)),
         field="max_len = 0: must be at least 1"),
    Case(id="n_hvg", call=lambda t: ClippedMoments(mean=np.zeros(1), std=np.ones(1), n_cells=2,
                                                   clip=np.ones(1)).top(0),
         field="n_hvg = 0: must be at least 1"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_library_names_the_field(case: Case, tmp_path: Path) -> None:
    if case.exists:
        _existing(tmp_path, case.exists)
    with pytest.raises(AtlasprepError) as caught:
        case.call(tmp_path)
    message = str(caught.value)
    assert case.field in message
    assert not FLAG.search(message), message


@pytest.mark.parametrize("case", [c for c in CASES if c.cli is not None], ids=lambda c: c.id)
def test_the_cli_names_the_flag(case: Case, tmp_path: Path) -> None:
    assert case.cli is not None
    if case.exists:
        _existing(tmp_path, case.exists)
    result = CliRunner().invoke(app, case.cli(tmp_path))
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert result.exit_code in (1, 2), result.output
    assert len(lines) == 1, result.stderr
    assert case.flag in lines[0], lines[0]


# -- the translation ----------------------------------------------------------------------------


def test_flags_come_from_the_typer_parameters() -> None:
    import typer

    def command(
        out: Path = typer.Option(..., "--out", "-o"),
        pixel_size: float = typer.Option(1.0, "--pixel-size"),
        shuffle: bool = typer.Option(True, "--shuffle/--no-shuffle"),
        n_hvg: int | None = typer.Option(None),
        query: str = typer.Argument(...),
    ) -> None: ...

    flags = field_flags(command, {"pixel_size_um": "pixel_size", "shard_bytes": "--shard-size"})
    assert flags == {
        "out": "--out",
        "pixel_size": "--pixel-size",
        "shuffle": "--no-shuffle",  # what a user types to change it
        "n_hvg": "--n-hvg",
        "pixel_size_um": "--pixel-size",
        "shard_bytes": "--shard-size",
    }


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("shard_bytes = 0: must be positive", "--shard-size 0: must be positive"),
        ("out x.h5ad exists; set overwrite to replace it",
         "--out x.h5ad exists; pass --overwrite to replace it"),
        ("out /tmp/out/out.h5ad: no directory", "--out /tmp/out/out.h5ad: no directory"),
        ("where: empty", "--where: empty"),
        ("n_counts_column = 'x': fix it, or set n_counts_column = none",
         "--n-counts-column 'x': fix it, or pass --n-counts-column none"),
        ("a: check out (µm); or set out", "a: check --out (µm); or pass --out"),
        ("holdout donor_id=d1: no cell has that donor_id",
         "--holdout donor_id=d1: no cell has that donor_id"),
        ("the set of genes is empty; give out", "the set of genes is empty; give out"),
        ("outer join: nothing", "outer join: nothing"),
        ("[tokenize] shard_bytes = 0", "[tokenize] shard_bytes = 0"),
        ("--set 'out': expected table.key=value", "--set 'out': expected table.key=value"),
        # a file's modality is not a field (the hint said --out a.h5mu:--out)
        ("a.h5mu:out: swapped? set out = a.h5mu:out instead",
         "a.h5mu:out: swapped? pass --out a.h5mu:out instead"),
    ],
)  # fmt: skip
def test_messages_in_flags(message: str, expected: str) -> None:
    flags = {
        "shard_bytes": "--shard-size",
        "out": "--out",
        "overwrite": "--overwrite",
        "where": "--where",
        "n_counts_column": "--n-counts-column",
        "holdout": "--holdout",
        "donor_id": "--donor-id",
    }
    assert in_flags(message, flags) == expected


# -- no flag in a library message -------------------------------------------------------------------

# modules of other engineers still moving their messages to field names (issue 15): this set
# only shrinks
PENDING = {
    "run/recipe.py",
}
# where a message is put together before it is raised
_MESSAGE_NAMES = {"message", "hint", "where", "what", "reason", "detail"}


def _raised_text(tree: ast.AST) -> list[tuple[int, str]]:
    """The string pieces of every ``raise`` statement's expression, and of the values given to
    a message's usual names (``hint=…``, ``message = …``): messages and f-string parts."""
    found = []
    for node in ast.walk(tree):
        part: ast.AST | None = None
        if isinstance(node, ast.Raise):
            part = node.exc
        elif isinstance(node, ast.keyword):
            part = node.value if node.arg in _MESSAGE_NAMES else None
        elif isinstance(node, ast.Assign):
            named = any(isinstance(t, ast.Name) and t.id in _MESSAGE_NAMES for t in node.targets)
            part = node.value if named else None
        if part is not None:
            for inner in ast.walk(part):
                if isinstance(inner, ast.Constant) and isinstance(inner.value, str):
                    found.append((inner.lineno, inner.value))
    return found


def test_no_library_error_names_a_flag() -> None:
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("cli/") or relative in PENDING:
            continue
        for line, text in _raised_text(ast.parse(path.read_text(encoding="utf-8"))):
            if FLAG.search(text):
                offenders[f"{relative}:{line}"] = text
    assert offenders == {}
