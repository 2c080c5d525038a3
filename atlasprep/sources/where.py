"""The ``where`` filter language: parsed into a tree of values, never evaluated.

A filter string may come from anyone (a notebook, a shared recipe), so nothing in it runs:
a small tokenizer and a recursive-descent parser accept the SOMA value-filter grammar and
nothing else, and the tree compiles to a SOMA ``value_filter`` string and to a boolean mask
over a pandas obs table::

    filter     := or_expr
    or_expr    := and_expr (("or" | "|") and_expr)*
    and_expr   := not_expr (("and" | "&") not_expr)*
    not_expr   := "not" not_expr | "(" or_expr ")" | comparison
    comparison := column OP literal | literal OP column          OP: == != < > <= >=
                | column ["not"] "in" "[" literal ("," literal)* [","] "]"
    column     := identifier | `any name` | attr("any name")
    literal    := 'string' | "string" | number | True | False | val(literal)

Missing values (nulls, NaN) match no comparison, and ``not`` is pushed down to the
comparisons (De Morgan), as tiledbsoma 2.3 needs: ``not (a == 1)`` is ``a != 1``, so a
missing ``a`` matches neither; the mask and the SOMA query agree on every cell. The one
difference left is TileDB's own: a NaN *stored* in a SOMA float column matches ``!=`` and
``not in`` there (IEEE), while the mask treats NaN as missing (AnnData has no other way to
say it).
"""

from __future__ import annotations

import difflib
import functools
import json
import keyword
import math
import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa

from atlasprep.errors import UsageError

__all__ = [
    "And",
    "ColumnType",
    "Compare",
    "Expr",
    "Member",
    "Not",
    "Or",
    "arrow_column_type",
    "check_columns",
    "check_types",
    "columns_of",
    "format_where",
    "parse_where",
    "push_not",
    "series_column_type",
    "soma_quote",
    "soma_tree",
    "to_value_filter",
    "where_mask",
]

Scalar: TypeAlias = str | int | float | bool
CompareOp = Literal["==", "!=", "<", ">", "<=", ">="]


@dataclass(frozen=True, slots=True)
class Compare:
    """``column op value`` (a ``value op column`` comparison is stored flipped)."""

    column: str
    op: CompareOp
    value: Scalar


@dataclass(frozen=True, slots=True)
class Member:
    """``column in [values]``, or ``column not in [values]`` when ``negated``."""

    column: str
    values: tuple[Scalar, ...]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Expr, ...]


Expr: TypeAlias = Compare | Member | Not | And | Or

_T = TypeVar("_T")
_MAX_DEPTH = 64  # parentheses, nots and val()s inside each other
_HINT = "a filter is comparisons of obs columns with values, joined by and/or/not"
_FLIPPED: Mapping[str, CompareOp] = {"==": "==", "!=": "!=", "<": ">", ">": "<", "<=": ">=", ">=": "<="}
_NEGATED: Mapping[str, CompareOp] = {"==": "!=", "!=": "==", "<": ">=", ">=": "<", ">": "<=", "<=": ">"}
_BOOLS = {"True": True, "False": False, "true": True, "false": False}
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "r": "\r", "t": "\t"}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}  # all that repr() writes, so soma_quote round-trips
_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<number>[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op>==|!=|<=|>=|<|>)
      | (?P<punct>[()\[\],&|])""",
    re.VERBOSE,
)


# -- tokens ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Token:
    kind: Literal["number", "name", "op", "punct", "string", "backquoted", "end"]
    text: str  # as written (for messages)
    pos: int  # 0-based offset
    value: Scalar = ""  # a number's or a string's value, a backquoted name


def _fail(source: str, pos: int, what: str, hint: str = _HINT) -> UsageError:
    shown = source if len(source) <= 60 else source[:59] + "…"
    shown = shown.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate prints
    return UsageError(
        f"--where: {what} at position {pos + 1} in {json.dumps(shown, ensure_ascii=False)}; {hint}"
    )


def _unexpected(source: str, tok: _Token, hint: str = _HINT) -> UsageError:
    if tok.kind == "end":
        return _fail(source, tok.pos, "unexpected end of filter", hint)
    text = tok.text if len(tok.text) <= 30 else tok.text[:29] + "…"
    return _fail(source, tok.pos, f"unexpected {text!r}", hint)


def _tokens(source: str) -> Iterator[_Token]:
    pos = 0
    while pos < len(source):
        char = source[pos]
        if char in "'\"`":
            value, end = _scan_quoted(source, pos)
            yield _Token("backquoted" if char == "`" else "string", source[pos:end], pos, value)
            pos = end
            continue
        match = _TOKEN.match(source, pos)
        if match is None:
            hint = "compare with ==, not =" if char == "=" else _HINT
            raise _unexpected(source, _Token("punct", char, pos), hint)
        kind, text = match.lastgroup, match.group()
        if kind == "number":
            yield _Token("number", text, pos, _number(source, text, pos))
        elif kind != "space":
            yield _Token(kind, text, pos)  # type: ignore[arg-type]
        pos = match.end()
    yield _Token("end", "", len(source))


def _number(source: str, text: str, pos: int) -> int | float:
    if len(text) > 40:
        raise _fail(source, pos, f"number {text[:20]}… out of range")
    if not any(c in text for c in ".eE"):
        return int(text)
    value = float(text)
    if not math.isfinite(value):
        raise _fail(source, pos, f"number {text} out of range")
    return value


def _scan_quoted(source: str, start: int) -> tuple[str, int]:
    """A quoted string's value (backslash escapes as Python writes them) or a backquoted
    name (no escapes), and the offset after its closing quote."""
    quote, i = source[start], start + 1
    out: list[str] = []
    while i < len(source):
        char = source[i]
        if char == quote:
            if quote == "`" and not out:
                raise _fail(source, start, "empty `` name", "write a column name between the backquotes")
            return "".join(out), i + 1
        if "\ud800" <= char <= "\udfff":
            raise _fail(source, i, "a character that is not valid text", "the filter must be valid Unicode")
        if char == "\\" and quote != "`":
            escape = source[i + 1 : i + 2]
            if escape in _ESCAPES:
                out.append(_ESCAPES[escape])
                i += 2
                continue
            if escape in _HEX_ESCAPES:
                n = _HEX_ESCAPES[escape]
                digits = source[i + 2 : i + 2 + n]
                code = (
                    int(digits, 16)
                    if len(digits) == n and all(c in "0123456789abcdefABCDEF" for c in digits)
                    else -1
                )
                if 0 <= code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF:
                    out.append(chr(code))
                    i += 2 + n
                    continue
            raise _fail(
                source, i, f"bad escape {source[i : i + 2]!r}", r"escapes are \\ \' \" \n \r \t \xhh \uhhhh"
            )
        out.append(char)
        i += 1
    raise _fail(source, start, f"unterminated {quote}", f"close the {quote} that starts there")


# -- parsing ---------------------------------------------------------------------------------
class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.stream = _tokens(source)  # read as the parser goes: the first error in reading order
        self.tokens: list[_Token] = []
        self.i = 0
        self.depth = 0

    def peek(self, ahead: int = 0) -> _Token:
        while len(self.tokens) <= self.i + ahead and (not self.tokens or self.tokens[-1].kind != "end"):
            self.tokens.append(next(self.stream))
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def take(self) -> _Token:
        tok = self.peek()
        self.i += 1
        return tok

    def accept(self, *texts: str) -> bool:
        tok = self.peek()
        if tok.kind in ("name", "punct", "op") and tok.text in texts:
            self.i += 1
            return True
        return False

    def expect(self, text: str, hint: str = _HINT) -> None:
        if not self.accept(text):
            raise _unexpected(self.source, self.peek(), hint)

    def parse(self) -> Expr:
        if self.peek().kind == "end":
            raise UsageError(f"--where: the filter is empty; {_HINT}")
        expr = self.or_expr()
        if self.peek().kind != "end":
            raise _unexpected(self.source, self.peek())
        return expr

    def or_expr(self) -> Expr:
        items = [self.and_expr()]
        while self.accept("or", "|"):
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Expr:
        items = [self.not_expr()]
        while self.accept("and", "&"):
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_expr(self) -> Expr:
        start = self.peek()
        if self.accept("not"):
            return Not(self.deeper(start, self.not_expr))
        if self.accept("("):
            expr = self.deeper(start, self.or_expr)
            self.expect(")", "close the parenthesis")
            return expr
        return self.comparison()

    def deeper(self, tok: _Token, parse: Callable[[], _T]) -> _T:
        """``parse()`` one level down (a bound, so no filter exhausts Python's stack)."""
        if self.depth >= _MAX_DEPTH:
            raise _fail(self.source, tok.pos, f"nesting deeper than {_MAX_DEPTH}", "write a flatter filter")
        self.depth += 1
        try:
            return parse()
        finally:
            self.depth -= 1

    def comparison(self) -> Expr:
        left_tok = self.peek()
        left = self.operand()
        tok = self.peek()
        if tok.kind == "op":
            self.i += 1
            right_tok = self.peek()
            right = self.operand()
            if isinstance(left, _Column) and not isinstance(right, _Column):
                return Compare(left.name, tok.text, right)  # type: ignore[arg-type]
            if isinstance(right, _Column) and not isinstance(left, _Column):
                return Compare(right.name, _FLIPPED[tok.text], left)
            if isinstance(left, _Column):
                raise _unexpected(
                    self.source,
                    right_tok,
                    f"compare obs column {left.name!r} with a value (a quoted string, a number, True or "
                    "False), not with another column",
                )
            raise _unexpected(self.source, left_tok, "one side of a comparison must be an obs column")
        negated = self.accept("not")
        if negated or tok.text == "in":
            self.expect("in", "expected 'in' after 'not'")
            if not isinstance(left, _Column):
                raise _unexpected(self.source, left_tok, "'in' needs an obs column on its left")
            return Member(left.name, self.literal_list(), negated)
        raise _unexpected(self.source, tok, "expected a comparison (== != < > <= >=) or in / not in")

    def literal_list(self) -> tuple[Scalar, ...]:
        self.expect("[", "'in' takes a list of values: column in ['a', 'b']")
        values: list[Scalar] = []
        while not self.accept("]"):
            if values:
                self.expect(",", "separate the values of a list with commas")
                if self.accept("]"):
                    break
            values.append(self.literal())
        if not values:
            raise _unexpected(self.source, self.tokens[self.i - 1], "a list needs at least one value")
        return tuple(values)

    def operand(self) -> _Column | Scalar:
        tok = self.peek()
        if tok.kind == "backquoted":
            self.i += 1
            return _Column(str(tok.value))
        if tok.kind == "name" and keyword.iskeyword(tok.text) and tok.text not in _BOOLS:
            raise _unexpected(self.source, tok)
        if tok.kind == "name" and self.peek(1).text == "(":
            if tok.text == "val":
                return self.literal()
            if tok.text != "attr":
                raise _unexpected(
                    self.source, tok, "a filter calls no function but attr('name') and val(value)"
                )
            self.i += 2
            name = self.take()
            if name.kind != "string" or not name.value:
                raise _unexpected(self.source, name, "attr() takes one quoted column name: attr('a b')")
            self.expect(")", "attr() takes one quoted column name: attr('a b')")
            return _Column(str(name.value))
        if tok.kind == "name" and not _reserved(tok.text):
            self.i += 1
            return _Column(tok.text)
        return self.literal("expected an obs column or a value")

    def literal(self, hint: str = "expected a value: a quoted string, a number, True or False") -> Scalar:
        tok = self.take()
        if tok.kind in ("string", "number"):
            return tok.value
        if tok.kind == "name" and tok.text in _BOOLS:
            return _BOOLS[tok.text]
        if tok.kind == "name" and tok.text == "val" and self.accept("("):
            value = self.deeper(tok, self.literal)
            self.expect(")", "val() takes one value: val(1)")
            return value
        raise _unexpected(self.source, tok, hint)


@dataclass(frozen=True, slots=True)
class _Column:
    name: str


def _reserved(name: str) -> bool:
    return keyword.iskeyword(name) or name in _BOOLS


@functools.lru_cache(maxsize=256)
def parse_where(source: str) -> Expr:
    """The filter's tree; a :class:`UsageError` naming the offending token and its position
    for anything outside the grammar. Nothing in ``source`` is ever run."""
    return _Parser(source).parse()


# -- the tree, written out ---------------------------------------------------------------------
def soma_quote(value: str) -> str:
    """Quote a string for a SOMA value filter (Python literal syntax, so any text round-trips)."""
    return repr(str(value))


def _column_text(name: str) -> str:
    plain = name.isascii() and name.isidentifier() and not _reserved(name)
    return name if plain else f"attr({soma_quote(name)})"


def _literal_text(value: Scalar) -> str:
    if isinstance(value, str):
        return soma_quote(value)
    return repr(value)  # True/False, ints, floats (finite: the parser refuses others)


def format_where(expr: Expr) -> str:
    """The canonical text of a tree (``parse_where(format_where(e)) == e``)."""
    if isinstance(expr, Compare):
        return f"{_column_text(expr.column)} {expr.op} {_literal_text(expr.value)}"
    if isinstance(expr, Member):
        values = ", ".join(_literal_text(v) for v in expr.values)
        return f"{_column_text(expr.column)} {'not in' if expr.negated else 'in'} [{values}]"
    if isinstance(expr, Not):
        inner = format_where(expr.operand)
        return f"not ({inner})" if isinstance(expr.operand, And | Or) else f"not {inner}"
    joiner, nested = (" and ", (And, Or)) if isinstance(expr, And) else (" or ", (Or,))
    return joiner.join(
        f"({format_where(e)})" if isinstance(e, nested) else format_where(e) for e in expr.operands
    )


def push_not(expr: Expr, negate: bool = False) -> Expr:
    """The same filter without ``not`` (De Morgan; comparisons negated in place)."""
    if isinstance(expr, Compare):
        return Compare(expr.column, _NEGATED[expr.op], expr.value) if negate else expr
    if isinstance(expr, Member):
        return Member(expr.column, expr.values, expr.negated != negate)
    if isinstance(expr, Not):
        return push_not(expr.operand, not negate)
    operands = tuple(push_not(e, negate) for e in expr.operands)
    return (Or if isinstance(expr, And) == negate else And)(operands)


def soma_tree(expr: Expr) -> Expr:
    """The tree as tiledbsoma 2.3 takes it: no ``not`` (pushed down), and no negative number
    in a list (it reads ``-1`` there as an expression and refuses it): ``x in [-1, 2]`` is
    ``x == -1 or x in [2]``, ``x not in [-1, 2]`` is ``x != -1 and x not in [2]``."""
    expr = push_not(expr)
    if isinstance(expr, And | Or):
        return type(expr)(tuple(soma_tree(e) for e in expr.operands))
    if not isinstance(expr, Member) or not any(_negative(v) for v in expr.values):
        return expr
    op: CompareOp = "!=" if expr.negated else "=="
    parts: list[Expr] = [Compare(expr.column, op, v) for v in expr.values if _negative(v)]
    rest = tuple(v for v in expr.values if not _negative(v))
    if rest:
        parts.append(Member(expr.column, rest, expr.negated))
    if len(parts) == 1:
        return parts[0]
    return And(tuple(parts)) if expr.negated else Or(tuple(parts))


def _negative(value: Scalar) -> bool:
    return not isinstance(value, str | bool) and _literal_text(value).startswith("-")


def to_value_filter(expr: Expr) -> str:
    """A SOMA ``value_filter``: the canonical text of :func:`soma_tree`."""
    return format_where(soma_tree(expr))


def _leaves(expr: Expr) -> Iterator[Compare | Member]:
    if isinstance(expr, Compare | Member):
        yield expr
    elif isinstance(expr, Not):
        yield from _leaves(expr.operand)
    else:
        for e in expr.operands:
            yield from _leaves(e)


def columns_of(expr: Expr) -> tuple[str, ...]:
    """The obs columns the filter names, in order of first use."""
    return tuple(dict.fromkeys(leaf.column for leaf in _leaves(expr)))


# -- checks against a source -----------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class ColumnType:
    """What a filter needs to know of an obs column: what its values are, and whether it is a
    SOMA enumeration (TileDB refuses < and > on one; a pandas Categorical is compared on its
    categories' values, so it has no such limit)."""

    kind: Literal["string", "bool", "int", "float"] | None  # None: nothing a filter compares
    dtype: np.dtype | None = None  # numbers: their storage (SOMA casts a literal to it)
    enumeration: bool = False
    described: str = ""


def check_columns(expr: Expr, available: Sequence[str], *, source: str) -> None:
    """Refuse a filter naming a column ``source`` does not have, suggesting the closest."""
    for column in columns_of(expr):
        if column in available:
            continue
        close = difflib.get_close_matches(column, list(available), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        listed = ", ".join(available[:40]) + (f" … ({len(available)} in all)" if len(available) > 40 else "")
        raise UsageError(f"--where: {source} has no obs column {column!r}; {hint}its columns: {listed}")


def check_types(expr: Expr, types: Mapping[str, ColumnType], *, source: str) -> None:
    """Refuse comparisons a column's values cannot take (a string with a number …)."""
    for leaf in _leaves(expr):
        t = types[leaf.column]
        where = f"--where: obs column {leaf.column!r} of {source}"
        if t.kind is None:
            raise UsageError(f"{where} holds {t.described}, which a filter cannot compare")
        if isinstance(leaf, Compare) and t.enumeration and leaf.op not in ("==", "!="):
            raise UsageError(
                f"{where} is a SOMA enumeration, which TileDB cannot order: "
                "compare it with == != in or not in"
            )
        if isinstance(leaf, Member) and t.kind == "bool":
            raise UsageError(f"{where} holds True/False: write {leaf.column} == True (or False)")
        for value in leaf.values if isinstance(leaf, Member) else (leaf.value,):
            _check_value(where, t, value)


def _check_value(where: str, t: ColumnType, value: Scalar) -> None:
    shown = _literal_text(value)
    if t.kind == "string":
        if not isinstance(value, str):
            raise UsageError(
                f"{where} holds strings: compare it with a quoted value such as '{value}', not {shown}"
            )
        return
    if isinstance(value, str):
        holds = "True/False" if t.kind == "bool" else "numbers"
        raise UsageError(
            f"{where} holds {holds}: compare it with {holds.replace('/', ' or ')}, not the string {shown}"
        )
    if t.kind == "bool" and value not in (0, 1):
        raise UsageError(f"{where} holds True/False: compare it with True or False, not {shown}")
    if t.kind == "int":
        assert t.dtype is not None
        if value != int(value):  # SOMA would cast 2.5 to 2 and answer for that
            raise UsageError(f"{where} holds integers: compare it with an integer, not {shown}")
        info = np.iinfo(t.dtype)
        if not info.min <= int(value) <= info.max:
            raise UsageError(f"{where} holds {t.dtype} integers: {shown} is out of their range")
    if t.kind == "float" and t.dtype is not None and abs(float(value)) > np.finfo(t.dtype).max:
        raise UsageError(f"{where} holds {t.dtype} numbers: {shown} is out of their range")


def arrow_column_type(dtype: pa.DataType) -> ColumnType:
    """The type of a SOMA obs column, from its Arrow schema."""
    enumeration = pa.types.is_dictionary(dtype)
    value_type = dtype.value_type if enumeration else dtype
    if pa.types.is_string(value_type) or pa.types.is_large_string(value_type):
        return ColumnType(kind="string", enumeration=enumeration)
    if pa.types.is_boolean(value_type):
        return ColumnType(kind="bool", dtype=np.dtype(bool), enumeration=enumeration)
    if pa.types.is_integer(value_type) or pa.types.is_floating(value_type):
        kind: Literal["int", "float"] = "int" if pa.types.is_integer(value_type) else "float"
        return ColumnType(kind=kind, dtype=np.dtype(value_type.to_pandas_dtype()), enumeration=enumeration)
    return ColumnType(kind=None, described=f"{value_type} values")


def series_column_type(series: pd.Series) -> ColumnType:
    """The type of a pandas obs column (of a Categorical, its categories' type)."""
    values = series.cat.categories if isinstance(series.dtype, pd.CategoricalDtype) else series
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return ColumnType(kind="bool", dtype=np.dtype(bool))
    if pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_float_dtype(dtype):
        numeric = np.dtype(getattr(dtype, "numpy_dtype", dtype))
        kind: Literal["int", "float"] = "int" if numeric.kind in "iu" else "float"
        return ColumnType(kind=kind, dtype=numeric)
    inferred = pd.api.types.infer_dtype(values, skipna=True)
    if inferred in ("string", "empty"):
        return ColumnType(kind="string")
    if inferred == "boolean":  # an object column of True/False/None
        return ColumnType(kind="bool", dtype=np.dtype(bool))
    return ColumnType(kind=None, described=f"{inferred} values ({dtype})")


# -- the mask --------------------------------------------------------------------------------
_OPS: Mapping[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}


def where_mask(expr: Expr, obs: pd.DataFrame, *, source: str = "obs") -> np.ndarray:
    """Which rows of ``obs`` the filter keeps, vectorized per column (a Categorical is
    compared on its categories, then mapped through its codes); missing values never match."""
    check_columns(expr, [str(c) for c in obs.columns], source=source)
    types = {c: series_column_type(obs[c]) for c in columns_of(expr)}
    check_types(expr, types, source=source)
    return _mask(push_not(expr), obs, types)


def _mask(expr: Expr, obs: pd.DataFrame, types: Mapping[str, ColumnType]) -> np.ndarray:
    if isinstance(expr, And | Or):
        parts = [_mask(e, obs, types) for e in expr.operands]
        return functools.reduce(np.logical_and if isinstance(expr, And) else np.logical_or, parts)
    assert not isinstance(expr, Not)  # pushed down
    t = types[expr.column]
    if isinstance(expr, Compare):
        value = _cast(expr.value, t)
        compare = _OPS[expr.op]
        return _hits(obs[expr.column], t, lambda v: np.asarray(compare(v, value), dtype=bool))
    wanted = [_cast(v, t) for v in expr.values]
    if expr.negated:  # not in: a present value outside the list (missing ones never match)
        return _hits(obs[expr.column], t, lambda v: ~pd.Series(v).isin(wanted).to_numpy(dtype=bool))
    return _hits(obs[expr.column], t, lambda v: pd.Series(v).isin(wanted).to_numpy(dtype=bool))


def _cast(value: Scalar, t: ColumnType) -> object:
    """The literal as SOMA casts it to the column's type (so a float32 column compares with
    float32(0.1), not with the double 0.1)."""
    if t.kind == "string" or t.dtype is None:
        return value
    if t.kind == "int":
        return int(value)
    return t.dtype.type(value)


def _hits(series: pd.Series, t: ColumnType, test: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    if isinstance(series.dtype, pd.CategoricalDtype):
        per_category = _hits(pd.Series(series.cat.categories), t, test)
        return np.append(per_category, False)[series.cat.codes.to_numpy()]  # code -1: missing
    present = series.notna().to_numpy(dtype=bool)
    out = np.zeros(len(series), dtype=bool)
    dtype = object if t.kind == "string" else t.dtype
    out[present] = test(series[present].to_numpy(dtype=dtype))
    return out
