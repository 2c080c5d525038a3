"""atlasprep's rank tokens against Geneformer's own TranscriptomeTokenizer, when it is at hand.

Geneformer is not on the package index, so this runs only where ``geneformer`` is importable or
``ATLASPREP_GENEFORMER_SRC`` names a directory holding its ``tokenizer.py`` (a source checkout's
``geneformer/``); it also needs loompy. Elsewhere it is skipped.
"""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import json
import os
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import demo_cells, shared_file, source_module

from atlasprep.shard.store import read_manifest, read_shard
from atlasprep.sources import CellFilter, SourceSpec
from atlasprep.tokenize.api import TokenizeConfig, tokenize_cells


def _tokenizer_module():  # type: ignore[no-untyped-def]
    src = os.environ.get("ATLASPREP_GENEFORMER_SRC")
    pytest.importorskip("loompy")
    if not src:
        try:
            return importlib.import_module("geneformer.tokenizer")
        except ImportError:
            pytest.skip("Geneformer is not importable and ATLASPREP_GENEFORMER_SRC is not set")
    names = ("ENSEMBL_MAPPING_FILE", "GENE_MEDIAN_FILE", "TOKEN_DICTIONARY_FILE")
    return source_module("geneformer", src, "tokenizer", **dict.fromkeys(names))


def _dictionaries(tmp_path: Path, version: str) -> dict[str, tuple[Path, Path]]:
    """Geneformer's dictionaries: each JSON from ../shared and the pickle its tokenizer reads."""
    files = {}
    for kind in ("token_dictionary", "gene_median_dictionary", "ensembl_mapping_dict"):
        path = shared_file(
            f"geneformer/{kind}_{version}.json" + (".gz" if kind.startswith("ensembl") else "")
        )
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as handle:
            files[kind] = (path, tmp_path / f"{kind}.pkl")
            pickle.dump(json.load(handle), files[kind][1].open("wb"))
    return files


def _geneformer_ids(gf, tmp_path: Path, files, *, max_len: int, special: bool, mapping: bool):  # type: ignore[no-untyped-def]
    """Geneformer's input_ids by cell_id for the h5ad files in ``tmp_path / "in"``."""
    from datasets import load_from_disk

    tokenizer = gf.TranscriptomeTokenizer(
        {"cell_id": "cell_id"},
        model_input_size=max_len,
        special_token=special,
        gene_median_file=files["gene_median_dictionary"][1],
        token_dictionary_file=files["token_dictionary"][1],
        gene_mapping_file=files["ensembl_mapping_dict"][1] if mapping else None,
    )
    tokenizer.tokenize_data(tmp_path / "in", tmp_path, "gf", file_format="h5ad")
    dataset = load_from_disk(str(tmp_path / "gf.dataset"))
    return dict(zip(dataset["cell_id"], dataset["input_ids"], strict=True))


def _write_input(path: Path, prefix: str, X, genes: list[str]) -> None:  # type: ignore[no-untyped-def]
    """An h5ad with what Geneformer's tokenizer reads: var ``ensembl_id``, obs ``n_counts``
    (float32 totals) and ``cell_id`` (the obs names, ``prefix`` and a number)."""
    import anndata as ad

    adata = ad.AnnData(X)
    adata.var_names = genes
    adata.var["ensembl_id"] = list(genes)
    adata.obs_names = [f"{prefix}{i}" for i in range(X.shape[0])]
    adata.obs["n_counts"] = np.asarray(X.sum(axis=1)).ravel().astype(np.float32)
    adata.obs["cell_id"] = list(adata.obs_names)
    adata.write_h5ad(path)


def _tokenize_inputs(  # type: ignore[no-untyped-def]
    tmp_path: Path, files, names: tuple[str, ...], *, mapping: bool, join: str | None = None
) -> dict[str, list[int]]:
    """atlasprep's input_ids per cell for ``tmp_path/in/<name>.h5ad`` joined as one source
    (``join``: how, where the files' genes differ), with the V2 dictionaries (and the Ensembl
    mapping with ``mapping``)."""
    tokenize_cells(
        TokenizeConfig(
            source=SourceSpec(
                inputs=tuple(str(tmp_path / "in" / f"{n}.h5ad") for n in names),
                filter=CellFilter(primary_only=False),
                join=join,
            ),
            out=tmp_path / "store",
            token_dictionary=files["token_dictionary"][0],
            gene_medians=files["gene_median_dictionary"][0],
            gene_mapping=files["ensembl_mapping_dict"][0] if mapping else None,
            obs_columns=(),
        )
    )
    return _store_ids(tmp_path / "store")


def _store_ids(store: Path) -> dict[str, list[int]]:
    table = pa.concat_tables(read_shard(store, s["path"]) for s in read_manifest(store)["shards"])
    return dict(zip(table["cell_id"].to_pylist(), table["input_ids"].to_pylist(), strict=True))


@pytest.mark.filterwarnings("ignore")  # Geneformer's own pandas/anndata deprecation warnings
@pytest.mark.parametrize(
    ("version", "mapping", "dense", "n_dtype", "drop"),
    [
        ("gc104M", False, False, "float32", True),
        ("gc104M", True, False, "float32", False),
        ("gc104M", False, True, "float64", False),
        ("gc30M", False, False, "float64", True),
    ],
)
def test_same_input_ids_as_geneformer(small_census, tmp_path, version, mapping, dense, n_dtype, drop):
    """Cells 5 and 17 have no counts: from a sparse X Geneformer leaves them out, as atlasprep
    does with drop_empty (by default it keeps them, special tokens only). From a dense X it
    divides their zeros by a zero total and ranks the NaNs, keeping every vocabulary gene in no
    meaningful order; atlasprep treats them as empty there too."""
    import anndata as ad

    gf = _tokenizer_module()
    X, genes = demo_cells(small_census, 600)
    X = X.tolil()
    X[[5, 17], :] = 0
    X = X.tocsr()
    X.eliminate_zeros()
    adata = ad.AnnData(X.toarray() if dense else X)
    adata.var_names = genes
    adata.var["ensembl_id"] = genes
    adata.obs_names = [f"c{i}" for i in range(X.shape[0])]
    adata.obs["n_counts"] = np.asarray(X.sum(axis=1)).ravel().astype(n_dtype)
    adata.obs["cell_id"] = list(adata.obs_names)
    (tmp_path / "in").mkdir()
    adata.write_h5ad(tmp_path / "in" / "cells.h5ad")
    files = _dictionaries(tmp_path, version)
    special = version == "gc104M"
    max_len = 4096 if special else 2048
    want = _geneformer_ids(gf, tmp_path, files, max_len=max_len, special=special, mapping=mapping)
    tokenize_cells(
        TokenizeConfig(
            source=SourceSpec(
                inputs=(str(tmp_path / "in" / "cells.h5ad"),), filter=CellFilter(primary_only=False)
            ),
            out=tmp_path / "store",
            token_dictionary=files["token_dictionary"][0],
            gene_medians=files["gene_median_dictionary"][0],
            gene_mapping=files["ensembl_mapping_dict"][0] if mapping else None,
            max_len=max_len,
            special_tokens=special,
            obs_columns=(),
            shuffle=False,
            drop_empty=drop,
        )
    )
    got = _store_ids(tmp_path / "store")
    if dense:
        assert len(want) == X.shape[0]
        want = {c: ids for c, ids in want.items() if c not in ("c5", "c17")}
    assert len(want) == X.shape[0] - 2
    assert {c: got[c] for c in want} == want
    assert set(got) - set(want) == (set() if drop else {"c5", "c17"})


@pytest.mark.filterwarnings("ignore")
def test_two_files_with_their_own_gene_orders_as_geneformer(small_census, tmp_path):
    """Two files, the second with its var reversed: Geneformer tokenizes each with its own
    var; atlasprep, joining them on one var, gives every cell the same input_ids."""

    gf = _tokenizer_module()
    X, genes = demo_cells(small_census, 400)
    (tmp_path / "in").mkdir()
    reverse = np.arange(len(genes))[::-1]
    for name, rows, order in (("a", slice(0, 200), np.arange(len(genes))), ("b", slice(200, 400), reverse)):
        _write_input(
            tmp_path / "in" / f"{name}.h5ad", name, X[rows][:, order].tocsr(), [genes[i] for i in order]
        )
    files = _dictionaries(tmp_path, "gc104M")
    want = _geneformer_ids(gf, tmp_path, files, max_len=4096, special=True, mapping=False)
    got = _tokenize_inputs(tmp_path, files, ("a", "b"), mapping=False)
    assert len(want) == 400
    assert got == want


@pytest.mark.filterwarnings("ignore")
def test_gene_collapse_decided_per_file_as_geneformer(small_census, tmp_path):
    """Geneformer maps and sums each file's genes on its own: a gene named twice in file b (its
    Ensembl ID and a symbol) is summed and moved after b's other genes, while file a, naming it
    once, keeps it in place, where it ties with other genes of the same median and count."""
    import scipy.sparse as sp

    gf = _tokenizer_module()
    files = _dictionaries(tmp_path, "gc104M")
    with gzip.open(files["ensembl_mapping_dict"][0], "rt") as handle:
        mapping = json.load(handle)
    medians = json.loads(files["gene_median_dictionary"][0].read_text())
    X, genes = demo_cells(small_census, 400)
    aliases = {v: k for k, v in mapping.items() if k != v}  # a symbol (or old ID) per gene
    shared = Counter(medians[g] for g in genes if g in medians)
    common = max(shared, key=shared.__getitem__)  # the median most of these genes share
    tied = [i for i, g in enumerate(genes) if medians.get(g) == common and g in aliases]
    gene = max(tied, key=lambda i: X[:, i].getnnz())  # the most often expressed of them
    alias = aliases[genes[gene]]
    (tmp_path / "in").mkdir()
    extra = sp.csr_matrix(np.ones((200, 1), dtype=np.float32))
    for name, rows, names in (("a", slice(0, 200), genes), ("b", slice(200, 400), [*genes, alias])):
        part = X[rows] if name == "a" else sp.hstack([X[rows], extra], format="csr")
        _write_input(tmp_path / "in" / f"{name}.h5ad", name, part, names)
    want = _geneformer_ids(gf, tmp_path, files, max_len=4096, special=True, mapping=True)
    # file b measures one gene more (the alias): every gene joined, a's cells without it
    got = _tokenize_inputs(tmp_path, files, ("a", "b"), mapping=True, join="outer")
    assert len(want) == 400
    assert got == want


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize(
    ("relative", "layer"),
    [
        ("scrna/wu2020_200_v0_11.h5ad", "X"),  # NCBI symbols, through the mapping
        ("citeseq/pbmc_10k_protein_v3.h5ad", "X"),  # symbols (X dense in the file)
        ("cellxgene/example_invalid_CL.h5ad", "raw"),  # Ensembl IDs and a spike-in, stored zeros
    ],
)
def test_shared_files_as_geneformer(tmp_path, relative, layer):
    """Real files' counts with the V2 dictionaries and the Ensembl mapping: the columns
    Geneformer requires added, and X sparse (Geneformer's summing of genes the mapping
    collapses takes a sparse X only: a dense one fails inside pandas)."""
    import anndata as ad
    import scipy.sparse as sp

    gf = _tokenizer_module()
    source = ad.read_h5ad(shared_file(relative))
    X = sp.csr_matrix(source.raw.X if layer == "raw" else source.X)
    adata = ad.AnnData(X.copy(), obs=source.obs[[]].copy())
    adata.var_names = list(source.raw.var_names if layer == "raw" else source.var_names)
    adata.var["ensembl_id"] = list(adata.var_names)
    adata.obs["n_counts"] = np.asarray(X.sum(axis=1)).ravel().astype(np.float32)
    adata.obs["cell_id"] = list(adata.obs_names)
    (tmp_path / "in").mkdir()
    adata.write_h5ad(tmp_path / "in" / "cells.h5ad")
    files = _dictionaries(tmp_path, "gc104M")
    want = _geneformer_ids(gf, tmp_path, files, max_len=4096, special=True, mapping=True)
    got = _tokenize_inputs(tmp_path, files, ("cells",), mapping=True)
    assert len(want) > 100
    assert {c: ids for c, ids in got.items() if c in want} == want
    assert all(len(ids) == 2 for c, ids in got.items() if c not in want)  # Geneformer drops empty cells


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("case", ["one file", "mapping sums a gene", "two files joined"])
def test_stored_zeros_as_geneformer(small_census, tmp_path, case):
    """A sparse X's stored zeros: Geneformer ranks them (value 0, after the expressed genes);
    where the mapping sums two IDs of a gene, it keeps those of the genes named once. Cells
    whose total is 0 are left out of the comparison: Geneformer ranks their 0 / 0s."""
    import scipy.sparse as sp

    gf = _tokenizer_module()
    files = _dictionaries(tmp_path, "gc104M")
    X, genes = demo_cells(small_census, 300)
    X = sp.csr_matrix(X, copy=True)
    X.data[::9] = 0  # stored zeros in most cells
    X.data[X.indptr[7] : X.indptr[8]] = 0  # cell 7: stored zeros only
    names = list(genes)
    if case == "mapping sums a gene":  # a gene's second column, under its lower-case ID
        tokens = json.loads(files["token_dictionary"][0].read_text())
        j = max((i for i, g in enumerate(genes) if g in tokens), key=lambda i: X[:, i].getnnz())
        X = sp.hstack([X, X[:, [j]]], format="csr")
        names.append(genes[j].lower())
    (tmp_path / "in").mkdir()
    parts = {"a": (slice(0, 150), np.arange(len(names))), "b": (slice(150, 300), np.arange(len(names))[::-1])}
    inputs = ("a", "b") if case == "two files joined" else ("c",)
    if case == "two files joined":  # the second file's var reversed
        for name, (rows, order) in parts.items():
            _write_input(
                tmp_path / "in" / f"{name}.h5ad", name, X[rows][:, order].tocsr(), [names[i] for i in order]
            )
    else:
        _write_input(tmp_path / "in" / "c.h5ad", "c", X, names)
    mapping = case == "mapping sums a gene"
    want = _geneformer_ids(gf, tmp_path, files, max_len=4096, special=True, mapping=mapping)
    got = _tokenize_inputs(tmp_path, files, inputs, mapping=mapping)
    totals = np.asarray(X.sum(axis=1)).ravel()
    prefixes = [p for p in inputs for _ in range(150)] if len(inputs) == 2 else ["c"] * 300
    numbers = [i % 150 for i in range(300)] if len(inputs) == 2 else list(range(300))
    without = {f"{p}{n}" for p, n, t in zip(prefixes, numbers, totals, strict=True) if t == 0}
    assert without  # (the case is in the data)
    assert sum(1 for c in want if c not in without) == 300 - len(without)
    assert {c: got[c] for c in want if c not in without} == {
        c: ids for c, ids in want.items() if c not in without
    }
    assert all(got[c] == [2, 3] for c in without)
