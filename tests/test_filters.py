"""Filters: resolution, compilation against a source's values, and safe quoting."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import tiledbsoma as soma
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlasprep.sources import CellFilter, compile_filter, resolve_filter, soma_quote

NASTY = [
    "Peyer's patch B cell",
    'say "hi"',
    "back\\slash",
    "Fuchs' endothelial dystrophy",
    "tab\there",
    "ünï",
]


@pytest.fixture(scope="module")
def donors_frame(tmp_path_factory):
    """A SOMA DataFrame whose dictionary column holds values with quotes and backslashes."""
    uri = str(tmp_path_factory.mktemp("soma") / "df")
    schema = pa.schema([("donor_id", pa.dictionary(pa.int32(), pa.large_string()))])
    soma.DataFrame.create(uri, schema=schema, domain=[(0, 1_000)]).close()
    values = np.array(NASTY * 5)
    with soma.DataFrame.open(uri, "w") as df:
        df.write(
            pa.table(
                {
                    "soma_joinid": pa.array(np.arange(len(values)), type=pa.int64()),
                    "donor_id": pa.array(values).dictionary_encode(),
                }
            )
        )
    return uri, values


def test_quoted_values_match_exactly_in_tiledbsoma(donors_frame):
    uri, values = donors_frame
    with soma.DataFrame.open(uri) as df:
        for value in NASTY:
            flt = CellFilter(donor_id=(value,), primary_only=False)
            compiled = compile_filter(resolve_filter(flt), lambda _c: None)
            got = df.read(value_filter=compiled.value_filter()).concat()["soma_joinid"].to_numpy()
            assert np.array_equal(np.sort(got), np.flatnonzero(values == value))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30))
def test_soma_quote_round_trips_any_text(text):
    import ast

    assert ast.literal_eval(soma_quote(text)) == text


def test_labels_resolve_and_descendants_expand():
    resolved = resolve_filter(CellFilter(cell_type=("immune cell",), tissue=("lung",)))
    cell_types = resolved.values["cell_type_ontology_term_id"]
    assert "CL:0000738" in cell_types
    assert "CL:0000624" in cell_types
    assert "CL:0000182" not in cell_types
    assert "UBERON:0008953" in resolved.values["tissue_ontology_term_id"]
    exact = resolve_filter(CellFilter(tissue=("lung",), exact=True))
    assert exact.values["tissue_ontology_term_id"] == ("UBERON:0002048",)


def test_compiles_to_present_values_and_matches_joined_multi_terms():
    resolved = resolve_filter(CellFilter(disease=("COVID-19",)))
    present = ["PATO:0000461", "MONDO:0100096", "MONDO:0005002 || MONDO:0100096", "MONDO:0005002"]
    compiled = compile_filter(resolved, lambda column: present)
    assert compiled.columns["disease_ontology_term_id"] == ("MONDO:0005002 || MONDO:0100096", "MONDO:0100096")
    obs = pd.DataFrame({"disease_ontology_term_id": present, "is_primary_data": [True, True, True, False]})
    assert compiled.mask(obs).tolist() == [False, True, True, False]
    assert "is_primary_data == True" in (compiled.value_filter() or "")


def test_nothing_present_compiles_to_an_empty_but_valid_filter():
    compiled = compile_filter(
        resolve_filter(CellFilter(tissue=("liver",))), lambda column: ["UBERON:0002048"]
    )
    assert compiled.is_empty
    assert (compiled.value_filter() or "").startswith("soma_joinid < 0")


def test_unknown_and_na_match_verbatim():
    resolved = resolve_filter(CellFilter(sex=("unknown", "female")))
    assert set(resolved.values["sex_ontology_term_id"]) >= {"unknown", "PATO:0000383"}


def test_development_stage_names_resolve_in_the_organisms_ontology():
    from atlasprep.errors import AmbiguousTermError

    with pytest.raises(AmbiguousTermError):
        resolve_filter(CellFilter(development_stage=("fetal stage",)))
    human = resolve_filter(CellFilter(development_stage=("fetal stage",)), "homo_sapiens")
    mouse = resolve_filter(CellFilter(development_stage=("fetal stage",)), "mus_musculus")
    assert human.terms["development_stage"][0].ontology == "HsapDv"
    assert mouse.terms["development_stage"][0].ontology == "MmusDv"


@pytest.mark.parametrize(
    ("query", "term_id"),
    [
        ("late adult stage", "HsapDv:0000227"),  # a label UBERON:0007222 shares: refused as ambiguous
        ("prime adult stage", "HsapDv:0000226"),
        ("UBERON:0007222", "UBERON:0007222"),  # an UBERON stage by its ID still resolves
    ],
)
def test_a_stage_label_uberon_shares_is_the_organisms_own(query, term_id):
    human = resolve_filter(CellFilter(development_stage=(query,)), "homo_sapiens")
    assert human.terms["development_stage"][0].term_id == term_id
