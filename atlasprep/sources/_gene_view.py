"""A source showing only some of another source's genes (a spec's ``genes``, an inner join)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from atlasprep.sources.base import CellBatch, CellSource
from atlasprep.sources.filters import CompiledFilter, ResolvedFilter

__all__ = ["GeneView", "only_genes"]


def only_genes(source: CellSource, var_positions: np.ndarray | None) -> CellSource:
    """``source`` showing only the var columns at ``var_positions`` (all of them for None): a
    stage that reads through it (tokenize) sees the selected genes as the source's var."""
    return source if var_positions is None else GeneView(source, var_positions)


class GeneView:
    """A :class:`CellSource` whose var is some of another source's var columns."""

    def __init__(self, source: CellSource, var_positions: np.ndarray) -> None:
        self._source = source
        self._var_positions = np.asarray(var_positions, dtype=np.int64)
        self.info = source.info

    @property
    def obs_columns(self) -> tuple[str, ...]:
        return self._source.obs_columns

    def distinct_values(self, column: str) -> Sequence[str] | None:
        return self._source.distinct_values(column)

    def compile(self, resolved: ResolvedFilter) -> CompiledFilter:
        return self._source.compile(resolved)

    def select(self, compiled: CompiledFilter) -> np.ndarray:
        return self._source.select(compiled)

    def obs_values(self, positions: np.ndarray, columns: Sequence[str]) -> pd.DataFrame:
        return self._source.obs_values(positions, columns)

    def var(self) -> pd.DataFrame:
        return self._source.var().iloc[self._var_positions]

    def iter_batches(
        self,
        positions: np.ndarray,
        *,
        var_positions: np.ndarray | None,
        batch_size: int,
        obs_columns: Sequence[str] | None = None,
    ) -> Iterator[CellBatch]:
        inner = self._var_positions if var_positions is None else self._var_positions[var_positions]
        return self._source.iter_batches(
            positions, var_positions=inner, batch_size=batch_size, obs_columns=obs_columns
        )

    def presence(self, positions: np.ndarray | None = None) -> tuple[tuple[str, ...], np.ndarray]:
        inner = getattr(self._source, "presence", None)
        if inner is None:  # a source that does not say: every gene measured
            return (), np.ones((0, len(self._var_positions)), dtype=bool)
        files, matrix = inner(positions)
        return files, matrix[:, self._var_positions]

    def measured_cells(self, positions: np.ndarray) -> np.ndarray:
        inner = getattr(self._source, "measured_cells", None)
        if inner is None:  # every cell measured every gene
            return np.full(len(self._var_positions), len(positions), dtype=np.int64)
        return np.asarray(inner(positions))[self._var_positions]

    def citations(self, positions: np.ndarray) -> list[dict[str, object]]:
        cite = getattr(self._source, "citations", None)
        return [] if cite is None else list(cite(positions))

    def close(self) -> None:
        self._source.close()
