"""Small renderings more than one command prints."""

from __future__ import annotations

from collections.abc import Mapping

from rich.table import Table

__all__ = ["counts_table"]


def counts_table(column: str, counts: Mapping[str, int]) -> Table:
    """Cells per value of ``column``, as a table titled "by <column>"."""
    table = Table(title=f"by {column}", show_edge=False)
    table.add_column(column)
    table.add_column("cells", justify="right")
    for value, n in counts.items():
        table.add_row(value, f"{n:,}")
    return table
