"""Rank value encoding equals Geneformer's algorithm, cell by cell, with its real dictionaries."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import shared_file

from atlasprep.sources import CellFilter, open_census, resolve_filter
from atlasprep.tokenize import RankEncoder, load_json_dict


def _geneformer_reference(counts, gene_ids, token_dict, medians, n_counts, max_len, special):
    """Geneformer's TranscriptomeTokenizer, step by step on one dense matrix (no collapsing)."""
    loc = np.array([i for i, g in enumerate(gene_ids) if g in token_dict])
    norm = np.array([medians[gene_ids[i]] for i in loc])
    tokens = np.array([token_dict[gene_ids[i]] for i in loc])
    X_norm = sp.csr_matrix(counts[:, loc] / n_counts[:, None] * 10_000 / norm)
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
    source = open_census(census_uri=str(small_census))
    try:
        positions = source.select(source.compile(resolve_filter(CellFilter())))[:400]
        X = sp.vstack([b.X for b in source.iter_batches(positions, var_positions=None, batch_size=128)])
        genes = list(source.var().index)
    finally:
        source.close()
    return sp.csr_matrix(X), genes


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
    want = _geneformer_reference(X.toarray(), genes, token_dict, medians, n_counts, max_len, special)
    assert [got.cell(i).tolist() for i in range(X.shape[0])] == want
    assert got.input_ids.dtype == np.int32
    assert got.lengths.max() <= max_len


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
    want = _geneformer_reference(X.toarray(), genes, token_dict, medians, n_counts, 40, True)
    assert [got.cell(i).tolist() for i in range(50)] == want


def test_gene_mapping_maps_and_sums_duplicates():
    token_dict = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3, "ENSG1": 10, "ENSG2": 11}
    medians = {"ENSG1": 1.0, "ENSG2": 1.0}
    mapping = {"A": "ENSG1", "A-ALIAS": "ENSG1", "B": "ENSG2", "C": "ENSG9"}  # ENSG9 is not in the vocabulary
    encoder = RankEncoder.from_dictionaries(
        ["a", "A-alias", "b", "c"], token_dictionary=token_dict, gene_medians=medians, gene_mapping=mapping
    )
    X = sp.csr_matrix(np.array([[1, 2, 2, 9], [0, 0, 5, 0]], dtype=np.float32))
    got = encoder.encode(X)
    # cell 0: ENSG1 = 1 + 2 = 3 beats ENSG2 = 2; "c" is dropped but counts in the cell total
    assert got.cell(0).tolist() == [2, 10, 11, 3]
    assert got.cell(1).tolist() == [2, 11, 3]


def test_no_vocabulary_gene_is_an_error():
    from atlasprep.errors import InputFormatError

    with pytest.raises(InputFormatError, match="Ensembl"):
        RankEncoder.from_dictionaries(["TP53"], token_dictionary={"ENSG1": 4}, gene_medians={"ENSG1": 1.0})
