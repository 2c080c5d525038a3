"""Term resolutions kept between runs (atlasprep/ontology/kept.py): a query resolved (by ID,
label, synonym, alias or a normalized form) and a term's descendants are read back in a later
run without parsing any ontology, and equal what parsing gives; a refused query is refused
again, as it was, without matching again; a broken file is written again; a cache that cannot
be written changes no answer."""

from __future__ import annotations

import json

import pytest

from atlasprep.errors import AmbiguousTermError, UnknownTermError
from atlasprep.ontology import kept
from atlasprep.ontology import resolve as resolve_module
from atlasprep.ontology._parser import get_parser, release_ontologies
from atlasprep.ontology.resolve import descendants, expand_terms, resolve_term
from atlasprep.sources import CellFilter, resolve_filter

QUERIES = [
    ("UBERON:0001155", ("UBERON",)),  # an ID
    ("lung", ("UBERON",)),  # a label
    ("immune cells", ("CL",)),  # a plural (normalized)
    ("T cell", None),  # default ontologies
    ("10x 3' v3", ("EFO",)),
    ("female", ("PATO",)),
]


def _new_run() -> None:
    """As a new process finds things: nothing in memory, the kept file on disk."""
    kept.flush()
    kept._TABLES.clear()
    descendants.cache_clear()
    release_ontologies()


def _answers() -> tuple[list[object], list[tuple[str, ...]], object]:
    terms = [resolve_term(q, o) for q, o in QUERIES]
    below = [descendants(t.term_id) for t in terms] + [descendants("CL:0000084", include_self=False)]
    flt = resolve_filter(CellFilter(tissue=("lung",), cell_type=("immune cell",), disease=("normal",)))
    return terms, below, flt


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLASPREP_CACHE", str(tmp_path / "cache"))
    kept._TABLES.clear()
    kept._PENDING.clear()
    descendants.cache_clear()
    yield tmp_path / "cache"
    kept._TABLES.clear()
    kept._PENDING.clear()
    descendants.cache_clear()


def _no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(name):  # type: ignore[no-untyped-def]
        raise AssertionError(f"{name} parsed although its resolutions are kept")

    monkeypatch.setattr(get_parser().cxg_schema, "ontology", refuse)


def test_a_kept_resolution_is_read_back_without_parsing_and_equals_the_parsed_one(fresh_cache, monkeypatch):
    parsed = _answers()
    _new_run()
    files = list(fresh_cache.glob("ontology-terms-*/*.json"))
    assert len(files) == 1
    with monkeypatch.context() as patched:
        _no_parsing(patched)
        assert _answers() == parsed
    assert expand_terms(["UBERON:0002048"]) == descendants("UBERON:0002048")


def test_a_refused_query_is_kept_and_refused_again_without_matching(fresh_cache, monkeypatch):
    """An unknown name's refusal (its message and suggestions) and an ambiguous name's (its
    candidates) come back in a later run without parsing the ontology or fuzzy matching; a kept
    refusal from another rapidfuzz version is matched again."""
    with pytest.raises(UnknownTermError) as first:
        resolve_term("lnug", ("UBERON",))
    assert "UBERON:0002048" in first.value.suggestions  # "did you mean: lung"
    with pytest.raises(AmbiguousTermError) as ambiguous:
        resolve_term("adult", ("HsapDv", "MmusDv"))
    _new_run()
    assert all("lnug" not in key for key in kept._read(kept._path())["resolved"])
    with monkeypatch.context() as patched:
        _no_parsing(patched)
        patched.setattr(resolve_module, "suggest", lambda *a, **k: pytest.fail("matched again"))
        with pytest.raises(UnknownTermError) as again:
            resolve_term("lnug", ("UBERON",))
        assert (str(again.value), again.value.suggestions) == (str(first.value), first.value.suggestions)
        with pytest.raises(AmbiguousTermError) as twice:
            resolve_term("adult", ("HsapDv", "MmusDv"))
        assert (str(twice.value), twice.value.candidates) == (
            str(ambiguous.value),
            ambiguous.value.candidates,
        )
    path = kept._path()
    assert path is not None
    table = json.loads(path.read_text())
    key = json.dumps(["lnug", ["UBERON"]])
    table["refused"][key][1] = "as kept by another rapidfuzz"
    table["refused"][key][3] = "0.0.1"
    path.write_text(json.dumps(table))
    kept._TABLES.clear()
    with pytest.raises(UnknownTermError) as rescored:
        resolve_term("lnug", ("UBERON",))
    assert str(rescored.value) == str(first.value)


def test_a_broken_kept_file_is_ignored_and_written_again(fresh_cache, monkeypatch):
    expected = resolve_term("lung", ("UBERON",))
    _new_run()
    path = kept._path()
    assert path is not None
    good = json.loads(path.read_text())
    key = next(iter(good["resolved"]))
    for broken in (
        "[1, 2]",
        '{"resolved": {}, "descendants": ',
        json.dumps({"resolved": {key: {**good["resolved"][key], "label": 7}}, "descendants": {}}),
        json.dumps({"resolved": {key: {"term_id": "UBERON:0002048"}}, "descendants": {}}),
        json.dumps({"resolved": {}, "descendants": {"UBERON:0002048 1": [1, 2]}}),
    ):
        path.write_text(broken)
        kept._TABLES.clear()
        descendants.cache_clear()
        assert resolve_term("lung", ("UBERON",)) == expected
        assert descendants("UBERON:0002048") == descendants.__wrapped__("UBERON:0002048")
        _new_run()
        assert kept._read(path)["resolved"][key] == good["resolved"][key]  # kept again, whole


def test_answers_come_without_a_writable_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("ATLASPREP_CACHE", str(blocker / "cache"))  # mkdir under a file: OSError
    kept._TABLES.clear()
    descendants.cache_clear()
    try:
        assert resolve_term("lung", ("UBERON",)).term_id == "UBERON:0002048"
        assert "UBERON:0002048" in descendants("UBERON:0002048")
        kept.flush()  # nothing to write, nothing raised
    finally:
        kept._TABLES.clear()
        kept._PENDING.clear()
        descendants.cache_clear()


def test_the_resolver_module_reads_the_kept_entries_first(fresh_cache, monkeypatch):
    """A kept entry is what resolve_term returns (so a run after the first parses nothing)."""
    resolve_term("lung", ("UBERON",))
    _new_run()
    path = kept._path()
    assert path is not None
    table = json.loads(path.read_text())
    key = json.dumps(["lung", ["UBERON"]])
    table["resolved"][key]["label"] = "lung, as kept"
    path.write_text(json.dumps(table))
    kept._TABLES.clear()
    assert resolve_term("lung", ("UBERON",)).label == "lung, as kept"
    assert resolve_module.resolve_term is resolve_term


def test_an_edited_matching_rule_starts_a_new_file(tmp_path):
    """The file's name carries a digest of the rules' source (resolve.py, _index.py, _fuzzy.py, aliases.py):
    a checkout whose aliases changed does not read the answers of the old ones."""
    from pathlib import Path

    package = Path(kept.__file__).parent
    for name in kept._RULES:
        (tmp_path / name).write_bytes((package / name).read_bytes())
    same = kept._rules_digest(tmp_path)
    assert same == kept._rules_digest(package)
    assert same in (kept._name() or "")
    aliases = tmp_path / "aliases.py"
    aliases.write_text(aliases.read_text() + "\n# one more alias\n")
    assert kept._rules_digest(tmp_path) != same
