"""Term resolution against the pinned ontology releases."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasprep.errors import AmbiguousTermError, UnknownTermError
from atlasprep.ontology import (
    ALIASES,
    descendants,
    expand_terms,
    get_parser,
    resolve_term,
    suggest,
    tissue_general,
)
from atlasprep.ontology._index import index_of, normalize


@pytest.mark.parametrize(
    ("query", "ontologies", "term_id", "how"),
    [
        ("leukocyte", ["CL"], "CL:0000738", "label"),
        ("White Blood Cell", ["CL"], "CL:0000738", "synonym"),
        ("immune cell", ["CL"], "CL:0000738", "alias"),
        ("immune  cells", ["CL"], "CL:0000738", "alias"),
        ("cl:0000738", ["CL"], "CL:0000738", "id"),
        ("T cells", ["CL"], "CL:0000084", "normalized"),
        ("CD14+ monocyte", ["CL"], "CL:0001054", "normalized"),
        ("CD4-positive, alpha-beta T cell", ["CL"], "CL:0000624", "label"),
        ("Peyer's patch", ["UBERON"], "UBERON:0001211", "label"),
        ("Alzheimer's disease", ["MONDO", "PATO"], "MONDO:0004975", "synonym"),
        ("Fuchs' endothelial dystrophy", ["MONDO"], "MONDO:0005321", "label"),
        ("normal", ["MONDO", "PATO"], "PATO:0000461", "label"),
        ("10x 3' v3", ["EFO"], "EFO:0009922", "label"),
    ],
)
def test_resolves(query, ontologies, term_id, how):
    term = resolve_term(query, ontologies)
    assert (term.term_id, term.how) == (term_id, how)
    assert term.label == get_parser().get_term_label(term_id)
    assert term.n_descendants == len(get_parser().get_term_descendants(term_id))


def test_unknown_names_suggest_the_right_term():
    with pytest.raises(UnknownTermError) as info:
        resolve_term("leukocyt", ["CL"])
    assert "CL:0000738" in info.value.suggestions
    assert "leukocyte (CL:0000738)" in str(info.value)
    assert ("leukocyte", "CL:0000738") in suggest("leucocytes", ["CL"])


def test_deprecated_id_names_its_replacement_and_wrong_ontology_is_refused():
    with pytest.raises(UnknownTermError, match=r"deprecated.*use CL:0000000"):
        resolve_term("CL:0000003", ["CL"])
    with pytest.raises(UnknownTermError, match="not from CL"):
        resolve_term("UBERON:0002048", ["CL"])
    with pytest.raises(UnknownTermError, match="does not exist"):
        resolve_term("CL:9999999", ["CL"])


def test_ambiguous_names_are_refused_with_every_candidate():
    # MONDO has synonyms that several live terms share ("CAD": three diseases)
    index = index_of("MONDO")
    key, ids = next((k, v) for k, v in sorted(index.synonyms.items()) if len(v) > 1 and k not in index.labels)
    with pytest.raises(AmbiguousTermError) as info:
        resolve_term(key, ["MONDO"])
    assert set(info.value.candidates) == set(ids)
    for term_id in ids:
        assert term_id in str(info.value)


def test_aliases_never_shadow_the_ontology_and_point_to_live_terms():
    parser = get_parser()
    for ontology, table in ALIASES.items():
        index = index_of(ontology)
        for name, term_id in table.items():
            assert normalize(name) not in index.labels, f"{name!r} is a {ontology} label"
            assert normalize(name) not in index.synonyms, f"{name!r} is a {ontology} synonym"
            assert parser.is_valid_term_id(term_id, ontology)
            assert not parser.is_term_deprecated(term_id)


def test_a_name_in_two_ontologies_asks_for_one():
    with pytest.raises(AmbiguousTermError, match="--ontology") as info:
        resolve_term("extravillous trophoblast")
    assert set(info.value.candidates) == {"CL:0008036", "UBERON:0000426"}
    assert resolve_term("extravillous trophoblast", ["CL"]).term_id == "CL:0008036"


def test_descendants_and_expansion():
    immune = expand_terms(["CL:0000738"])
    assert {"CL:0000738", "CL:0000624", "CL:0000236"} <= set(immune)
    assert "CL:0000182" not in immune
    assert expand_terms(["CL:0000738", "UBERON:0002048"], exact=True) == ("CL:0000738", "UBERON:0002048")
    assert "UBERON:0008953" in descendants("UBERON:0002048")
    assert descendants("UBERON:0002048")[0] == "UBERON:0002048"
    assert expand_terms(["unknown"]) == ("unknown",)


def test_tissue_general_rollup_as_the_census_does():
    rolled = tissue_general(["UBERON:0008953", "UBERON:0000451", "UBERON:0013756", "CL:0000066"])
    assert rolled == {
        "UBERON:0008953": "UBERON:0002048",
        "UBERON:0000451": "UBERON:0000955",
        "UBERON:0013756": "UBERON:0000178",
        "CL:0000066": "CL:0000066",  # no rollup: kept, as the Census does
    }


_CL_LABELS = sorted(index_of("CL").labels)


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(_CL_LABELS))
def test_every_cl_label_resolves_to_itself_unless_shared(key):
    ids = index_of("CL").labels[key]
    if len(ids) > 1:
        with pytest.raises(AmbiguousTermError):
            resolve_term(key, ["CL"])
    else:
        assert resolve_term(key, ["CL"]).term_id == ids[0]
