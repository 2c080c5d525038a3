"""`validate` against cellxgene-schema 7.1.2: the same verdict on every single-fault mutant of the
CELLxGENE fixtures (tests/data/validate/make_mutants.py), and the problem names the broken rule.

The verdicts were recorded once, offline, by running the real validator on each mutant
(tests/data/validate/record_verdicts.py); here each mutant is rebuilt from the fixture in a
temporary directory, and the ontologies load once for all of them.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import anndata as ad
import pytest
from conftest import shared_file

from atlasprep.harmonize import Profile, validate_anndata

HERE = Path(__file__).parent / "data" / "validate"
RECORDED = json.loads((HERE / "verdicts.json").read_text())


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_mutants", HERE / "make_mutants.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_mutants"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


MUTANTS = _load_generator()
BY_NAME = {m.name: m for m in MUTANTS.MUTANTS}


@pytest.fixture(scope="module")
def bases() -> dict[str, ad.AnnData]:
    valid = ad.read_h5ad(shared_file("cellxgene/example_valid.h5ad"))
    return {
        "valid": valid,
        "invalid": ad.read_h5ad(shared_file("cellxgene/example_invalid_CL.h5ad")),
        "visium": MUTANTS.visium(valid),
    }


def test_every_mutant_has_a_recorded_verdict():
    assert RECORDED["validator"] == "cellxgene-schema 7.1.2"
    assert set(BY_NAME) == set(RECORDED["verdicts"])
    assert len(BY_NAME) >= 80
    verdicts = RECORDED["verdicts"]
    assert sum(not v["valid"] for v in verdicts.values()) >= 80  # faults, not just valid variants
    for name, verdict in verdicts.items():  # the recorded errors say why
        assert verdict["valid"] == (not verdict["errors"]), name


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_same_verdict_as_cellxgene_schema(bases, tmp_path, name):
    mutant = BY_NAME[name]
    path = MUTANTS.build(mutant, bases[mutant.base], tmp_path / f"{name}.h5ad")
    report = validate_anndata(path)
    expected = RECORDED["verdicts"][name]
    assert report.ok == expected["valid"], (expected["errors"], [str(p) for p in report.problems])
    if not report.ok and mutant.rule:  # the problem names the field the schema's rule is about
        named = [p for p in report.problems if mutant.rule in p.column or mutant.rule in p.what]
        assert named, (mutant.rule, [str(p) for p in report.problems])


UPLOAD_ONLY = ("uns_missing_title", "obsm_none", "obsm_only_unprefixed")


@pytest.mark.parametrize("name", UPLOAD_ONLY)
def test_atlasprep_profile_relaxes_upload_only_rules(bases, tmp_path, name):
    mutant = BY_NAME[name]
    path = MUTANTS.build(mutant, bases[mutant.base], tmp_path / f"{name}.h5ad")
    assert not validate_anndata(path).ok
    report = validate_anndata(path, profile=Profile.atlasprep)
    assert report.ok, [str(p) for p in report.problems]
    assert any(w.column == "profile" and "title" in w.what for w in report.warnings)


@pytest.mark.parametrize(
    ("name", "phrase"),
    [("var_filtered_but_in_x_ok", "nonzero values in X"), ("var_zero_in_x_not_filtered_ok", "all zero in X")],
)
def test_what_cellxgene_schema_warns_about_stays_a_warning(bases, tmp_path, name, phrase):
    mutant = BY_NAME[name]
    report = validate_anndata(MUTANTS.build(mutant, bases[mutant.base], tmp_path / f"{name}.h5ad"))
    assert report.ok
    theirs = RECORDED["verdicts"][name]["warnings"]
    assert any("feature_is_filtered" in w or "all-zero values in adata.X" in w for w in theirs), theirs
    warned = [w for w in report.warnings if w.column == "var['feature_is_filtered']" and phrase in w.what]
    assert [w.examples for w in warned] == [("ENSG00000127603",)]
