"""harmonize and align take the same :class:`SourceSpec` as slice and tokenize: each field is
honoured or refused by name.

harmonize honours ``where``, ``primary_only``, the sampling and the counts layer on the input's
own columns, and refuses the Census, several files, term filters and genes; align joins and
registers files whole, so a spec that selects cells or genes is refused.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from atlasprep.align.barcodes import align_barcodes
from atlasprep.align.ccf import register_file
from atlasprep.cli import app
from atlasprep.errors import UsageError
from atlasprep.harmonize import HarmonizeConfig, harmonize
from atlasprep.sources import CellFilter, SourceSpec, open_source, select

_SYMBOLS = ["CD3E", "CD4", "CD8A", "MS4A1", "GAPDH", "ACTB"]


def _raw(path: Path, n: int = 240) -> Path:
    """An unharmonized file: free-text labels, gene symbols, integer counts in X."""
    rng = np.random.default_rng(7)
    obs = pd.DataFrame(
        {
            "annotation": rng.choice(["T cell", "B cell", "monocyte"], size=n),
            "organ": rng.choice(["lung", "liver"], size=n),
            "count_depth": rng.integers(100, 5000, size=n),
        },
        index=[f"cell{i:04d}" for i in range(n)],
    )
    X = sp.random(n, len(_SYMBOLS), density=0.6, format="csr", random_state=3, dtype=np.float32)
    X.data = np.ceil(X.data * 20)
    ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=_SYMBOLS)).write_h5ad(path)
    return path


def test_harmonize_honours_where_and_the_sampling(tmp_path: Path) -> None:
    raw = _raw(tmp_path / "raw.h5ad")
    spec = SourceSpec(
        inputs=(str(raw),),
        filter=CellFilter(where="organ == 'lung' and count_depth > 500", primary_only=False),
        per_group=("annotation", 25),
        max_cells=60,
        seed=11,
    )
    source = open_source(spec)
    try:
        positions = select(spec, source).positions
    finally:
        source.close()
    report = harmonize(
        HarmonizeConfig(source=spec, out=tmp_path / "out.h5ad", maps=(("annotation", "cell_type"),))
    )
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    cells = ad.read_h5ad(raw).obs.pipe(lambda o: o[(o.organ == "lung") & (o.count_depth > 500)]).index
    assert report.n_cells == out.n_obs == len(positions) == 60
    assert list(out.obs_names) == list(ad.read_h5ad(raw).obs_names[positions])
    assert set(out.obs_names) <= set(cells)
    assert (out.obs["organ_original" if "organ_original" in out.obs else "organ"] == "lung").all()
    # the counts are the selected cells' own rows (the six symbols map to six Ensembl IDs)
    whole = ad.read_h5ad(raw)
    assert out.n_vars == len(_SYMBOLS)
    np.testing.assert_array_equal(
        np.asarray(out.X.sum(axis=1)).ravel(), np.asarray(whole[out.obs_names].X.sum(axis=1)).ravel()
    )


def test_harmonize_takes_a_path_as_every_cell(tmp_path: Path) -> None:
    raw = _raw(tmp_path / "raw.h5ad", n=50)
    config = HarmonizeConfig(source=raw, out=tmp_path / "out.h5ad")
    assert config.source == SourceSpec(inputs=(str(raw),), filter=CellFilter(primary_only=False))
    assert config.input == raw
    harmonize(config)
    assert list(ad.read_h5ad(tmp_path / "out.h5ad").obs_names) == [f"cell{i:04d}" for i in range(50)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"census": "demo", "inputs": ()}, "census = 'demo': harmonize reads one AnnData file"),
        ({"inputs": ("a.h5ad", "b.h5ad")}, "inputs = ('a.h5ad', 'b.h5ad'): harmonize reads exactly one"),
        ({"filter": CellFilter(tissue=("lung",))}, "tissue = ('lung',): harmonize reads labels before"),
        ({"filter": CellFilter(cell_type=("T cell",))}, "cell_type = ('T cell',): harmonize reads labels"),
        ({"genes": ("ENSG00000141510",)}, "genes = ('ENSG00000141510',): harmonize maps every gene"),
    ],
)
def test_harmonize_refuses_what_it_cannot_honour_by_field(tmp_path: Path, kwargs, message) -> None:
    spec = SourceSpec(**{"inputs": (str(tmp_path / "in.h5ad"),), **kwargs})
    with pytest.raises(UsageError) as err:
        HarmonizeConfig(source=spec, out=tmp_path / "out.h5ad")
    assert message in str(err.value)


def test_the_harmonize_cli_takes_where_and_sampling(tmp_path: Path) -> None:
    raw = _raw(tmp_path / "raw.h5ad")
    out = tmp_path / "out.h5ad"
    args = ["harmonize", str(raw), "--out", str(out), "--where", "organ == 'liver'", "--max-cells", "17"]
    result = CliRunner().invoke(app, [*args, "--per-group", "annotation=9", "--seed", "2"])
    assert result.exit_code == 0, result.output
    obs = ad.read_h5ad(out).obs
    assert len(obs) == 17
    assert (obs["organ"] == "liver").all()
    bad = CliRunner().invoke(
        app, ["harmonize", str(raw), "--out", str(tmp_path / "o2.h5ad"), "--max-cells", "0"]
    )
    assert bad.exit_code == 2
    assert "--max-cells 0: must be at least 1" in bad.output
    assert not (tmp_path / "o2.h5ad").exists()


def _section(path: Path, n: int = 60) -> Path:
    rng = np.random.default_rng(0)
    adata = ad.AnnData(
        X=sp.random(n, 4, density=0.5, format="csr", random_state=1, dtype=np.float32),
        obs=pd.DataFrame({"zone": rng.choice(["a", "b"], size=n)}, index=[f"s{i}" for i in range(n)]),
    )
    adata.obsm["spatial"] = rng.uniform(0, 500, size=(n, 2))
    adata.write_h5ad(path)
    return path


def test_align_ccf_takes_a_whole_file_spec_and_refuses_a_selection(tmp_path: Path) -> None:
    section = _section(tmp_path / "section.h5ad")
    by_path = register_file(section, tmp_path / "a.h5ad", neighbors=3, bin_size_mm=0.1)
    by_spec = register_file(
        SourceSpec(inputs=(str(section),)), tmp_path / "b.h5ad", neighbors=3, bin_size_mm=0.1
    )
    assert by_path.n_obs == by_spec.n_obs == 60
    a, b = ad.read_h5ad(tmp_path / "a.h5ad"), ad.read_h5ad(tmp_path / "b.h5ad")
    pd.testing.assert_frame_equal(a.obs, b.obs)
    for kwargs, field in (
        ({"filter": CellFilter(where="zone == 'a'")}, "where = \"zone == 'a'\": align ccf keeps every cell"),
        ({"max_cells": 10}, "max_cells = 10: align ccf keeps every cell"),
        ({"layer": "counts"}, "layer = 'counts': align ccf keeps every cell"),
        ({"census": "demo", "inputs": ()}, "census = 'demo': align ccf reads one AnnData file"),
    ):
        spec = SourceSpec(**{"inputs": (str(section),), **kwargs})
        with pytest.raises(UsageError) as err:
            register_file(spec, tmp_path / "c.h5ad", neighbors=3)
        assert field in str(err.value)
        assert not (tmp_path / "c.h5ad").exists()


def test_align_barcodes_refuses_a_spec_that_selects_cells(tmp_path: Path) -> None:
    rna = _section(tmp_path / "rna.h5ad")
    spec = SourceSpec(inputs=(str(rna),), per_group=("zone", 5))
    with pytest.raises(UsageError, match=r"per_group = \('zone', 5\): align barcodes keeps every cell"):
        align_barcodes(spec, protein=str(rna), out=tmp_path / "x.h5mu")
    assert not (tmp_path / "x.h5mu").exists()
