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

import functools
import json
import keyword
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, TypeVar

from atlasprep.errors import UsageError
from atlasprep.sources.where.tree import (
    _BOOLS,
    _FLIPPED,
    And,
    Compare,
    Expr,
    Member,
    Not,
    Or,
    Scalar,
    _reserved,
)

__all__ = ["parse_where"]

_T = TypeVar("_T")
_MAX_DEPTH = 64  # parentheses, nots and val()s inside each other
_HINT = "a filter is comparisons of obs columns with values, joined by and/or/not"
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
        f"where: {what} at position {pos + 1} in {json.dumps(shown, ensure_ascii=False)}; {hint}"
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
            raise UsageError(f"where: the filter is empty; {_HINT}")
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


@functools.lru_cache(maxsize=256)
def parse_where(source: str) -> Expr:
    """The filter's tree; a :class:`UsageError` naming the offending token and its position
    for anything outside the grammar. Nothing in ``source`` is ever run."""
    return _Parser(source).parse()
