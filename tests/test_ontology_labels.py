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


def _table_path(ontology):
    from atlasprep._cache import cache_dir
    from atlasprep.ontology._parser import SCHEMA_VERSION, get_parser

    release = get_parser().cxg_schema.supported_ontologies[ontology]["version"]
    return cache_dir() / f"ontology-labels-{SCHEMA_VERSION}" / f"{ontology}-{release}.json"


def test_every_label_of_a_kept_table_is_the_parsers():
    """Each ontology's kept table gives term_label's label for every term it ships, imported
    prefixes (HANCESTRO's AfPO terms) and deprecated terms included; a term it lacks, an
    ontology not shipped: none."""
    from atlasprep.ontology._parser import get_parser
    from atlasprep.ontology.labels import label_table

    label_table.cache_clear()
    parser = get_parser()
    for ontology in ("CL", "UBERON", "HANCESTRO", "PATO"):
        table = label_table(ontology)
        assert table is not None
        assert _table_path(ontology).is_file()
        terms = list(parser.cxg_schema.ontology(ontology))
        assert sorted(table) == sorted(terms)
        assert all(table[t] == term_label(t) for t in terms)
    assert any(t.startswith("AfPO:") for t in label_table("HANCESTRO"))
    assert label_table("FMA") is None


def test_a_kept_table_is_read_without_parsing_and_a_broken_one_is_made_again(monkeypatch):
    from atlasprep.ontology import labels as labels_module
    from atlasprep.ontology._parser import get_parser

    labels_module.label_table.cache_clear()
    expected = dict(labels_module.label_table("PATO"))  # made (or already kept)
    labels_module.label_table.cache_clear()
    schema = get_parser().cxg_schema

    def no_parsing(name):
        raise AssertionError(f"{name} parsed although its labels are kept")

    with monkeypatch.context() as patched:
        patched.setattr(schema, "ontology", no_parsing)
        assert labels_module.label_table("PATO") == expected
    for broken in ('{"PATO:0000383": 7}', "[1, 2]", '{"PATO:0000383": "fema'):
        _table_path("PATO").write_text(broken)
        labels_module.label_table.cache_clear()
        assert labels_module.label_table("PATO") == expected
        assert labels_module._read_table(_table_path("PATO")) == expected  # kept again, whole


def test_labels_come_without_a_writable_cache(monkeypatch, tmp_path):
    """A cache dir that cannot be made (or written) costs the parse, never the labels."""
    from atlasprep.ontology import labels as labels_module

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("ATLASPREP_CACHE", str(blocker / "cache"))  # mkdir under a file: OSError
    labels_module.label_table.cache_clear()
    assert labels_module.label_table("PATO")["PATO:0000383"] == term_label("PATO:0000383")
    labels_module.label_table.cache_clear()
