"""Bad inputs and failing disks for the writers of `slice`, `harmonize`, `align barcodes`,
`align ccf` and `tokenize`: every case through the CLI ends in one ``Error:`` line, exit 1 or 2,
no traceback, and leaves the output directory as it was (no output, no ``*.tmp-*``, no
``.obs-*.arrow`` spill, no empty directory).

Read-only directories are real where the tests do not run as root (root writes anyway), and
simulated everywhere: the writer's open or write raises ``OSError`` with ``EACCES`` or ``ENOSPC``.
A real full disk (a 3 MiB tmpfs) is tried where ``mount`` is allowed.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import assert_clean_error, shared_file
from typer.testing import CliRunner

import atlasprep.slice.writer as slice_writer
from atlasprep.align.modalities import feature_kind
from atlasprep.cli import app
from atlasprep.errors import InputFormatError
from atlasprep.sources.counts import check_counts, count_bad_values, tally_counts

GENES = ["ENSG00000141510", "ENSG00000012048", "ENSG00000139618", "ENSG00000157764"]
MULTIOME = "multiome/test_rna_atac.h5mu"
CITESEQ_H5AD = "citeseq/pbmc_10k_protein_v3.h5ad"
CITESEQ_TAR = "citeseq/pbmc_10k_protein_v3/filtered_feature_bc_matrix.tar.gz"
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# -- inputs ---------------------------------------------------------------------------------------


def _counts(bad: str | None = None, n_cells: int = 6) -> np.ndarray:
    X = (np.arange(n_cells * len(GENES)).reshape(n_cells, len(GENES)) % 5).astype(np.float32)
    if bad == "negative":
        X[1, 1], X[3, 2] = -2.0, -1.0
    elif bad == "nan":
        X[2, 0] = np.nan
    elif bad == "inf":
        X[0, 3] = np.inf
    return X


def _h5ad(path: Path, bad: str | None = None, *, symbols: bool = False, n_cells: int = 6) -> Path:
    adata = ad.AnnData(
        X=sp.csr_matrix(_counts(bad, n_cells)),
        obs=pd.DataFrame(
            {
                "cell_type": ["T cell", "B cell"] * (n_cells // 2),
                "donor_id": [f"d{i % 3}" for i in range(n_cells)],
            },
            index=[f"c{i}" for i in range(n_cells)],
        ),
        var=pd.DataFrame(index=["TP53", "CDK12", "BRCA2", "BRAF"] if symbols else GENES),
    )
    adata.write_h5ad(path)
    return path


def _barcodes(n: int, seed: int) -> list[str]:
    codes = np.random.default_rng(seed).integers(0, 4, size=(n, 16))
    return ["".join(row) + "-1" for row in np.array(list("ACGT"))[codes]]


def _modality(path: Path, names: list[str], feature_types: str | None = None, n: int = 5) -> Path:
    var = pd.DataFrame(index=names)
    if feature_types is not None:
        var["feature_types"] = feature_types
    ad.AnnData(
        X=sp.csr_matrix(np.ones((n, len(names)), dtype=np.float32)),
        obs=pd.DataFrame(index=_barcodes(n, seed=7)),
        var=var,
    ).write_h5ad(path)
    return path


def _section(path: Path) -> Path:
    ij = np.stack(np.meshgrid(np.arange(4), np.arange(4), indexing="ij"), -1).reshape(-1, 2)
    ad.AnnData(
        X=sp.csr_matrix(np.ones((len(ij), 2), dtype=np.float32)),
        obs=pd.DataFrame(index=[f"spot{k}" for k in range(len(ij))]),
        var=pd.DataFrame(index=["a", "b"]),
        obsm={"spatial": ij * 10.0},
    ).write_h5ad(path)
    return path


def _listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def _run(args: list[str]) -> tuple[str, object]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return assert_clean_error(result), result


def _check_nothing_left(directory: Path, before: list[str]) -> None:
    after = _listing(directory)
    assert after == before, sorted(set(after) ^ set(before))
    assert not list(directory.rglob("*.tmp-*"))
    assert not list(directory.rglob("*.arrow"))


# -- counts are counts ----------------------------------------------------------------------------


def test_tally_counts_each_rule_once():
    data = np.array([1, 0, -1, -0.5, 2.5, np.nan, np.inf, -np.inf, 3], dtype=np.float32)
    tally = tally_counts(data)
    assert (tally.n_negative, tally.n_nonfinite, tally.n_fractional) == (2, 3, 2)
    assert count_bad_values(data) == (2, 3)
    assert count_bad_values(np.array([1, -2, 3], dtype=np.int64)) == (1, 0)
    assert count_bad_values(np.array([1, 2], dtype=np.uint16)) == (0, 0)
    assert count_bad_values(np.array([1, np.nan], dtype=np.float16)) == (0, 1)
    assert count_bad_values(np.array([], dtype=np.float32)) == (0, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_large_array_is_tallied_in_parts_to_the_same_counts(monkeypatch, dtype):
    from atlasprep.sources import counts

    n = 3 * counts._PART_VALUES + 12_345  # three parts or more, the last one uneven
    data = np.ones(n, dtype=dtype)
    rng = np.random.default_rng(0)
    places = rng.choice(n, size=7_000, replace=False)  # bad values in every part
    kinds = np.array([-1.0, -0.5, 2.5, np.nan, np.inf, -np.inf, 3.0], dtype=dtype)
    data[places] = np.resize(kinds, len(places))
    data[[0, n - 1]] = [np.nan, -2.0]  # the first and last values of the whole array
    expected = (1_000 + 1_000 + 1, 1_000 * 3 + 1, 1_000 + 1_000)  # negative, non-finite, fractional
    monkeypatch.setattr(counts, "_THREADS", 4)
    tally = tally_counts(data)
    assert (tally.n_negative, tally.n_nonfinite, tally.n_fractional) == expected
    monkeypatch.setattr(counts, "_THREADS", 1)  # the same counts in one part
    assert tally_counts(data) == tally
    assert tally_counts(data[::-1]).n_nonfinite == expected[1]  # a strided view is read as well


def test_check_counts_names_the_matrix_and_the_counts():
    X = sp.csr_matrix(_counts("negative"))
    with pytest.raises(
        InputFormatError, match=r"^raw\.X of a\.h5ad holds 2 negative values \(in a batch of 6"
    ):
        check_counts(X, where="raw.X of a.h5ad")
    X.data[0] = np.nan
    with pytest.raises(InputFormatError, match="2 negative and 1 non-finite"):
        check_counts(X, where="X")
    halves = sp.csr_matrix(np.array([[0.5, 1.0]], dtype=np.float32))
    assert check_counts(halves, where="X").n_fractional == 1
    with pytest.raises(InputFormatError, match="1 non-integer value "):
        check_counts(halves, where="X", integer=True)


SCHEMES = ["rank", "bin", "raw"]


@pytest.mark.parametrize("bad", ["negative", "nan", "inf"])
@pytest.mark.parametrize(
    "command",
    ["slice-h5ad", "slice-zarr", "harmonize", *(f"tokenize-{s}" for s in SCHEMES)],
)
def test_negative_and_non_finite_counts_are_refused(tmp_path, command, bad):
    src = _h5ad(tmp_path / "in.h5ad", bad, symbols=command == "harmonize")
    before = _listing(tmp_path)
    name, _, scheme = command.partition("-")
    if name == "slice":
        args = ["slice", "--input", src, "--out", tmp_path / f"out.{scheme}"]
    elif name == "harmonize":
        args = ["harmonize", src, "--out", tmp_path / "out.h5ad", "--report", tmp_path / "r.json"]
    else:
        args = ["tokenize", "--input", src, "--scheme", scheme, "--out", tmp_path / "store"]
    line, _ = _run(args)
    what = "negative" if bad == "negative" else "non-finite"
    assert what in line
    assert "raw counts are non-negative and finite" in line
    # slice names the file once slice/api.py passes the source's matrix to the writer
    assert "in.h5ad" in line, line
    _check_nothing_left(tmp_path, before)


def test_normalized_but_valid_counts_still_pass(tmp_path):
    """Non-integer, non-negative values: slice and harmonize record them, tokenize needs
    --assume-normalized for rank and bin, as before."""
    src = tmp_path / "in.h5ad"
    X = _counts() / 3
    ad.AnnData(
        X=sp.csr_matrix(X), obs=pd.DataFrame(index=[f"c{i}" for i in range(6)]), var=pd.DataFrame(index=GENES)
    ).write_h5ad(src)
    runner = CliRunner()
    assert (
        runner.invoke(app, ["slice", "--input", str(src), "--out", str(tmp_path / "s.h5ad")]).exit_code == 0
    )
    line, _ = _run(["tokenize", "--input", src, "--scheme", "bin", "--out", tmp_path / "t"])
    assert "non-integer" in line
    assert "--assume-normalized" in line
    ok = runner.invoke(
        app, ["tokenize", "--input", str(src), "--scheme", "raw", "--out", str(tmp_path / "raw")]
    )
    assert ok.exit_code == 0, ok.stderr


def test_raw_and_bin_kernels_refuse_what_would_store_nan():
    from atlasprep.tokenize.binning import bin_values
    from atlasprep.tokenize.raw import raw_encode

    X = sp.csr_matrix(np.array([[1.0, -1.0, 3.0]], dtype=np.float32))  # total 3, log1p(-1/3 * 1e4)
    with pytest.raises(InputFormatError, match="negative"):
        raw_encode(X, np.arange(3), max_len=8)
    X = sp.csr_matrix(np.array([[1.0, np.nan, 3.0]], dtype=np.float32))
    with pytest.raises(InputFormatError, match="non-finite"):
        bin_values(X, n_bins=5)
    good = raw_encode(sp.csr_matrix(np.array([[1.0, 0.0, 3.0]], dtype=np.float32)), np.arange(3), max_len=8)
    assert np.isfinite(good.values).all()


# -- OS errors: simulated --------------------------------------------------------------------------


def _oserror(code: int) -> OSError:
    # as h5py raises them: the errno inside a long message, no file name
    return OSError(
        code, f"Unable to synchronously write (errno = {code}, error message = '{os.strerror(code)}')"
    )


def _failing(original: Callable[..., object], number: int, code: int, path_arg: int | None = None):  # type: ignore[no-untyped-def]
    """``original``, failing with ``code`` from its ``number``-th call on; a failing call first
    writes a partial file at its argument ``path_arg`` (as a real writer leaves one)."""
    calls = {"n": 0}

    def fail(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] >= number:
            if path_arg is not None:
                Path(args[path_arg]).write_bytes(b"half a file")
            raise _oserror(code)
        return original(*args, **kwargs)

    return fail


CODES = [errno.EACCES, errno.ENOSPC]
HINTS = {errno.EACCES: "Permission denied", errno.ENOSPC: "No space left on device"}


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize(
    ("where", "fmt"),
    [
        ("open", "h5ad"),
        ("open", "zarr"),
        ("first batch", "h5ad"),
        ("first batch", "zarr"),
        ("later batch", "h5ad"),
        ("later batch", "zarr"),
        ("finish", "h5ad"),
        ("finish", "zarr"),
        ("spill", "h5ad"),
    ],
)
def test_slice_writer_os_errors_leave_nothing(tmp_path, monkeypatch, code, where, fmt):
    src = _h5ad(tmp_path / "in.h5ad", n_cells=8)
    before = _listing(tmp_path)
    if where == "open":
        monkeypatch.setattr(slice_writer, "_open_store", _failing(slice_writer._open_store, 1, code, 0))
    elif where == "first batch":
        monkeypatch.setattr(slice_writer, "write_elem", _failing(slice_writer.write_elem, 1, code))
    elif where == "later batch":
        monkeypatch.setattr(slice_writer, "sparse_dataset", _failing(slice_writer.sparse_dataset, 2, code))
    elif where == "finish":  # X is written by the first call; obs, var, uns by the later ones
        monkeypatch.setattr(slice_writer, "write_elem", _failing(slice_writer.write_elem, 3, code))
    else:
        import pyarrow as pa

        monkeypatch.setattr(slice_writer.pa.ipc, "new_file", _failing(pa.ipc.new_file, 1, code, 0))
    out = tmp_path / f"out.{fmt}"
    line, _ = _run(["slice", "--input", src, "--out", out, "--batch-size", "2"])
    assert f"{out}: {HINTS[code]}" in line, line
    _check_nothing_left(tmp_path, before)


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("where", ["output", "report"])
def test_harmonize_os_errors_leave_neither_output_nor_report(tmp_path, monkeypatch, code, where):
    src = _h5ad(tmp_path / "in.h5ad", symbols=True)
    before = _listing(tmp_path)
    if where == "output":
        monkeypatch.setattr(slice_writer, "write_elem", _failing(slice_writer.write_elem, 2, code))
    else:
        real = Path.write_text

        def write_text(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            if ".r.json.tmp-" in self.name:
                self.write_bytes(b"{")
                raise OSError(code, os.strerror(code), str(self))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(Path, "write_text", write_text)
    line, _ = _run(["harmonize", src, "--out", tmp_path / "out.h5ad", "--report", tmp_path / "r.json"])
    assert HINTS[code] in line
    _check_nothing_left(tmp_path, before)


@pytest.mark.parametrize("code", CODES)
def test_align_barcodes_os_errors_leave_nothing(tmp_path, monkeypatch, code):
    rna = _modality(tmp_path / "rna.h5ad", GENES)
    atac = _modality(tmp_path / "atac.h5ad", ["chr1:100-200", "chr1:300-400"])
    before = _listing(tmp_path)
    monkeypatch.setattr(md, "write_h5mu", _failing(md.write_h5mu, 1, code, 0))
    out = tmp_path / "out.h5mu"
    line, _ = _run(["align", "barcodes", "--rna", rna, "--atac", atac, "--out", out])
    assert f"{out}: {HINTS[code]}" in line
    _check_nothing_left(tmp_path, before)


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("fmt", ["h5ad", "zarr"])
def test_align_ccf_os_errors_leave_nothing(tmp_path, monkeypatch, code, fmt):
    section = _section(tmp_path / "section.h5ad")
    before = _listing(tmp_path)
    method = "write_h5ad" if fmt == "h5ad" else "write_zarr"
    monkeypatch.setattr(ad.AnnData, method, _failing(getattr(ad.AnnData, method), 1, code, 1))
    out = tmp_path / f"out.{fmt}"
    line, _ = _run(["align", "ccf", "--spatial", section, "--neighbors", "2", "--out", out])
    assert f"{out}: {HINTS[code]}" in line
    _check_nothing_left(tmp_path, before)


# -- OS errors: a real read-only directory ----------------------------------------------------------


@pytest.fixture
def locked(tmp_path):  # type: ignore[no-untyped-def]
    """A directory nothing can be written into: mode 0o500, or (root writes through modes) a
    read-only tmpfs mounted there (skipped where this process may not mount)."""
    path = tmp_path / "locked"
    path.mkdir()
    if not AS_ROOT:
        path.chmod(0o500)
        try:
            yield path
        finally:
            path.chmod(0o700)
        return
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64m", "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"root writes through modes, and no read-only tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


@pytest.mark.parametrize(
    "command", ["slice-h5ad", "slice-zarr", "harmonize", "align-barcodes", "align-ccf", "tokenize"]
)
def test_read_only_output_directory(tmp_path, locked, command):
    src = _h5ad(tmp_path / "in.h5ad", symbols=command == "harmonize")
    rna = _modality(tmp_path / "rna.h5ad", GENES)
    atac = _modality(tmp_path / "atac.h5ad", ["chr1:100-200", "chr1:300-400"])
    section = _section(tmp_path / "section.h5ad")
    args = {
        "slice-h5ad": ["slice", "--input", src, "--out", locked / "o.h5ad"],
        "slice-zarr": ["slice", "--input", src, "--out", locked / "o.zarr"],
        "harmonize": ["harmonize", src, "--out", locked / "o.h5ad"],
        "align-barcodes": ["align", "barcodes", "--rna", rna, "--atac", atac, "--out", locked / "o.h5mu"],
        "align-ccf": ["align", "ccf", "--spatial", section, "--neighbors", "2", "--out", locked / "o.h5ad"],
        "tokenize": ["tokenize", "--input", src, "--scheme", "raw", "--out", locked / "store"],
    }[command]
    line, result = _run(args)
    assert "Permission denied" in line or "Read-only file system" in line
    assert result.exit_code == 1  # type: ignore[attr-defined]
    assert list(locked.iterdir()) == []


# -- usage errors: refused before any work, nothing created -----------------------------------------


def test_usage_errors_leave_nothing(tmp_path):
    src = _h5ad(tmp_path / "in.h5ad", symbols=True)
    rna = _modality(tmp_path / "rna.h5ad", GENES)
    atac = _modality(tmp_path / "atac.h5ad", ["chr1:100-200", "chr1:300-400"])
    section = _section(tmp_path / "section.h5ad")
    (tmp_path / "reports").mkdir()
    (tmp_path / "mine.json").write_text("{}")
    missing = tmp_path / "missing"
    before = _listing(tmp_path)
    cases = [
        (
            ["harmonize", src, "--out", tmp_path / "o.h5ad", "--report", tmp_path / "reports"],
            "is a directory",
        ),
        (["harmonize", src, "--out", tmp_path / "o.h5ad", "--report", missing / "r.json"], "does not exist"),
        (["harmonize", src, "--out", tmp_path / "o.h5ad", "--report", tmp_path / "o.h5ad"], "its own file"),
        (["harmonize", src, "--out", tmp_path / "o.h5ad", "--report", src], "its own file"),
        (["harmonize", src, "--out", tmp_path / "o.h5ad", "--report", tmp_path / "mine.json"], "--overwrite"),
        (["harmonize", src, "--out", missing / "o.h5ad"], "does not exist"),
        (["harmonize", src, "--out", tmp_path / "o.csv"], ".h5ad or .zarr"),
        (["harmonize", src, "--out", src], "exists"),
        (["slice", "--input", src, "--out", missing / "o.h5ad"], "does not exist"),
        (["align", "barcodes", "--rna", rna, "--atac", atac, "--out", missing / "o.h5mu"], "does not exist"),
        (
            ["align", "ccf", "--spatial", section, "--neighbors", "2", "--out", missing / "o.h5ad"],
            "does not exist",
        ),
        (
            ["align", "ccf", "--spatial", section, "--neighbors", "2", "--out", tmp_path / "o.h5"],
            ".h5ad or .zarr",
        ),
        (["align", "barcodes", "--rna", rna, "--atac", atac, "--out", tmp_path / "reports"], ".h5mu"),
    ]
    for args, message in cases:
        line, result = _run(args)
        assert message in line, (args, line)
        assert result.exit_code == 2, (args, line)  # type: ignore[attr-defined]
        _check_nothing_left(tmp_path, before)


# -- align barcodes: what each flag's features look like -------------------------------------------


@pytest.mark.parametrize(
    ("rna", "other", "flag", "message"),
    [
        ("peaks", ("--atac", "genes"), "--rna", "look like ATAC peaks"),
        ("genes", ("--atac", "genes"), "--atac", "look like RNA genes (Ensembl gene IDs"),
        ("genes", ("--atac", "gene-expression"), "--atac", "var['feature_types'] is 'Gene Expression'"),
        ("genes", ("--atac", "antibodies"), "--atac", "look like antibodies"),
        ("antibodies", ("--protein", "antibodies"), "--rna", "look like antibodies"),
        ("genes", ("--protein", "peaks"), "--protein", "look like ATAC peaks"),
        ("genes", ("--protein", "genes"), "--protein", "look like RNA genes"),
    ],
)
def test_swapped_modalities_are_refused(tmp_path, rna, other, flag, message):
    kinds = {
        "peaks": (["chr1:100-200", "chr1-300-400", "chr2:5-10"], None),
        "genes": (GENES, None),
        "gene-expression": (["CD3E", "CD4", "MS4A1", "CD19"], "Gene Expression"),
        "antibodies": (["CD3", "CD4", "CD8a"], "Antibody Capture"),
    }
    files = {}
    for name, kind in (("rna", rna), ("other", other[1])):
        names, types = kinds[kind]
        files[name] = _modality(tmp_path / f"{name}.h5ad", names, types)
    before = _listing(tmp_path)
    out = tmp_path / "o.h5mu"
    line, result = _run(["align", "barcodes", "--rna", files["rna"], other[0], files["other"], "--out", out])
    assert line.startswith(f"Error: {flag} "), line
    assert message in line, line
    assert "were the inputs swapped" in line
    assert result.exit_code == 2  # type: ignore[attr-defined]
    _check_nothing_left(tmp_path, before)


def test_multiome_swap_is_refused_and_the_right_way_round_passes(tmp_path):
    path = shared_file(MULTIOME)
    line, _ = _run(
        ["align", "barcodes", "--rna", f"{path}:atac", "--atac", f"{path}:rna", "--out", tmp_path / "x.h5mu"]
    )
    assert f"--rna {path}:atac: its 174 features look like ATAC peaks" in line
    line, _ = _run(
        ["align", "barcodes", "--rna", f"{path}:rna", "--atac", f"{path}:rna", "--out", tmp_path / "x.h5mu"]
    )
    assert f"--atac {path}:rna: its 45 features look like RNA genes" in line
    assert list(tmp_path.iterdir()) == []
    ok = CliRunner().invoke(
        app,
        [
            "align",
            "barcodes",
            "--rna",
            f"{path}:rna",
            "--atac",
            f"{path}:atac",
            "--out",
            str(tmp_path / "x.h5mu"),
        ],
    )
    assert ok.exit_code == 0, ok.stderr


def test_citeseq_rna_given_as_protein_or_atac_is_refused(tmp_path):
    rna = shared_file(CITESEQ_H5AD)  # 16,727 gene symbols in X; ADT counts in obsm
    tar = shared_file(CITESEQ_TAR)
    line, _ = _run(["align", "barcodes", "--rna", tar, "--atac", rna, "--out", tmp_path / "x.h5mu"])
    assert "look like RNA genes (gene symbols such as" in line
    # as --protein the h5ad gives its obsm['protein_expression']: antibodies, accepted
    ok = CliRunner().invoke(
        app,
        ["align", "barcodes", "--rna", str(tar), "--protein", str(rna), "--out", str(tmp_path / "x.h5mu")],
    )
    assert ok.exit_code == 0, ok.stderr


def test_feature_kind_by_names_and_types():
    def kind(names, types=None, symbols=False):  # type: ignore[no-untyped-def]
        var = pd.DataFrame(index=names)
        if types is not None:
            var["feature_types"] = types
        return feature_kind(var, pd.Index(names), symbols=symbols)[0]

    assert kind(["chr1:1-2", "chrX-10-20", "GL000194.1:5-9"]) == "peaks"
    assert kind(["ENSG00000141510.12", "ENSMUSG00000059552", "ENSG00000012048"]) == "genes"
    assert kind(["CD3_TotalSeqB", "CD4_TotalSeqB", "IgG1"]) == "antibodies"
    assert kind(["TP53", "BRCA2", "HLA-A"]) is None
    assert kind(["TP53", "BRCA2", "HLA-A"], symbols=True) == "genes"
    assert kind(["g0", "g1", "g2"], symbols=True) is None
    assert kind(["a", "b", "c"], ["Peaks", "Peaks", "Gene Expression"]) == "peaks"
    assert kind(["a", "b"], ["Custom", "Custom"]) is None
    assert kind([]) is None


# -- a real full disk ------------------------------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path):  # type: ignore[no-untyped-def]
    """A 3 MiB tmpfs (root and a kernel that lets this process mount; else skipped)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if not AS_ROOT:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("fmt", ["h5ad", "zarr"])
def test_slice_on_a_full_disk_fails_cleanly(tmp_path, full_disk, fmt):
    """Was a segmentation fault for h5ad: HDF5 met ENOSPC while closing a dataset."""
    rng = np.random.default_rng(0)
    n_cells, n_genes = 20_000, 2_000
    X = sp.random(n_cells, n_genes, density=0.05, format="csr", dtype=np.float32, random_state=rng)
    X.data = np.ceil(X.data * 10)
    src = tmp_path / "big.h5ad"
    ad.AnnData(
        X=X,
        obs=pd.DataFrame(index=[f"c{i}" for i in range(n_cells)]),
        var=pd.DataFrame(index=[f"ENSG{i:011d}" for i in range(n_genes)]),
    ).write_h5ad(src)
    # a process of its own: a segmentation fault must fail this test, not end the session
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "atlasprep",
            "slice",
            "--input",
            str(src),
            "--out",
            str(full_disk / f"o.{fmt}"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if fmt == "zarr" and done.returncode == 0:
        pytest.skip("the compressed zarr fit in 3 MiB")
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, done.stderr[-2000:]
    assert "No space left on device" in errors[0]
    assert list(full_disk.iterdir()) == []
