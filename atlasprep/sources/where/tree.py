"""The ``where`` tree: comparisons and memberships of obs columns, joined by and/or/not;
its canonical text, ``not`` pushed down, and the columns it names."""

from __future__ import annotations

import keyword
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

__all__ = [
    "And",
    "Compare",
    "CompareOp",
    "Expr",
    "Member",
    "Not",
    "Or",
    "Scalar",
    "columns_of",
    "format_where",
    "push_not",
    "soma_quote",
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

_FLIPPED: Mapping[str, CompareOp] = {"==": "==", "!=": "!=", "<": ">", ">": "<", "<=": ">=", ">=": "<="}
_NEGATED: Mapping[str, CompareOp] = {"==": "!=", "!=": "==", "<": ">=", ">=": "<", ">": "<=", "<=": ">"}
_BOOLS = {"True": True, "False": False, "true": True, "false": False}


def _reserved(name: str) -> bool:
    return keyword.iskeyword(name) or name in _BOOLS


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
