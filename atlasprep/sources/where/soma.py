"""The tree as tiledbsoma 2.3 takes it, as a SOMA ``value_filter`` string."""

from __future__ import annotations

from atlasprep.sources.where.tree import (
    And,
    Compare,
    CompareOp,
    Expr,
    Member,
    Or,
    Scalar,
    _literal_text,
    format_where,
    push_not,
)

__all__ = ["soma_tree", "to_value_filter"]


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
