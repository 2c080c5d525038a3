"""Readers for Cell Ranger outputs: a ``filtered_feature_bc_matrix`` directory, a tar archive of
one, or a feature-barcode ``.h5`` file.

* Directory (v3 layout): ``matrix.mtx.gz`` (features × barcodes, Matrix Market),
  ``features.tsv.gz`` (id, name, feature type[, genome]) and ``barcodes.tsv.gz``; the v2 layout
  (``genes.tsv``, no feature type column, every feature is "Gene Expression") and uncompressed
  files are read too. macOS metadata (``._*``, ``.DS_Store``) and any other file are ignored.
* Tar archive (``.tar.gz``, ``.tgz``, ``.tar``): the same three files, read straight from the
  archive (nothing is extracted, so member paths cannot escape anywhere). The archive must hold
  exactly one matrix directory.
* ``.h5``: the v3 ``/matrix`` group (CSC over barcodes, which is CSR cells × features) or a v2
  file with a single genome group.

Every reader returns all features of the file as one AnnData (cells × features, CSR float32
counts; var index = feature ID, ``var["feature_name"]``, ``var["feature_types"]``);
:func:`select_feature_type` then keeps the features of one modality: "Gene Expression" (RNA),
"Peaks" (ATAC) or "Antibody Capture" (protein).
"""

from __future__ import annotations

import gzip
import logging
import posixpath
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Literal

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

from atlasprep.errors import InputFormatError, SourceError

__all__ = [
    "FeatureType",
    "is_10x_dir",
    "is_10x_tar",
    "read_10x",
    "read_10x_h5",
    "read_10x_mtx",
    "read_10x_tar",
    "select_feature_type",
]

log = logging.getLogger("atlasprep.align")

FeatureType = Literal["Gene Expression", "Peaks", "Antibody Capture"]

_MATRIX = ("matrix.mtx.gz", "matrix.mtx")
_FEATURES = ("features.tsv.gz", "features.tsv", "genes.tsv.gz", "genes.tsv")
_BARCODES = ("barcodes.tsv.gz", "barcodes.tsv")
_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def is_10x_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in _MATRIX)


def is_10x_tar(path: Path) -> bool:
    return path.name.endswith(_TAR_SUFFIXES)


def read_10x(path: Path) -> ad.AnnData:
    """Any 10x layout: a matrix directory (or one holding ``filtered_feature_bc_matrix/``), a tar
    archive of one, or a feature-barcode ``.h5``."""
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory")
    if path.is_dir():
        if not is_10x_dir(path) and is_10x_dir(path / "filtered_feature_bc_matrix"):
            path = path / "filtered_feature_bc_matrix"
        return read_10x_mtx(path)
    if is_10x_tar(path):
        return read_10x_tar(path)
    if path.suffix == ".h5":
        return read_10x_h5(path)
    raise InputFormatError(
        f"{path}: not a 10x output; give a filtered_feature_bc_matrix directory, a .tar.gz of one or a .h5"
    )


def read_10x_mtx(directory: Path) -> ad.AnnData:
    names = {p.name for p in directory.iterdir() if p.is_file() and not _is_junk(p.name)}

    def open_member(name: str) -> IO[bytes]:
        return (directory / name).open("rb")

    return _read_mtx_parts(str(directory), names, open_member)


def read_10x_tar(path: Path) -> ad.AnnData:
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 -- closed by the `with` below; opening errors -> SourceError
    except (tarfile.TarError, OSError) as exc:
        raise SourceError(f"{path}: cannot open the archive ({exc})") from None
    with tar:
        try:
            listing = tar.getmembers()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise SourceError(f"{path}: the archive is damaged ({exc})") from None
        members = {m.name: m for m in listing if m.isfile() and not _is_junk(posixpath.basename(m.name))}
        dirs = sorted({posixpath.dirname(n) for n in members if posixpath.basename(n) in _MATRIX})
        if not dirs:
            raise InputFormatError(f"{path}: the archive holds no matrix.mtx(.gz); is it a 10x matrix?")
        if len(dirs) > 1:
            raise InputFormatError(
                f"{path}: the archive holds several matrices ({', '.join(d + '/' for d in dirs)}); "
                "extract it and pass one directory"
            )
        prefix = dirs[0]
        names = {posixpath.basename(n) for n in members if posixpath.dirname(n) == prefix}

        def open_member(name: str) -> IO[bytes]:
            handle = tar.extractfile(members[posixpath.join(prefix, name)])
            if handle is None:  # only for non-regular members, which were filtered out above
                raise InputFormatError(f"{path}: cannot read {name} from the archive")
            return handle

        return _read_mtx_parts(f"{path}:{prefix or '.'}", names, open_member)


def _is_junk(name: str) -> bool:
    return name.startswith("._") or name == ".DS_Store"


def _pick(names: set[str], choices: tuple[str, ...], where: str) -> str:
    for choice in choices:
        if choice in names:
            return choice
    raise InputFormatError(f"{where}: no {' or '.join(choices)}; is this a 10x filtered_feature_bc_matrix?")


def _read_mtx_parts(where: str, names: set[str], open_member: Callable[[str], IO[bytes]]) -> ad.AnnData:
    matrix_name = _pick(names, _MATRIX, where)
    features_name = _pick(names, _FEATURES, where)
    barcodes_name = _pick(names, _BARCODES, where)
    features = _read_tsv(open_member, features_name, where)
    barcodes = _read_tsv(open_member, barcodes_name, where)[0]
    with open_member(matrix_name) as raw:
        stream: IO[bytes] | gzip.GzipFile = gzip.GzipFile(fileobj=raw) if matrix_name.endswith(".gz") else raw
        try:
            matrix = scipy.io.mmread(stream)
        except (ValueError, OSError, EOFError) as exc:
            raise InputFormatError(f"{where}/{matrix_name}: not a Matrix Market file ({exc})") from None
    if matrix.shape != (len(features), len(barcodes)):
        raise InputFormatError(
            f"{where}: {matrix_name} is {matrix.shape[0]} × {matrix.shape[1]}, but there are "
            f"{len(features)} features and {len(barcodes)} barcodes; the files do not belong together"
        )
    if features.shape[1] < 2:
        raise InputFormatError(f"{where}/{features_name}: expected tab-separated id and name columns")
    types = features[2] if features.shape[1] > 2 else pd.Series("Gene Expression", index=features.index)
    genome = features[3] if features.shape[1] > 3 else None
    X = sp.csr_matrix(matrix.T, dtype=np.float32)
    return _assemble(X, barcodes.to_numpy(), features[0].to_numpy(), features[1].to_numpy(), types, genome)


def _read_tsv(open_member: Callable[[str], IO[bytes]], name: str, where: str) -> pd.DataFrame:
    with open_member(name) as handle:
        try:
            return pd.read_csv(
                handle,
                sep="\t",
                header=None,
                dtype=str,
                keep_default_na=False,
                compression="gzip" if name.endswith(".gz") else None,
            )
        except (ValueError, OSError, EOFError) as exc:  # pandas' parser errors are ValueErrors
            raise InputFormatError(f"{where}/{name}: cannot read it as a TSV ({exc})") from None


def read_10x_h5(path: Path) -> ad.AnnData:
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise SourceError(f"{path}: cannot open as HDF5 ({exc})") from None
    with handle:
        if "matrix" in handle:
            group = handle["matrix"]
            features = group["features"]
            ids = _strings(features["id"])
            names = _strings(features["name"])
            types = pd.Series(_strings(features["feature_type"]))
            genome = pd.Series(_strings(features["genome"])) if "genome" in features else None
        else:
            genomes = [k for k in handle if isinstance(handle[k], h5py.Group)]
            if len(genomes) != 1 or "genes" not in handle[genomes[0]]:
                raise InputFormatError(
                    f"{path}: not a 10x feature-barcode matrix (.h5 with /matrix or one genome group)"
                )
            group = handle[genomes[0]]
            ids = _strings(group["genes"])
            names = _strings(group["gene_names"])
            types = pd.Series("Gene Expression", index=range(len(ids)))
            genome = pd.Series(genomes[0], index=range(len(ids)))
        n_features, n_barcodes = (int(v) for v in group["shape"][:])
        # 10x stores features × barcodes as CSC, which is barcodes × features as CSR
        X = sp.csr_matrix(
            (group["data"][:].astype(np.float32), group["indices"][:], group["indptr"][:]),
            shape=(n_barcodes, n_features),
        )
        barcodes = _strings(group["barcodes"])
    return _assemble(X, barcodes, ids, names, types, genome)


def _strings(dataset: h5py.Dataset) -> np.ndarray:
    return dataset.asstr()[:].astype(object)


def _assemble(
    X: sp.csr_matrix,
    barcodes: np.ndarray,
    ids: np.ndarray,
    names: np.ndarray,
    types: pd.Series,
    genome: pd.Series | None,
) -> ad.AnnData:
    var = pd.DataFrame(
        {"feature_name": names, "feature_types": pd.Categorical(types.to_numpy())},
        index=pd.Index(ids, dtype=object, name=None).astype(str),
    )
    if genome is not None:
        var["genome"] = pd.Categorical(genome.to_numpy())
    obs = pd.DataFrame(index=pd.Index(barcodes, dtype=object).astype(str))
    X.sort_indices()
    return ad.AnnData(X=X, obs=obs, var=var)


def select_feature_type(adata: ad.AnnData, feature_type: FeatureType, *, where: str) -> ad.AnnData:
    """The features of one type (a copy); an error naming the types present when there are none."""
    types = adata.var["feature_types"].astype(str)
    keep = (types == feature_type).to_numpy()
    if not keep.any():
        found = ", ".join(sorted(pd.unique(types))) or "none"
        raise InputFormatError(f"{where}: no {feature_type!r} features (feature types here: {found})")
    log.info("%s: %d %r features of %d", where, int(keep.sum()), feature_type, adata.n_vars)
    return adata[:, keep].copy()
