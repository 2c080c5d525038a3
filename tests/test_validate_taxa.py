"""The NCBITaxon index `validate` places strains with: the shipped one is what the pinned release
gives, and a release without a shipped index is indexed once into the cache."""

from __future__ import annotations

import json

from atlasprep.harmonize._schema_rules import WITH_DESCENDANTS
from atlasprep.harmonize._term_rules import accepted_species
from atlasprep.ontology import _taxa


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
