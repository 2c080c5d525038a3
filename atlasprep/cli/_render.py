"""Small renderings more than one command prints."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from atlasprep.cli._app import err_console

if TYPE_CHECKING:
    from atlasprep.sources import ResolvedFilter, SourceInfo

__all__ = ["counts_table", "report_resolution"]


def counts_table(column: str, counts: Mapping[str, int], *, labels: Mapping[str, str] | None = None) -> Table:
    """Cells per value of ``column``, as a table titled "by <column>"; a term ID's label beside
    it where ``labels`` (or, for a ``*_ontology_term_id`` column, the ontologies) name it."""
    named = dict(labels or {})
    if column.endswith("_ontology_term_id"):
        named.update({v: label for v in counts if v not in named and (label := _label(v))})
    table = Table(title=f"by {column}", show_edge=False)
    table.add_column(column)
    if named:
        table.add_column("label")
    table.add_column("cells", justify="right")
    for value, n in counts.items():
        table.add_row(escape(value), *([escape(named.get(value, ""))] if named else []), f"{n:,}")
    return table


def _label(term_id: str) -> str | None:
    from atlasprep.errors import UnknownTermError
    from atlasprep.ontology import term_label

    if ":" not in term_id:
        return None
    try:
        return term_label(term_id)
    except UnknownTermError:
        return None


def report_resolution(
    resolved: ResolvedFilter, source: SourceInfo | None = None, value_filter: str | None = None
) -> None:
    """What each name resolved to, on stderr, so nobody takes the wrong cells unknowingly (and
    the SOMA value filter, with -v)."""
    for name, terms in resolved.terms.items():
        for t in terms:
            via = f" via {t.how}" if t.how != "id" else ""
            err_console.print(
                f"[dim]{name}:[/] {escape(repr(t.query))} -> [bold]{escape(t.label)}[/] ({t.term_id}{via}; "
                f"{'exact' if resolved.filter.exact else f'+{t.n_descendants} descendants'})",
                highlight=False,
            )
    if source is not None and source.census_build and source.kind == "census":
        err_console.print(f"[dim]census:[/] build {source.census_build}")
    if value_filter is not None and logging.getLogger("atlasprep").isEnabledFor(logging.INFO):
        err_console.print(f"[dim]value filter:[/] {escape(value_filter)}")
