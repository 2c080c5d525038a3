"""Rank value encoding equals Geneformer's algorithm, cell by cell, with its real dictionaries."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import demo_cells, shared_file

from atlasprep.tokenize import RankEncoder, load_json_dict


def _geneformer_reference(counts, gene_ids, token_dict, medians, n_counts, max_len, special, dense=False):
    """Geneformer's TranscriptomeTokenizer, step by step (no collapsing): the same scipy/numpy
    expression ``X / n_counts * 10_000 / medians`` on a sparse (or dense) X, so the values carry
    the same rounding as Geneformer's in this environment."""
    loc = np.array([i for i, g in enumerate(gene_ids) if g in token_dict])
    norm = np.array([medians[gene_ids[i]] for i in loc])
    tokens = np.array([token_dict[gene_ids[i]] for i in loc])
    X_view = counts[:, loc] if dense else sp.csr_matrix(counts)[:, loc]
    X_norm = sp.csr_matrix(X_view / n_counts[:, None] * 10_000 / norm)
    cells = []
    for i in range(X_norm.shape[0]):
        ranked = tokens[X_norm[i].indices][np.argsort(-X_norm[i].data)]
        if special:
            ranked = np.concatenate([[token_dict["<cls>"]], ranked[: max_len - 2], [token_dict["<eos>"]]])
        else:
            ranked = ranked[:max_len]
        cells.append(ranked.tolist())
    return cells


@pytest.fixture(scope="module")
def demo_counts(small_census):
    return demo_cells(small_census, 400)


@pytest.mark.parametrize(
    ("version", "max_len", "special"), [("gc104M", 4096, True), ("gc30M", 2048, False), ("gc104M", 64, True)]
)
def test_equals_geneformer_on_demo_cells(demo_counts, version, max_len, special):
    X, genes = demo_counts
    token_dict = load_json_dict(shared_file(f"geneformer/token_dictionary_{version}.json"))
    medians = load_json_dict(shared_file(f"geneformer/gene_median_dictionary_{version}.json"))
    encoder = RankEncoder.from_dictionaries(
        genes, token_dictionary=token_dict, gene_medians=medians, max_len=max_len, special_tokens=special
    )
    n_counts = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    got = encoder.encode(X, n_counts)
    want = _geneformer_reference(X, genes, token_dict, medians, n_counts, max_len, special)
    assert [got.cell(i).tolist() for i in range(X.shape[0])] == want
    assert got.input_ids.dtype == np.int32
    assert got.lengths.max() <= max_len


def _zeros_stored(demo_counts):  # type: ignore[no-untyped-def]
    X, genes = demo_counts
    X = sp.csr_matrix(X, copy=True)
    X.data[::7] = 0  # stored zeros in most cells
    X.data[X.indptr[3] : X.indptr[4]] = 0  # cell 3: stored zeros only, a total of 0
    token_dict = load_json_dict(shared_file("geneformer/token_dictionary_gc104M.json"))
    medians = load_json_dict(shared_file("geneformer/gene_median_dictionary_gc104M.json"))
    return X, genes, token_dict, medians


def test_stored_zeros_are_ranked_last_as_geneformer_ranks_them(demo_counts):
    """A sparse X's stored zeros are entries Geneformer keeps: value 0, ranked after the
    expressed genes in numpy's order, except in a cell whose total is 0, where they would be
    0 / 0: that cell has nothing to rank."""
    X, genes, token_dict, medians = _zeros_stored(demo_counts)
    encoder = RankEncoder.from_dictionaries(genes, token_dictionary=token_dict, gene_medians=medians)
    n_counts = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    got = encoder.encode(X, n_counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        want = _geneformer_reference(X, genes, token_dict, medians, n_counts, 4096, True)
    assert got.cell(3).tolist() == [2, 3]  # (Geneformer ranks its NaNs)
    zeros_ranked = 0
    for i in (i for i in range(X.shape[0]) if i != 3):
        mine = got.cell(i).tolist()
        assert mine == want[i]
        row = X[i]
        zero = [c for c, v in zip(row.indices, row.data, strict=True) if v == 0 and genes[c] in token_dict]
        zeros_ranked += len(zero)
        if zero and len(mine) < 4096:  # (not cut by max_len) the zeros come last, before <eos>
            assert set(mine[len(mine) - 1 - len(zero) : -1]) == {token_dict[genes[c]] for c in zero}
    assert zeros_ranked > 1000


def test_the_stable_order_ranks_no_stored_zero(demo_counts):
    """The stable order's tokens do not depend on how X is stored: a stored zero is no count."""
    X, genes, token_dict, medians = _zeros_stored(demo_counts)
    encoder = RankEncoder.from_dictionaries(
        genes, token_dictionary=token_dict, gene_medians=medians, tie_order="stable"
    )
    got = encoder.encode(X)
    pruned = X.copy()
    pruned.eliminate_zeros()
    assert pruned.nnz < X.nnz
    assert np.array_equal(got.input_ids, encoder.encode(pruned).input_ids)
    assert np.array_equal(got.input_ids, encoder.encode(X.toarray(), dense=True).input_ids)
    assert got.cell(3).tolist() == [2, 3]


def test_stored_zeros_of_a_gene_named_once_are_kept_through_the_gene_mapping():
    """Geneformer's ``sum_ensembl_ids`` selects the columns of genes named once (their stored
    zeros kept) and appends the summed ones as dense sums (a zero sum is not a value)."""
    token_dict = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3, "ENSG1": 10, "ENSG2": 11, "ENSG3": 12}
    medians = {"ENSG1": 1.0, "ENSG2": 1.0, "ENSG3": 1.0}
    mapping = {"A": "ENSG1", "A2": "ENSG1", "B": "ENSG2", "C": "ENSG3"}
    encoder = RankEncoder.from_dictionaries(
        ["A", "A2", "B", "C"], token_dictionary=token_dict, gene_medians=medians, gene_mapping=mapping
    )
    # cell 0: A stored 0, A2 stored 0 (ENSG1 sums to 0: not ranked), B stored 0, C = 4
    # cell 1: A = 2, B = 3, C stored 0
    X = sp.csr_matrix(
        (np.array([0, 0, 0, 4, 2, 3, 0], np.float32), np.array([0, 1, 2, 3, 0, 2, 3]), np.array([0, 4, 7])),
        shape=(2, 4),
    )
    got = encoder.encode(X)
    assert got.cell(0).tolist() == [2, 12, 11, 3]
    assert got.cell(1).tolist() == [2, 11, 10, 12, 3]


def test_ties_follow_numpys_order():
    rng = np.random.default_rng(0)
    genes = [f"ENSG{i:011d}" for i in range(60)]
    token_dict = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3, **{g: i + 4 for i, g in enumerate(genes)}}
    medians = {g: 1.0 if i % 2 else 2.0 for i, g in enumerate(genes)}  # many equal medians
    X = sp.csr_matrix(rng.integers(0, 3, (50, 60)).astype(np.float32))  # many equal counts
    encoder = RankEncoder.from_dictionaries(
        genes, token_dictionary=token_dict, gene_medians=medians, max_len=40
    )
    n_counts = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    got = encoder.encode(X, n_counts)
    want = _geneformer_reference(X, genes, token_dict, medians, n_counts, 40, True)
    assert [got.cell(i).tolist() for i in range(50)] == want


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("n_dtype", [np.float32, np.float64, np.int64])
def test_arithmetic_follows_storage_and_dtypes(demo_counts, dense, n_dtype):
    """Near-ties decide the order: the values must round exactly as Geneformer's do, which
    depends on dense vs sparse X (division vs multiplying by the reciprocal) and on the dtype
    of n_counts (float32 intermediates when X and n_counts are both float32)."""
    X, genes = demo_counts
    token_dict = load_json_dict(shared_file("geneformer/token_dictionary_gc104M.json"))
    medians = load_json_dict(shared_file("geneformer/gene_median_dictionary_gc104M.json"))
    encoder = RankEncoder.from_dictionaries(genes, token_dictionary=token_dict, gene_medians=medians)
    n_counts = np.asarray(X.sum(axis=1)).ravel().astype(n_dtype)
    got = encoder.encode(X, n_counts, x_dtype=np.dtype(np.float32), dense=dense)
    counts = X.toarray() if dense else X
    want = _geneformer_reference(counts, genes, token_dict, medians, n_counts, 4096, True, dense=dense)
    assert [got.cell(i).tolist() for i in range(X.shape[0])] == want


def test_rounding_matters_on_these_cells(demo_counts):
    """The test above can fail: with the other arithmetic some demo cells rank differently."""
    X, genes = demo_counts
    token_dict = load_json_dict(shared_file("geneformer/token_dictionary_gc104M.json"))
    medians = load_json_dict(shared_file("geneformer/gene_median_dictionary_gc104M.json"))
    encoder = RankEncoder.from_dictionaries(genes, token_dictionary=token_dict, gene_medians=medians)
    n_counts = np.asarray(X.sum(axis=1)).ravel()
    sparse = encoder.encode(X, n_counts, dense=False)
    dense = encoder.encode(X, n_counts, dense=True)
    assert not np.array_equal(sparse.input_ids, dense.input_ids)


def test_gene_mapping_maps_and_sums_duplicates():
    token_dict = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3, "ENSG1": 10, "ENSG2": 11}
    medians = {"ENSG1": 1.0, "ENSG2": 1.0}
    mapping = {"A": "ENSG1", "A-ALIAS": "ENSG1", "B": "ENSG2", "C": "ENSG9"}  # ENSG9 is not in the vocabulary
    encoder = RankEncoder.from_dictionaries(
        ["A", "A-ALIAS", "B", "C"], token_dictionary=token_dict, gene_medians=medians, gene_mapping=mapping
    )
    X = sp.csr_matrix(np.array([[1, 2, 2, 9], [0, 0, 5, 0]], dtype=np.float32))
    got = encoder.encode(X)
    # cell 0: ENSG1 = 1 + 2 = 3 beats ENSG2 = 2; "c" is dropped but counts in the cell total
    assert got.cell(0).tolist() == [2, 10, 11, 3]
    assert got.cell(1).tolist() == [2, 11, 3]


def test_collapsed_genes_go_last_as_geneformer_places_them():
    """Geneformer appends summed genes after the others: with equal values, that order is the
    input order numpy's sort sees, so it decides the tokens of tied genes."""
    token_dict = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3, "ENSG1": 10, "ENSG2": 11, "ENSG3": 12}
    medians = {"ENSG1": 1.0, "ENSG2": 1.0, "ENSG3": 1.0}
    mapping = {"A": "ENSG1", "A2": "ENSG1", "B": "ENSG2", "C": "ENSG3"}
    encoder = RankEncoder.from_dictionaries(
        ["A", "B", "A2", "C"], token_dictionary=token_dict, gene_medians=medians, gene_mapping=mapping
    )
    assert encoder.token_ids.tolist() == [11, 12, 10]  # ENSG2, ENSG3, then the summed ENSG1


def test_repeated_ids_alone_are_not_summed():
    """As Geneformer: when no two *different* IDs map to one gene, a repeated ID keeps its
    columns (each ranked on its own, with the same token)."""
    token_dict = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3, "ENSG1": 10, "ENSG2": 11}
    medians = {"ENSG1": 1.0, "ENSG2": 1.0}
    encoder = RankEncoder.from_dictionaries(
        ["ENSG1", "ENSG2", "ENSG1"], token_dictionary=token_dict, gene_medians=medians
    )
    assert encoder.collapse is None
    got = encoder.encode(sp.csr_matrix(np.array([[1, 3, 5]], dtype=np.float32)))
    assert got.cell(0).tolist() == [2, 10, 11, 10, 3]


def test_no_vocabulary_gene_is_an_error():
    from atlasprep.errors import InputFormatError

    with pytest.raises(InputFormatError, match="Ensembl"):
        RankEncoder.from_dictionaries(["TP53"], token_dictionary={"ENSG1": 4}, gene_medians={"ENSG1": 1.0})


def test_coverage_counts_the_genes_the_mapping_names(tmp_path, caplog):
    """Symbols tokenized through a gene mapping: the store's coverage, and a saved tokenizer's
    at inference, count the genes the mapping brings into the vocabulary (they said 0 of 4,
    100% of counts outside, and warned that no input gene was in the vocabulary)."""
    import json

    import anndata as ad
    import pandas as pd

    from atlasprep.shard import read_manifest
    from atlasprep.sources import CellFilter, SourceSpec
    from atlasprep.tokenize.api import TokenizeConfig, tokenize_cells
    from atlasprep.tokenize.tokenizer import Tokenizer

    symbols = ["CD3E", "cd19", "MS4A1", "NOT_MAPPED"]
    ens = ["ENSG00000198851", "ENSG00000177455", "ENSG00000156738"]
    X = sp.csr_matrix(np.array([[3, 0, 1, 2], [0, 4, 5, 1]], dtype=np.float32))
    adata = ad.AnnData(X, obs=pd.DataFrame(index=["c0", "c1"]), var=pd.DataFrame(index=symbols))
    adata.write_h5ad(tmp_path / "sym.h5ad")
    tokens = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3, **{e: 4 + i for i, e in enumerate(ens)}}
    for name, value in (("tokens", tokens), ("medians", dict.fromkeys(ens, 1.0))):
        (tmp_path / f"{name}.json").write_text(json.dumps(value))
    (tmp_path / "mapping.json").write_text(json.dumps({"CD3E": ens[0], "CD19": ens[1], "MS4A1": ens[2]}))
    spec = SourceSpec(inputs=(str(tmp_path / "sym.h5ad"),), filter=CellFilter(primary_only=False))
    config = TokenizeConfig(
        source=spec,
        out=tmp_path / "store",
        token_dictionary=tmp_path / "tokens.json",
        gene_medians=tmp_path / "medians.json",
        gene_mapping=tmp_path / "mapping.json",
        shuffle=False,
    )
    tokenize_cells(config)
    coverage = read_manifest(tmp_path / "store")["coverage"]
    assert coverage["n_genes"] == 4
    assert coverage["n_genes_in_vocab"] == 3  # cd19 upper-cased, as Geneformer matches it
    assert coverage["counts_outside_vocab_fraction"] == pytest.approx(3 / 16)
    with caplog.at_level("WARNING", logger="atlasprep"):
        batch = Tokenizer.from_store(tmp_path / "store")(adata)
    assert "is in the vocabulary" not in caplog.text
    assert np.asarray(batch["input_ids"])[0][:4].tolist() == [2, 4, 6, 3]
