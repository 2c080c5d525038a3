"""`get_anndata`: the selected cells as an in-memory AnnData, as the Census API gives them.

The same selection ``slice`` writes (filter, sampling, genes), read batch by batch and
assembled in memory: obs as the source has it (cell ids as obs names), raw counts in X (CSR,
float32), var indexed by feature ID, and the slice's provenance in ``uns["atlasprep"]``. The
whole result is in memory by design; above ``warn_above`` cells (default 1,000,000: about 8 GB of
counts at 2,000 genes a cell) a warning says to ``slice`` to a file and read it backed instead.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from atlasprep.sources import CellFilter, SourceSpec, open_source, select

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["WARN_ABOVE", "get_anndata"]

log = logging.getLogger("atlasprep.slice")

WARN_ABOVE = 1_000_000
_SPEC_FIELDS = frozenset(f.name for f in fields(SourceSpec))
_FILTER_FIELDS = frozenset(f.name for f in fields(CellFilter))


def get_anndata(
    spec: SourceSpec | None = None, *, warn_above: int = WARN_ABOVE, **keywords: Any
) -> ad.AnnData:
    """The cells ``spec`` selects as an AnnData in memory. Instead of a spec, keywords name it:
    source and sampling fields (``census="demo"``, ``max_cells=500``) and filter fields
    (``tissue="lung"``, ``cell_type=("T cell", "B cell")``, ``where=…``)::

        adata = atlasprep.get_anndata(census="demo", tissue="lung", cell_type="immune cell")
    """
    import anndata as ad

    from atlasprep.slice._obs import obs_types_of

    spec = _spec(spec, keywords)
    source = open_source(spec)
    try:
        selection = select(spec, source)
        if selection.n_cells > warn_above:
            log.warning(
                "%d cells into memory; for selections this large, atlasprep slice writes them to a "
                "file that anndata reads backed",
                selection.n_cells,
            )
        var = source.var()
        var = var if selection.var_positions is None else var.iloc[selection.var_positions]
        ids, obs, X = [], [], []
        for batch in source.iter_batches(
            selection.positions, var_positions=selection.var_positions, batch_size=spec.batch_size
        ):
            ids.append(batch.cell_ids.astype(str))
            obs.append(batch.obs)
            X.append(batch.X)
        frame = pa.concat_tables(obs).to_pandas() if obs else pd.DataFrame()
        if obs_types_of(source.info) == "used":  # as slice writes them (slice/_obs.py)
            for name in frame.columns:
                if isinstance(frame[name].dtype, pd.CategoricalDtype):
                    frame[name] = frame[name].cat.remove_unused_categories()
        frame.index = pd.Index([i for part in ids for i in part], dtype=str)
        matrix = sp.vstack(X, format="csr") if X else sp.csr_matrix((0, len(var)), dtype="float32")
        adata = ad.AnnData(X=matrix, obs=frame, var=var.drop(columns=["soma_joinid"], errors="ignore"))
        adata.uns["atlasprep"] = {
            "source": source.info.to_json(),
            "filter": selection.compiled.resolved.to_json(),
        }
        return adata
    finally:
        source.close()


def _spec(spec: SourceSpec | None, keywords: dict[str, Any]) -> SourceSpec:
    if spec is not None:
        if keywords:
            raise TypeError(f"give a SourceSpec or keywords, not both ({', '.join(keywords)})")
        return spec
    unknown = sorted(set(keywords) - _SPEC_FIELDS - _FILTER_FIELDS)
    if unknown:
        raise TypeError(f"unknown keyword(s) {', '.join(unknown)}: SourceSpec or CellFilter fields")
    flt = {k: v for k, v in keywords.items() if k in _FILTER_FIELDS}
    rest = {k: v for k, v in keywords.items() if k in _SPEC_FIELDS and k != "filter"}
    if "inputs" in rest and isinstance(rest["inputs"], str):
        rest["inputs"] = (rest["inputs"],)
    return SourceSpec(**rest, filter=CellFilter(**flt))
