"""A store's term labels, looked up ahead on a thread: the same labels as one by one."""

from __future__ import annotations

from atlasprep.ontology import term_label
from atlasprep.ontology.labels import is_term_id, labels_ahead, labels_of


def test_labels_of_terms_as_term_label_gives_them_and_leaves_out_what_is_not_a_shipped_term():
    terms = ["CL:0000057", "UBERON:0002048", "unknown", "<unk>", "CL:9999999", "MONDO:0000001"]
    labels_ahead(terms[:2])  # half of them ahead, the rest when asked
    found = labels_of(iter(terms))  # (an iterator: read once)
    assert found == {t: term_label(t) for t in ("CL:0000057", "MONDO:0000001", "UBERON:0002048")}
    assert list(found) == sorted(found)
    assert found["UBERON:0002048"] == "lung"


def test_only_curies_are_term_ids():
    assert is_term_id("CL:0000057")
    assert is_term_id("HsapDv:0000087")
    assert not any(is_term_id(v) for v in ("unknown", "na", "<unk>", "<tissue:UBERON:0002048>"))
