"""A filter against a source's obs columns: every column there, every literal of its type."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from atlasprep.errors import UsageError
from atlasprep.sources.where.tree import Compare, Expr, Member, Scalar, _leaves, _literal_text, columns_of

__all__ = ["ColumnType", "arrow_column_type", "check_columns", "check_types", "series_column_type"]


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
        columns = f"its columns: {listed}" if listed else "it has no obs column at all"
        raise UsageError(f"where: {source} has no obs column {column!r}; {hint}{columns}")


def check_types(expr: Expr, types: Mapping[str, ColumnType], *, source: str) -> None:
    """Refuse comparisons a column's values cannot take (a string with a number …)."""
    for leaf in _leaves(expr):
        t = types[leaf.column]
        where = f"where: obs column {leaf.column!r} of {source}"
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
