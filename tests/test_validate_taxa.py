"""The NCBITaxon index `validate` places strains with: the shipped one is what the pinned release
gives, and a release without a shipped index is indexed once into the cache."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from atlasprep.harmonize._schema_rules import WITH_DESCENDANTS
from atlasprep.harmonize._term_rules import accepted_species
from atlasprep.ontology import _taxa


@pytest.mark.slow  # loads NCBITaxon: ~15-20 s of the suite for a file that changes only with the pin
def test_shipped_index_is_the_pinned_release_indexed(tmp_path):
    shipped = _taxa.SHIPPED / _taxa.index_name(WITH_DESCENDANTS)
    assert shipped.exists()  # no NCBITaxon load when validating
    built = _taxa.build_taxa_below(WITH_DESCENDANTS, tmp_path / "index.json")  # loads NCBITaxon (~15 s)
    assert built == json.loads(shipped.read_text())
    assert json.loads((tmp_path / "index.json").read_text()) == built
    assert built["NCBITaxon:10091"] == "NCBITaxon:10090"  # Mus musculus castaneus: a mouse


def test_species_and_strains_are_placed_without_loading_ncbitaxon(monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("NCBITaxon loaded")

    monkeypatch.setattr(_taxa, "build_taxa_below", no_load)
    assert accepted_species("NCBITaxon:9606") == "NCBITaxon:9606"
    assert accepted_species("NCBITaxon:10092") == "NCBITaxon:10090"  # Mus musculus domesticus
    assert accepted_species("NCBITaxon:9685") is None  # cat: not accepted
    assert accepted_species("NCBITaxon:2697049") is None  # SARS-CoV-2: forbidden


def test_the_shipped_index_is_named_for_the_pinned_release():
    """Cheap guard in the default run: a new pin (or other roots) finds no shipped index, and
    the slow test above rebuilds it."""
    shipped = sorted(p.name for p in _taxa.SHIPPED.glob("NCBITaxon-*.json"))
    assert shipped == [_taxa.index_name(WITH_DESCENDANTS)]


_FAKE_TAXA = {  # term -> its ancestors, as the parser gives them
    "NCBITaxon:1": {},
    "NCBITaxon:10090": {"NCBITaxon:1": 3},
    "NCBITaxon:10091": {"NCBITaxon:10090": 1, "NCBITaxon:1": 4},
    "NCBITaxon:9606": {"NCBITaxon:1": 3},
    "NCBITaxon:63221": {"NCBITaxon:9606": 1, "NCBITaxon:1": 4},
    "NCBITaxon:9685": {"NCBITaxon:1": 3},
}


def test_an_unshipped_release_is_indexed_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ATLASPREP_CACHE", str(tmp_path))
    monkeypatch.setattr(_taxa, "ontology_versions", lambda: {"NCBITaxon": "v1999-01-01"})
    loads = []

    def ontology(name):
        loads.append(name)
        return {term: {"ancestors": ancestors} for term, ancestors in _FAKE_TAXA.items()}

    monkeypatch.setattr(
        _taxa, "get_parser", lambda: SimpleNamespace(cxg_schema=SimpleNamespace(ontology=ontology))
    )
    roots = ("NCBITaxon:9606", "NCBITaxon:10090")
    _taxa.taxa_below.cache_clear()
    try:
        below = _taxa.taxa_below(roots)
        # every term with a root among its ancestors, mapped to the first root listed; roots left out
        assert dict(below) == {"NCBITaxon:10091": "NCBITaxon:10090", "NCBITaxon:63221": "NCBITaxon:9606"}
        cached = tmp_path / "ontology" / _taxa.index_name(roots)
        assert "v1999-01-01" in cached.name
        assert json.loads(cached.read_text()) == dict(below)
        _taxa.taxa_below.cache_clear()
        assert dict(_taxa.taxa_below(roots)) == dict(below)
        assert loads == ["NCBITaxon"]  # the second process reads the cache
        cached.write_text("{not json")  # a damaged cache file is rebuilt
        _taxa.taxa_below.cache_clear()
        assert dict(_taxa.taxa_below(roots)) == dict(below)
        assert loads == ["NCBITaxon", "NCBITaxon"]
    finally:
        _taxa.taxa_below.cache_clear()
