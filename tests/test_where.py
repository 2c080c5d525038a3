"""The ``where`` filter language: parsed, never evaluated, and one tree compiled two ways
(a SOMA value filter and a pandas obs mask) that select the same cells."""

from __future__ import annotations

import operator

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.sparse as sp
import tiledbsoma as soma
from conftest import assert_clean_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from atlasprep.cli import app
from atlasprep.errors import UsageError
from atlasprep.sources import AnnDataSource, CellFilter, compile_filter, open_census, resolve_filter
from atlasprep.sources.where import (
    And,
    Compare,
    Expr,
    Member,
    Not,
    Or,
    format_where,
    parse_where,
    soma_tree,
    to_value_filter,
    where_mask,
)

# -- the grammar -------------------------------------------------------------------------------

PARSED: list[tuple[str, Expr]] = [
    ("nnz > 200", Compare("nnz", ">", 200)),
    ("200 < nnz", Compare("nnz", ">", 200)),
    ("raw_sum >= -1.5e3", Compare("raw_sum", ">=", -1500.0)),
    ("x <= .5", Compare("x", "<=", 0.5)),
    ("is_primary_data == True", Compare("is_primary_data", "==", True)),
    ("is_primary_data != false", Compare("is_primary_data", "!=", False)),
    ('assay == "10x 3\' v3"', Compare("assay", "==", "10x 3' v3")),
    ("disease == 'Alzheimer\\'s disease'", Compare("disease", "==", "Alzheimer's disease")),
    ("d == 'tab\\there \\\\ \\x41\\u00e9\\U0001F600'", Compare("d", "==", "tab\there \\ Aé😀")),
    ("`only a` != 'z'", Compare("only a", "!=", "z")),
    ("attr(\"orig.ident\") == 'x'", Compare("orig.ident", "==", "x")),
    ("attr == val(val(2))", Compare("attr", "==", 2)),
    ("tissue in ['lung', \"blood\",]", Member("tissue", ("lung", "blood"))),
    ("tissue not in [val('lung')]", Member("tissue", ("lung",), negated=True)),
    ("not a == 1", Not(Compare("a", "==", 1))),
    ("not not a == 1", Not(Not(Compare("a", "==", 1)))),
    (
        "a == 1 or b == 2 and not c == 3",
        Or((Compare("a", "==", 1), And((Compare("b", "==", 2), Not(Compare("c", "==", 3)))))),
    ),
    (
        "(a == 1 | b == 2) & c < 3",
        And((Or((Compare("a", "==", 1), Compare("b", "==", 2))), Compare("c", "<", 3))),
    ),
]


@pytest.mark.parametrize(("text", "tree"), PARSED)
def test_parses_the_soma_grammar(text, tree):
    got = parse_where(text)
    assert got == tree
    assert repr(got) == repr(tree)  # same literal types too (True is not 1)
    assert parse_where(format_where(got)) == got


PUSHED = [
    ("not a == 1", "a != 1"),
    ("not a < 1", "a >= 1"),
    ("not a >= 1", "a < 1"),
    ("not a > 1", "a <= 1"),
    ("not a <= 1", "a > 1"),
    ("not a != 'x'", "a == 'x'"),
    ("not a in [1, 2]", "a not in [1, 2]"),
    ("not a not in ['x']", "a in ['x']"),
    ("not (a == 1 and b == 2)", "a != 1 or b != 2"),
    ("not (a == 1 or not b == 2)", "a != 1 and b == 2"),
    ("not (a == 1 or (b == 2 and c in [3]))", "a != 1 and (b != 2 or c not in [3])"),
    ("a in [-1, 2, -0.5]", "a == -1 or a == -0.5 or a in [2]"),
    ("not a in [-1, 2]", "a != -1 and a not in [2]"),
    ("a not in [-1] and b == 1", "a != -1 and b == 1"),
    ("`a b` == 1 and `if` == 2", "attr('a b') == 1 and attr('if') == 2"),
]


@pytest.mark.parametrize(("text", "value_filter"), PUSHED)
def test_not_is_pushed_down_for_soma(text, value_filter):
    assert to_value_filter(parse_where(text)) == value_filter


REFUSED = [  # (filter, the offending token as the message quotes it, its 1-based position)
    ("@pd.io.common.os.system('id > F') == 0", "'@'", 1),
    ("__import__('os').system('x')", "'__import__'", 1),
    ("obs.eval('x == 1')", "'.'", 4),
    ("lambda: 1", "'lambda'", 1),
    ("[x for x in y]", "'['", 1),
    ("f'{x}' == 1", "\"'{x}'\"", 2),
    ("1 if 1 else 2", "'if'", 3),
    ("a.b == 1", "'.'", 2),
    ("a == b", "'b'", 6),
    ("1 == 1", "'1'", 1),
    ("a = 1", "'='", 3),
    ("a == 1 2", "'2'", 8),
    ("a is None", "'is'", 3),
    ("a == None", "'None'", 6),
    ("a + 1 == 2", "'+'", 3),
    ("a < 1 < 2", "'<'", 7),
    ("a in []", "']'", 7),
    ("a in 'xy'", "\"'xy'\"", 6),
    ("a not == 1", "'=='", 7),
    ("(a == 1", "end of filter", 8),
    ("a == 1 and", "end of filter", 11),
    ("attr(a) == 1", "'a'", 6),
    ("a == 1; import os", "';'", 7),
    ("a == 'open", "unterminated '", 6),
    ("a == '\\q'", "bad escape", 7),
    ("a == '\\ud800'", "bad escape", 7),
    ("a == 1e999", "out of range", 6),
    ("`` == 1", "empty", 1),
    ("a == '\udcff'", "not valid text", 7),
    ("a == '\\0'", "bad escape", 7),
    ("(" * 65 + "a == 1" + ")" * 65, "nesting deeper than 64", 65),
    ("not " * 10_000 + "a == 1", "nesting deeper than 64", 257),
    ("a == " + "val(" * 100 + "1" + ")" * 100, "nesting deeper than 64", 262),
]


@pytest.mark.parametrize(("text", "token", "position"), REFUSED)
def test_anything_else_is_one_line_naming_token_and_position(text, token, position):
    with pytest.raises(UsageError) as info:
        parse_where(text)
    message = str(info.value)
    assert message.startswith("where: ")
    assert token in message
    assert f"at position {position} " in message
    assert "\n" not in message


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_an_empty_filter_is_refused(text):
    with pytest.raises(UsageError, match="empty"):
        CellFilter(where=text)


# -- round trips -----------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_literals = st.one_of(
    _text,
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
_columns = st.one_of(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True), _text.filter(bool))
_ops = st.sampled_from(["==", "!=", "<", ">", "<=", ">="])
_any_leaf = st.one_of(
    st.builds(Compare, _columns, _ops, _literals),
    st.builds(Member, _columns, st.lists(_literals, min_size=1, max_size=4).map(tuple), st.booleans()),
)


def _trees(leaves: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.builds(Not, children),
            st.builds(And, st.lists(children, min_size=2, max_size=3).map(tuple)),
            st.builds(Or, st.lists(children, min_size=2, max_size=3).map(tuple)),
        ),
        max_leaves=8,
    )


@settings(max_examples=300, deadline=None)
@given(_trees(_any_leaf))
def test_any_tree_round_trips_through_its_text(tree):
    text = format_where(tree)
    again = parse_where(text)
    assert again == tree
    assert repr(again) == repr(tree)
    assert parse_where(to_value_filter(tree)) == soma_tree(tree)
    assert not any(isinstance(e, Not) for e in _nodes(soma_tree(tree)))
    lists = [e.values for e in _nodes(soma_tree(tree)) if isinstance(e, Member)]
    assert not any(isinstance(v, int | float) and repr(v).startswith("-") for vs in lists for v in vs)


def _nodes(expr: Expr) -> list[Expr]:
    inner = (expr.operand,) if isinstance(expr, Not) else getattr(expr, "operands", ())
    return [expr, *(n for e in inner for n in _nodes(e))]


# -- the mask and SOMA agree, nulls included -------------------------------------------------

_NULLS_TABLE = pa.table(
    {
        "soma_joinid": pa.array(np.arange(12), type=pa.int64()),
        "s": pa.array(
            ["a", None, "b", "O'Brien", 'say "hi"', "a", "", None, "b", "zz", "back\\slash", "a"],
            pa.large_string(),
        ),
        "c": pa.array(["x", "y", None, "x", "Alzheimer's disease", "y", "x", None, "y", "x", "x", "y"])
        .dictionary_encode()
        .cast(pa.dictionary(pa.int8(), pa.large_string())),
        "f": pa.array([1.0, None, 2.5, 3.0, -1.0, 0.0, None, 7.25, 1.0, 2.0, 3.5, 4.0]),
        "g": pa.array([0.1, 0.2, 0.3, 1.0, 0.1, 2.0, 3.0, 0.1, 5.0, 6.0, 7.0, 0.2], pa.float32()),
        "i": pa.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], pa.int64()),
        "n": pa.array([1, None, 3, 1, None, 6, 7, 8, 1, None, 11, 3], pa.int64()),
        "b": pa.array([True, False, True, True, False, False, True, True, False, True, False, True]),
        "nb": pa.array([True, None, False, True, None, False, True, None, False, True, False, True]),
    }
)
_STRINGS = ["a", "b", "", "O'Brien", 'say "hi"', "zz", "back\\slash", "q"]


@pytest.fixture(scope="module")
def nulls_frame(tmp_path_factory):
    """A SOMA DataFrame with nullable strings, enumerations, numbers and bools, and the same
    table as the pandas frame an AnnData obs would be."""
    uri = str(tmp_path_factory.mktemp("soma") / "nulls")
    schema = pa.schema([pa.field(f.name, f.type, nullable=True) for f in _NULLS_TABLE.schema][1:])
    soma.DataFrame.create(uri, schema=schema, domain=[(0, 100)]).close()
    with soma.DataFrame.open(uri, "w") as df:
        df.write(_NULLS_TABLE)
    return uri, _NULLS_TABLE.to_pandas()


def _typed_leaves() -> st.SearchStrategy[Expr]:
    """Comparisons each column's type admits (in SOMA and in pandas alike)."""
    strings, ints = st.sampled_from(_STRINGS), st.integers(-2, 13)
    numbers = st.one_of(ints, st.sampled_from([0.1, 0.2, 2.5, 7.25, -1.0]))
    equality = st.sampled_from(["==", "!="])

    def member(column: str, values: st.SearchStrategy) -> st.SearchStrategy[Expr]:
        return st.builds(
            Member, st.just(column), st.lists(values, min_size=1, max_size=3).map(tuple), st.booleans()
        )

    return st.one_of(
        st.builds(Compare, st.just("s"), _ops, strings),
        member("s", strings),
        st.builds(Compare, st.just("c"), equality, st.sampled_from(["x", "y", "Alzheimer's disease", "w"])),
        member("c", st.sampled_from(["x", "y", "Alzheimer's disease"])),
        *(st.builds(Compare, st.just(col), _ops, numbers) for col in ("f", "g")),
        *(member(col, numbers) for col in ("f", "g")),
        *(st.builds(Compare, st.just(col), _ops, ints) for col in ("i", "n")),
        *(member(col, ints) for col in ("i", "n")),
        *(st.builds(Compare, st.just(col), equality, st.booleans()) for col in ("b", "nb")),
    )


_AS = {"s": str, "c": str, "f": float, "g": np.float32, "i": int, "n": float, "b": bool, "nb": bool}
_OPS = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}


def _kleene(expr: Expr, row: pd.Series) -> bool | None:
    """Row-at-a-time reference: SQL's three-valued logic (a missing value is unknown); values
    and literals both taken as the column's type (SOMA casts a literal to it)."""
    if isinstance(expr, Compare | Member):
        value = row[expr.column]
        if value is None or pd.isna(value):
            return None
        cast = _AS[expr.column]
        if isinstance(expr, Compare):
            return bool(_OPS[expr.op](cast(value), cast(expr.value)))
        return (cast(value) in [cast(v) for v in expr.values]) != expr.negated
    if isinstance(expr, Not):
        inner = _kleene(expr.operand, row)
        return None if inner is None else not inner
    parts = [_kleene(e, row) for e in expr.operands]
    decisive, other = (False, True) if isinstance(expr, And) else (True, False)
    if decisive in parts:
        return decisive
    return None if None in parts else other


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=_trees(_typed_leaves()))
def test_soma_the_mask_and_three_valued_logic_agree(nulls_frame, tree):
    uri, frame = nulls_frame
    mask = where_mask(tree, frame)
    with soma.DataFrame.open(uri) as df:
        got = df.read(column_names=["soma_joinid"], value_filter=to_value_filter(tree)).concat()
    assert np.array_equal(np.sort(got["soma_joinid"].to_numpy()), np.flatnonzero(mask)), to_value_filter(tree)
    want = [_kleene(tree, row) is True for _, row in frame.iterrows()]
    assert mask.tolist() == want
    assert not (mask & where_mask(Not(tree), frame)).any()  # never both, sometimes neither (missing)


SMALL_CENSUS_FILTERS = [
    "nnz > 1000",
    "not nnz > 1000",
    "nnz >= 1000 and nnz < 1500",
    "1000 <= nnz",
    "raw_sum > 3000.5 or raw_mean_nnz <= 2.4",
    "is_primary_data == True",
    "not is_primary_data == True",
    "is_primary_data != false",
    'assay == "10x 3\' v3"',
    "not assay == '10x 3\\' v3'",
    "tissue in ['lung', 'blood']",
    "tissue not in ['lung', 'blood']",
    "not tissue in ['lung']",
    "not (tissue == 'lung' or nnz > 1200)",
    "not (tissue == 'lung' and not nnz > 1200)",
    "cell_type == 'B cell' | cell_type == 'T cell' & nnz > 100",
    "attr('cell_type') == 'B cell'",
    "`donor_id` in [val('LUNG-N01')]",
    "observation_joinid < 'M'",
    "not observation_joinid >= 'M'",
    "nnz in [1464, 1325]",
    "nnz not in [1464]",
    "raw_sum in [3645.0, 3138]",
    "n_measured_vars == 21265 and soma_joinid < 700",
    'disease == "Alzheimer\'s disease"',
    "nnz > 1e3",
    "nnz > -5 and raw_sum >= +1.5e3",
    "raw_sum in [-1, 3645.0, -2.5e3]",
    "not nnz in [-1, 1464]",
    "is_primary_data == true and not (sex == 'female' | tissue_general != 'lung')",
]


@pytest.fixture(scope="module")
def census_obs(small_census, tmp_path_factory):
    """The small Census obs as a frame, and as the obs of an h5ad (cells in soma_joinid order)."""
    source = open_census(census_uri=str(small_census))
    try:
        frame = source._exp.obs.read().concat().to_pandas()
    finally:
        source.close()
    frame = frame.sort_values("soma_joinid").reset_index(drop=True)
    path = tmp_path_factory.mktemp("h5ad") / "census_obs.h5ad"
    obs = frame.set_axis(frame["soma_joinid"].astype(str).to_numpy(), axis=0)
    ad.AnnData(sp.csr_matrix((len(obs), 1), dtype=np.float32), obs=obs).write_h5ad(path)
    return frame, path


@pytest.mark.parametrize("where", SMALL_CENSUS_FILTERS)
def test_census_store_and_h5ad_select_the_same_cells(small_census, census_obs, where):
    frame, h5ad = census_obs
    flt = CellFilter(where=where, primary_only=False)
    soma_source = open_census(census_uri=str(small_census))
    try:
        compiled = soma_source.compile(resolve_filter(flt))
        from_soma = soma_source.select(compiled)
    finally:
        soma_source.close()
    file_source = AnnDataSource([h5ad])
    try:
        from_file = file_source.select(file_source.compile(resolve_filter(flt)))
    finally:
        file_source.close()
    want = frame["soma_joinid"].to_numpy()[where_mask(parse_where(where), frame)]
    assert np.array_equal(from_soma, want)
    assert np.array_equal(from_file, want)
    assert f"({to_value_filter(parse_where(where))})" in (compiled.value_filter() or "")


def test_a_filter_without_where_compiles_to_the_same_bytes():
    compiled = compile_filter(resolve_filter(CellFilter()), lambda _c: None)
    assert compiled.value_filter() == "is_primary_data == True"
    donors = compile_filter(
        resolve_filter(CellFilter(donor_id=("a'b",), primary_only=False)), lambda _c: None
    )
    assert donors.value_filter() == 'donor_id in ["a\'b"]'
    where = compile_filter(resolve_filter(CellFilter(where="not nnz < 5")), lambda _c: None)
    assert where.value_filter() == "is_primary_data == True and (nnz >= 5)"
    assert CellFilter(where="not nnz < 5").to_json()["where"] == "not nnz < 5"  # kept as given


# -- injections: refused everywhere, nothing runs ------------------------------------------

INJECTIONS = [
    "@pd.io.common.os.system('touch {pwned}') == 0",
    "@pd.io.common.os.system('id > {pwned}') == 0",
    "__import__('os').system('touch {pwned}')",
    "os.system('touch {pwned}') == 0",
    "obs.eval(\"@pd.io.common.os.system('touch {pwned}')\")",
    "lambda: __import__('os').system('touch {pwned}')",
    "[x for x in __import__('os').system('touch {pwned}')]",
    'f\'{__import__("os").system("touch {pwned}")}\' == 1',
    "1 if __import__('os').system('touch {pwned}') else 2",
    "nnz == @pd.io.common.os.system('touch {pwned}')",
    "nnz == 1 and exec('import os; os.system(\"touch {pwned}\")')",
    "eval(\"__import__('os').system('touch {pwned}')\") == 0",
    "attr(__import__('os').system('touch {pwned}')) == 1",
    "nnz == val(__import__('os').system('touch {pwned}'))",
    "nnz in __import__('os').listdir('{pwned}')",
    "nnz.__class__.__bases__ == 1",
    "cell_type.str.contains('B')",
    "nnz == tissue",
    "nnz == 1; import os; os.system('touch {pwned}')",
    "nnz == 1 `; touch {pwned}`",
    "'unterminated {pwned}",
    "",
    "nnz = 1",
    "nnz is not None",
    "nnz + 1 > 2",
    "not",
]


def _payload(template: str, tmp_path) -> str:  # type: ignore[no-untyped-def]
    return template.replace("{pwned}", str(tmp_path / "PWNED"))


def test_the_first_payload_is_live_under_pandas_eval(tmp_path):
    """The payloads are real: pandas.eval, as atlasprep used it, runs the first one."""
    pd.DataFrame({"nnz": [1]}).eval(_payload(INJECTIONS[0], tmp_path), engine="python")
    assert (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("template", INJECTIONS)
def test_injections_are_refused_by_the_python_api(template, tmp_path):
    with pytest.raises(UsageError, match=r"^where: "):
        CellFilter(where=_payload(template, tmp_path))
    assert not (tmp_path / "PWNED").exists()


@pytest.fixture(scope="module")
def tiny_h5ad(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.h5ad"
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(["B cell", "T cell", "B cell"]),
            "nnz": np.array([1, 2, 3]),
            "is_primary_data": [True, True, False],
        },
        index=["c0", "c1", "c2"],
    )
    var = pd.DataFrame(index=["ENSG00000141510", "ENSG00000012048"])
    ad.AnnData(sp.csr_matrix(np.ones((3, 2), dtype=np.float32)), obs=obs, var=var).write_h5ad(path)
    return path


def _commands(kind: str, where: str, tmp_path, small_census, h5ad) -> tuple[list[str], object]:  # type: ignore[no-untyped-def]
    if kind == "slice-h5ad":
        out = tmp_path / "o.h5ad"
        return ["slice", "--input", str(h5ad), "--where", where, "--out", str(out)], out
    if kind == "slice-census":
        out = tmp_path / "never"
        return ["slice", "--census-uri", str(small_census), "--where", where, "--dry-run"], out
    out = tmp_path / "d"
    return ["tokenize", "--input", str(h5ad), "--where", where, "--out", str(out)], out


COMMANDS = ["slice-h5ad", "slice-census", "tokenize"]


@pytest.mark.parametrize("kind", COMMANDS)
@pytest.mark.parametrize("template", INJECTIONS)
def test_injections_are_refused_by_the_cli(template, kind, tmp_path, small_census, tiny_h5ad):
    args, out = _commands(kind, _payload(template, tmp_path), tmp_path, small_census, tiny_h5ad)
    result = CliRunner().invoke(app, args)
    assert_clean_error(result, codes=(2,), contains="--where")
    assert not (tmp_path / "PWNED").exists()
    assert not out.exists()  # type: ignore[attr-defined]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# -- columns and types, checked against the source before any read -----------------------

COLUMN_AND_TYPE_ERRORS = [
    ("cell_typ == 'B cell'", "no obs column 'cell_typ'; did you mean 'cell_type'?"),
    ("`is primary` == True", "no obs column 'is primary'"),
    ("nnz == 'abc'", "'nnz'"),
    ("nnz in [1, '2']", "not the string '2'"),
    ("cell_type == 5", "holds strings"),
    ("cell_type in ['B cell', True]", "holds strings"),
    ("nnz == 2.5", "compare it with an integer, not 2.5"),
    ("nnz > 99999999999999999999", "out of their range"),
    ("is_primary_data in [True]", "is_primary_data == True"),
    ("is_primary_data == 'yes'", "holds True/False"),
    ("is_primary_data == 2", "holds True/False"),
]


@pytest.mark.parametrize("source", ["h5ad", "census"])
@pytest.mark.parametrize(("where", "message"), COLUMN_AND_TYPE_ERRORS)
def test_columns_and_types_are_checked_against_the_source(where, message, source, small_census, tiny_h5ad):
    src = ["--input", str(tiny_h5ad)] if source == "h5ad" else ["--census-uri", str(small_census)]
    result = CliRunner().invoke(app, ["slice", *src, "--where", where, "--dry-run"])
    line = assert_clean_error(result, codes=(2,), contains=message)
    assert "pybind" not in result.stderr, line
    assert "At:" not in result.stderr, line


def test_soma_enumerations_are_not_ordered_but_categoricals_are(small_census, tiny_h5ad):
    """TileDB cannot order an enumeration, so SOMA refuses < on one (in our words); an h5ad's
    Categorical is compared on its categories' values."""
    on_soma = CliRunner().invoke(
        app, ["slice", "--census-uri", str(small_census), "--where", "cell_type < 'C'", "--dry-run"]
    )
    assert_clean_error(on_soma, codes=(2,), contains="'cell_type' of ")
    assert "enumeration" in on_soma.stderr
    source = AnnDataSource([tiny_h5ad])
    try:
        flt = CellFilter(where="cell_type < 'C'", primary_only=False)
        assert source.select(source.compile(resolve_filter(flt))).tolist() == [0, 2]
    finally:
        source.close()


def test_an_unknown_column_is_refused_before_obs_is_read(tiny_h5ad):
    source = AnnDataSource([tiny_h5ad])
    try:
        with pytest.raises(UsageError, match=r"did you mean 'nnz'\? its columns: cell_type, nnz, is_primary"):
            source.compile(resolve_filter(CellFilter(where="nzz > 1")))
        assert source._obs._read == {}
    finally:
        source.close()


def test_a_column_asked_of_an_obs_without_columns_says_so(tmp_path):
    import anndata as ad

    adata = ad.AnnData(np.ones((3, 2), dtype=np.float32))
    adata.obs_names = ["a", "b", "c"]
    adata.write_h5ad(tmp_path / "bare.h5ad")
    source = AnnDataSource([tmp_path / "bare.h5ad"])
    try:
        with pytest.raises(UsageError, match=r"no obs column 'nnz'; it has no obs column at all$"):
            source.compile(resolve_filter(CellFilter(where="nnz > 1")))
    finally:
        source.close()


def test_a_soma_error_about_the_filter_is_a_usage_error(small_census, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise soma.SOMAError("Cannot apply an inequality operator\n\nAt:\n  /x/_query_condition.py(135)")

    source = open_census(census_uri=str(small_census))
    try:
        compiled = source.compile(resolve_filter(CellFilter(where="nnz > 5")))
        monkeypatch.setattr(soma.DataFrame, "read", refuse)
        with pytest.raises(UsageError) as info:
            source.select(compiled)
    finally:
        source.close()
    assert "Cannot apply an inequality operator" in str(info.value)
    assert "\n" not in str(info.value)
