"""`align ccf`, files in and out: read a section (``.h5ad``, ``.zarr`` or ``.loom``) and write
the registered one atomically."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from atlasprep.align._output import stored_bytes, write_output
from atlasprep.errors import InputFormatError, SourceError, UsageError
from atlasprep.slice.writer import format_of

SPATIAL_KEY = "spatial"


def _read_loom(path: Path) -> ad.AnnData:
    """A loom file (rows = genes) as AnnData, with h5py: anndata's reader needs loompy."""
    with h5py.File(path, "r") as f:
        if "matrix" not in f:
            raise InputFormatError(f"{path} has no /matrix; is it a loom file?")
        matrix = f["matrix"]
        n_genes, n_cells = matrix.shape
        blocks = [sp.csr_matrix(matrix[:, i : i + 4096].T, dtype=np.float32) for i in range(0, n_cells, 4096)]
        X = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, n_genes), dtype=np.float32)
        obs: dict[str, np.ndarray] = {}
        obsm: dict[str, np.ndarray] = {}
        for name, dataset in f.get("col_attrs", {}).items():
            values = _decode(dataset[()])
            if values.ndim == 2 and values.shape[1] > 1:
                obsm[SPATIAL_KEY if "spatial" in name.lower() else name] = values.astype(np.float64)
            else:
                obs[name] = values.reshape(n_cells)
        genes = {name: _decode(d[()]).reshape(n_genes) for name, d in f.get("row_attrs", {}).items()}
    names = obs.pop("CellID", obs.pop("obs_names", np.arange(n_cells).astype(str)))
    var_names = genes.pop("Gene", genes.pop("var_names", np.arange(n_genes).astype(str)))
    obs_frame = pd.DataFrame(obs, index=ad.utils.make_index_unique(pd.Index(np.asarray(names).astype(str))))
    var = pd.DataFrame(genes, index=ad.utils.make_index_unique(pd.Index(np.asarray(var_names).astype(str))))
    return ad.AnnData(X=X, obs=obs_frame, var=var, obsm=obsm)


def _decode(values: np.ndarray) -> np.ndarray:
    return values.astype(str).astype(object) if values.dtype.kind == "S" else values


def read_spatial(path: Path | str) -> ad.AnnData:
    """Read a section: ``.h5ad``, ``.zarr`` or ``.loom`` (a 2-D ``*spatial*`` column attribute
    becomes ``obsm["spatial"]``)."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"spatial {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in {".h5ad", ".zarr", ".loom"}:
        raise UsageError(f"spatial {path}: expected an .h5ad, .zarr or .loom file")
    try:
        if suffix == ".loom":
            return _read_loom(path)
        return ad.read_zarr(path) if suffix == ".zarr" else ad.read_h5ad(path)
    except (OSError, KeyError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise SourceError(f"cannot read {path}: {reason}") from None


# -- writing it ---------------------------------------------------------------------------------


# -- file in, file out ----------------------------------------------------------------------


def write_section(adata: ad.AnnData, out: Path) -> None:
    def write(tmp: Path) -> None:
        if format_of(out) == "zarr":
            with ad.settings.override(zarr_write_format=3, auto_shard_zarr_v3=False):  # as slice writes
                adata.write_zarr(tmp)
        else:
            adata.write_h5ad(tmp)

    write_output(out, write, n_bytes=stored_bytes(adata))
