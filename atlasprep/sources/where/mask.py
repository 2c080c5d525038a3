"""The tree as a boolean mask over a pandas obs table, vectorized per column."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from atlasprep.sources.where.checks import ColumnType, check_columns, check_types, series_column_type
from atlasprep.sources.where.tree import And, Compare, Expr, Not, Or, Scalar, columns_of, push_not

__all__ = ["where_mask"]

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
