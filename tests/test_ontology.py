"""Term resolution against the pinned ontology releases (offline: the package ships them)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasprep.errors import AmbiguousTermError, UnknownTermError, UsageError
from atlasprep.ontology import (
    ALIASES,
    DEFAULT_ONTOLOGIES,
    FIELD_ONTOLOGIES,
    ResolvedTerm,
    descendants,
    expand_terms,
    get_parser,
    resolve_term,
    suggest,
    term_label,
    tissue_general,
)
from atlasprep.ontology._index import index_of, normalize


@pytest.mark.parametrize(
    ("query", "ontologies", "term_id", "how"),
    [
        ("leukocyte", ["CL"], "CL:0000738", "label"),
        ("  Leukocyte ", ["CL"], "CL:0000738", "label"),
        ("White Blood Cell", ["CL"], "CL:0000738", "synonym"),
        ("immune cell", ["CL"], "CL:0000738", "alias"),
        ("Immune  Cells", ["CL"], "CL:0000738", "alias"),
        ("immune cell", None, "CL:0000738", "alias"),
        ("MAIT cells", ["CL"], "CL:0000940", "alias"),
        ("healthy", FIELD_ONTOLOGIES["disease"], "PATO:0000461", "alias"),
        ("cl:0000738", ["CL"], "CL:0000738", "id"),
        ("CL_0000738", ["CL"], "CL:0000738", "id"),  # the OBO PURL spelling
        ("T cells", ["CL"], "CL:0000084", "normalized"),
        ("CD14+ monocytes", ["CL"], "CL:0001054", "normalized"),
        ("PBMCs", ["CL"], "CL:2000001", "normalized"),  # "PBMC" is a CL synonym
        ("CD4-positive alpha-beta T cells", ["CL"], "CL:0000624", "normalized"),
        ("CD4-positive, alpha-beta T cell", ["CL"], "CL:0000624", "label"),
        ("Peyer's patch B cell", ["CL"], "CL:0002402", "label"),
        ("Peyer's patch", ["UBERON"], "UBERON:0001211", "label"),
        ("Peyers patch", ["UBERON"], "UBERON:0001211", "normalized"),
        ("Alzheimer's disease", FIELD_ONTOLOGIES["disease"], "MONDO:0004975", "synonym"),
        ("Alzheimer disease", FIELD_ONTOLOGIES["disease"], "MONDO:0004975", "label"),
        ("Fuchs' endothelial dystrophy", ["MONDO"], "MONDO:0005321", "label"),
        ("normal", FIELD_ONTOLOGIES["disease"], "PATO:0000461", "label"),
        ("10x 3' v3", ["EFO"], "EFO:0009922", "label"),
        ("snRNA-seq", ["EFO"], "EFO:0009809", "synonym"),
        ("lung", None, "UBERON:0002048", "label"),
        ("SALK_049497", ["EFO"], "EFO:0001326", "label"),  # looks like an ID, is a label
        ("Sudanic", ["HANCESTRO"], "AfPO:0000271", "label"),  # HANCESTRO ships AfPO terms
    ],
)
def test_resolves(query, ontologies, term_id, how):
    term = resolve_term(query, ontologies)
    assert (term.term_id, term.how, term.query) == (term_id, how, query)
    assert term.label == get_parser().get_term_label(term_id)
    assert term.n_descendants == len(get_parser().get_term_descendants(term_id))
    assert term.ontology in (ontologies or DEFAULT_ONTOLOGIES)


def test_labels_win_over_synonyms():
    # "substantia nigra dopaminergic neuron" is CL:4042025's label and CL:4072006's synonym
    index = index_of("CL")
    key = "substantia nigra dopaminergic neuron"
    assert index.labels[key] == ("CL:4042025",)
    assert "CL:4072006" in index.synonyms[key]
    assert resolve_term(key, ["CL"]).term_id == "CL:4042025"


def test_resolved_term_is_a_frozen_value_with_json():
    term = resolve_term("leukocyte", ["CL"])
    assert term == ResolvedTerm(
        query="leukocyte",
        term_id="CL:0000738",
        label="leukocyte",
        ontology="CL",
        how="label",
        n_descendants=term.n_descendants,
    )
    with pytest.raises(AttributeError):
        term.label = "x"  # type: ignore[misc]
    assert term.to_json() == {
        "query": "leukocyte",
        "term_id": "CL:0000738",
        "label": "leukocyte",
        "ontology": "CL",
        "how": "label",
        "n_descendants": term.n_descendants,
    }


def test_unknown_names_suggest_the_right_term():
    with pytest.raises(UnknownTermError) as info:
        resolve_term("leukocyt", ["CL"])
    assert info.value.suggestions[0] == "CL:0000738"
    assert "leukocyt" in str(info.value)
    assert "CL" in str(info.value)
    assert "did you mean: leukocyte (CL:0000738)" in str(info.value)
    assert isinstance(info.value, KeyError)  # callers may catch the builtin
    assert ("leukocyte", "CL:0000738") in suggest("leucocytes", ["CL"])
    assert suggest("brest cancer", ["MONDO"])[0] == ("breast cancer", "MONDO:0007254")
    assert suggest("lungg", ["UBERON"])[0] == ("lung", "UBERON:0002048")
    assert len(suggest("cell", ["CL"], n=3)) == 3
    assert suggest("xyzzy", ["UBERON"]) == ()


def test_suggestions_matched_at_once_are_the_ones_matched_one_by_one(monkeypatch):
    """prime_suggestions (rapidfuzz's cdist over many queries, on every core) gives each query
    the closest names process.extract gives it alone: the same suggestions, in the same order,
    over a small, a middle and a large pool (CL, UBERON, MONDO), ties included ("lung tumour 2",
    "ET1": many names score alike)."""
    from atlasprep.ontology import _fuzzy
    from atlasprep.ontology import resolve as resolve_module

    queries = ["leukocyt", "lung tumour 2", "4.6a-Treg", "ET1", "renal patient", "brest cancer",
               "cd4 t cell", "Endometrium", "blood", "xyzzy", "T cell", "CL:0000003"]  # fmt: skip
    for ontologies in (["CL"], ["UBERON"], ["MONDO", "PATO"]):
        monkeypatch.setattr(_fuzzy, "_PRIMED", {})
        alone = [suggest(q, ontologies, n=5) for q in queries]
        resolve_module.prime_suggestions(queries, ontologies)
        assert len(_fuzzy._PRIMED) >= len(queries) - 1  # (the CURIE is not matched)
        monkeypatch.setattr(_fuzzy.process, "extract", lambda *a, **k: pytest.fail("one by one"))
        assert [suggest(q, ontologies, n=5) for q in queries] == alone
        monkeypatch.undo()
    assert resolve_module.suggests("leukocyt", ["CL"])
    assert not resolve_module.suggests("leukocyte", ["CL"])  # a label: resolved, no suggestion
    assert not resolve_module.suggests("CL:0000084", ["CL"])


def test_deprecated_ids_name_their_replacement():
    assert get_parser().is_term_deprecated("CL:0000003")
    with pytest.raises(UnknownTermError, match=r"deprecated in CL .*use cell \(CL:0000000\) instead") as info:
        resolve_term("CL:0000003", ["CL"])
    assert info.value.suggestions == ("CL:0000000",)
    assert suggest("cl:0000003", ["CL"]) == (("cell", "CL:0000000"),)
    # a replacement outside the shipped ontologies is named but not suggested
    with pytest.raises(UnknownTermError, match="use CLO:0000019 instead") as info:
        resolve_term("CL:0000002", ["CL"])
    assert info.value.suggestions == ()
    # no replacement but "consider" terms: the live ones are offered, the obsolete one is not
    with pytest.raises(UnknownTermError, match=r"use cell \(CL:0000000\), cell in vitro") as info:
        resolve_term("CL:0000004", ["CL"])
    assert "CL:0000003" not in str(info.value)


def test_ids_from_other_ontologies_and_unknown_ids_are_refused():
    with pytest.raises(UnknownTermError, match="UBERON:0002048 is from UBERON, but only CL terms"):
        resolve_term("UBERON:0002048", FIELD_ONTOLOGIES["cell_type"])
    with pytest.raises(UnknownTermError, match="only MONDO/PATO terms"):
        resolve_term("CL:0000738", FIELD_ONTOLOGIES["disease"])
    with pytest.raises(UnknownTermError, match="is not a term of CL"):
        resolve_term("CL:9999999", ["CL"])
    with pytest.raises(UnknownTermError, match="no shipped ontology"):
        resolve_term("FOO:0000001", ["CL"])
    with pytest.raises(UnknownTermError, match="empty"):
        resolve_term("  ", ["CL"])
    with pytest.raises(UsageError, match="not an ontology"):
        resolve_term("lung", ["UBERONX"])
    assert resolve_term("lung", "uberon").term_id == "UBERON:0002048"  # a bare name, any case


def test_ambiguous_names_are_refused_with_every_candidate():
    # MONDO synonyms that several live terms share; the first such key in sort order
    index = index_of("MONDO")
    key, ids = next((k, v) for k, v in sorted(index.synonyms.items()) if len(v) > 1 and k not in index.labels)
    with pytest.raises(AmbiguousTermError) as info:
        resolve_term(key, ["MONDO"])
    assert set(info.value.candidates) == set(ids)
    for term_id in ids:
        assert term_id in str(info.value)
    # a pinned one: "lupus" names lupus erythematosus and systemic lupus erythematosus
    with pytest.raises(AmbiguousTermError, match="give the term ID") as info:
        resolve_term("lupus", FIELD_ONTOLOGIES["disease"])
    assert info.value.candidates == ("MONDO:0004670", "MONDO:0007915")
    assert "lupus erythematosus (MONDO:0004670)" in str(info.value)
    # two EFO terms share a label, differing only in case
    with pytest.raises(AmbiguousTermError) as info:
        resolve_term("nuc-seq", ["EFO"])
    assert info.value.candidates == ("EFO:0008835", "EFO:0009991")
    # normalizing may join names: "Bm2 B cells" is as close to "Bm2 B cell" as to "Bm2' B cell"
    with pytest.raises(AmbiguousTermError, match="normalized"):
        resolve_term("Bm2 B cells", ["CL"])
    assert resolve_term("Bm2' B cell", ["CL"]).how == "label"


def test_a_name_in_two_ontologies_asks_for_one():
    with pytest.raises(AmbiguousTermError, match="set ontologies") as info:
        resolve_term("extravillous trophoblast")
    assert set(info.value.candidates) == {"CL:0008036", "UBERON:0000426"}
    assert resolve_term("extravillous trophoblast", ["CL"]).term_id == "CL:0008036"
    # the development_stage field: human and mouse stages share their labels
    with pytest.raises(AmbiguousTermError) as info:
        resolve_term("fetal stage", FIELD_ONTOLOGIES["development_stage"])
    assert set(info.value.candidates) == {"HsapDv:0000037", "MmusDv:0000031"}


def test_aliases_never_shadow_the_ontology_and_point_to_live_terms():
    assert normalize("immune cell") in {normalize(k) for k in ALIASES["CL"]}
    assert ALIASES["CL"]["immune cell"] == ALIASES["CL"]["immune cells"] == "CL:0000738"
    parser = get_parser()
    for ontology, table in ALIASES.items():
        index = index_of(ontology)
        for name, term_id in table.items():
            key = normalize(name)
            assert key not in index.labels, f"{name!r} is a {ontology} label"
            assert key not in index.synonyms, f"{name!r} is a {ontology} synonym"
            assert parser.is_valid_term_id(term_id, ontology), term_id
            assert not parser.is_term_deprecated(term_id), term_id
            assert resolve_term(name, [ontology]).term_id == term_id


def test_descendants_and_expansion():
    immune = expand_terms(["CL:0000738"])
    assert {"CL:0000738", "CL:0000624", "CL:0000236"} <= set(immune)
    assert "CL:0000182" not in immune  # hepatocyte
    assert immune == tuple(sorted(immune))
    assert expand_terms(["UBERON:0002048", "CL:0000738", "CL:0000738"], exact=True) == (
        "CL:0000738",
        "UBERON:0002048",
    )
    assert set(expand_terms(["CL:0000738", "CL:0000236"])) == set(immune)  # deduplicated
    lung = descendants("UBERON:0002048")
    assert "UBERON:0008953" in lung  # lung lobe
    assert "UBERON:0002048" in lung
    assert lung == tuple(sorted(lung))
    strict = descendants("UBERON:0002048", include_self=False)
    assert strict == tuple(t for t in lung if t != "UBERON:0002048")
    assert expand_terms(["unknown"]) == ("unknown",)
    with pytest.raises(UnknownTermError):
        descendants("NOPE:1")


def test_term_label():
    assert term_label("CL:0000738") == "leukocyte"
    assert term_label("CL:0000003") == "obsolete native cell"
    with pytest.raises(UnknownTermError):
        term_label("NOPE:0000001")


def test_tissue_general_rollup_as_the_census_does():
    rolled = tissue_general(["UBERON:0008953", "UBERON:0000451", "UBERON:0013756", "CL:0000066"])
    assert rolled == {
        "UBERON:0008953": "UBERON:0002048",  # lung lobe -> lung
        "UBERON:0000451": "UBERON:0000955",
        "UBERON:0013756": "UBERON:0000178",
        "CL:0000066": "CL:0000066",  # no rollup: kept, as the Census does
    }


_CL_LABELS = sorted(index_of("CL").display.values())


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(_CL_LABELS))
def test_every_cl_label_resolves_to_itself_unless_shared(label):
    ids = index_of("CL").labels[normalize(label)]
    if len(ids) > 1:
        with pytest.raises(AmbiguousTermError):
            resolve_term(label, ["CL"])
    else:
        term = resolve_term(label, ["CL"])
        assert (term.label, term.term_id, term.how) == (label, ids[0], "label")


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(_CL_LABELS), st.randoms(use_true_random=False))
def test_case_and_spacing_do_not_matter(label, rnd):
    messy = "  ".join("".join(c.upper() if rnd.random() < 0.5 else c for c in w) for w in label.split(" "))
    assert resolve_term(f" {messy}\t", ["CL"]).term_id == resolve_term(label, ["CL"]).term_id
