"""The ``where`` filter language: parsed into a tree of values, never evaluated.

A filter string may come from anyone (a notebook, a shared recipe), so nothing in it runs:
:mod:`.grammar` parses it into a :mod:`.tree`, which compiles to a SOMA ``value_filter``
(:mod:`.soma`) and to a boolean mask over a pandas obs table (:mod:`.mask`), after
:mod:`.checks` has held it against the source's columns. The grammar is in :mod:`.grammar`.
"""

from atlasprep.sources.where.checks import (
    ColumnType,
    arrow_column_type,
    check_columns,
    check_types,
    series_column_type,
)
from atlasprep.sources.where.grammar import parse_where
from atlasprep.sources.where.mask import where_mask
from atlasprep.sources.where.soma import soma_tree, to_value_filter
from atlasprep.sources.where.tree import (
    And,
    Compare,
    Expr,
    Member,
    Not,
    Or,
    columns_of,
    format_where,
    push_not,
    soma_quote,
)

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
