"""Linked groups: cells that share a value in any of the split columns, closed transitively.

A donor sampled by two labs links the labs' datasets, and every donor of either; a split that
keeps each donor *and* each dataset on one side must keep each such connected component whole.
Values are nodes of a graph whose edges are the (first column, other column) pairs the cells
hold; :func:`scipy.sparse.csgraph.connected_components` finds the components. Only distinct
value pairs become edges, so the graph is as small as the metadata, and every step is a numpy
call over the cells (a few int64 per cell).

Components are numbered in the sorted order of their smallest first-column value. With one
column a component is a group, numbered as ``sorted(values)`` numbers them — the order the
single-column split has always used, so its assignment (and the store's bytes) do not change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix

__all__ = ["NA_LABEL", "Components", "linked_components", "sorted_codes"]

NA_LABEL = "<NA>"  # a missing value is a value of its own: its cells link to each other


def sorted_codes(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Each cell's value as an index into the sorted distinct values (Python's string order)."""
    codes, uniques = pd.factorize(values.astype("string").fillna(NA_LABEL))
    names = [str(u) for u in uniques]
    order = sorted(range(len(names)), key=names.__getitem__)
    rank = np.empty(len(names), dtype=np.int64)
    rank[order] = np.arange(len(names))
    return rank[codes], [names[i] for i in order]


@dataclass(frozen=True, slots=True, kw_only=True)
class Components:
    """The connected components of the cells over ``columns``."""

    columns: tuple[str, ...]
    cell_component: np.ndarray  # per cell: its component (int64)
    sizes: np.ndarray  # cells per component
    values: tuple[list[str], ...]  # per column: its sorted distinct values
    node_component: tuple[np.ndarray, ...]  # per column: the component of each of its values

    @property
    def n(self) -> int:
        return len(self.sizes)

    def members(self, component: int) -> dict[str, list[str]]:
        """Each column's values in ``component``, sorted."""
        return {
            column: [names[i] for i in np.flatnonzero(nodes == component)]
            for column, names, nodes in zip(self.columns, self.values, self.node_component, strict=True)
        }

    def name(self, component: int) -> list[str]:
        """How the manifest lists a component: its value (one column), or ``column=value`` each."""
        members = self.members(component)
        if len(self.columns) == 1:
            return members[self.columns[0]]
        return [f"{column}={value}" for column, values in members.items() for value in values]

    def describe(self, component: int, *, at_most: int = 3) -> str:
        """``donor_id in {A, B}, dataset_id in {X}`` (the first few values of each column)."""
        parts = []
        for column, values in self.members(component).items():
            shown = ", ".join(values[:at_most]) + (
                f", … ({len(values)} in all)" if len(values) > at_most else ""
            )
            parts.append(f"{column} in {{{shown}}}")
        return ", ".join(parts)


def linked_components(frame: pd.DataFrame, columns: Sequence[str]) -> Components:
    """Cells linked when they share a value in any of ``columns`` (one per cell in ``frame``)."""
    coded = [sorted_codes(frame[column]) for column in columns]
    sizes_of_columns = [len(names) for _, names in coded]
    offsets = np.concatenate([[0], np.cumsum(sizes_of_columns)])
    n_nodes = int(offsets[-1])
    first = coded[0][0]
    pairs = [np.unique(np.stack([first, codes + offsets[k]]), axis=1) for k, (codes, _) in enumerate(coded)]
    edges = np.concatenate(pairs, axis=1) if pairs else np.zeros((2, 0), dtype=np.int64)
    # imported here: scipy's csgraph brings scipy.sparse.linalg and LAPACK (0.1 s), which a
    # build without linked groups never needs
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix(
        (np.ones(edges.shape[1], dtype=np.int8), (edges[0], edges[1])), shape=(n_nodes, n_nodes)
    )
    _, labels = connected_components(graph, directed=False)
    # number components by their smallest first-column value (nodes 0.. are that column, sorted)
    key = np.full(labels.max(initial=-1) + 1, n_nodes, dtype=np.int64)
    np.minimum.at(key, labels[: sizes_of_columns[0]], np.arange(sizes_of_columns[0]))
    used = np.flatnonzero(key < n_nodes)  # every component holds a first-column value
    renumber = np.full(len(key), -1, dtype=np.int64)
    renumber[used[np.argsort(key[used], kind="stable")]] = np.arange(len(used))
    node_component = renumber[labels]
    cell_component = node_component[first]
    return Components(
        columns=tuple(columns),
        cell_component=cell_component,
        sizes=np.bincount(cell_component, minlength=len(used)).astype(np.int64),
        values=tuple(names for _, names in coded),
        node_component=tuple(node_component[offsets[k] : offsets[k + 1]] for k in range(len(columns))),
    )
