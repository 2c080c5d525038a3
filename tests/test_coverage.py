from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from atlasprep.tokenize.coverage import LowGeneMatchError, VocabCoverage


def test_counts_and_genes_outside_the_vocabulary_are_reported():
    tokens = np.array([5, -1, 7, -1], dtype=np.int32)
    cov = VocabCoverage.of_genes(tokens)
    for batch in (np.array([[1, 3, 0, 0]]), np.array([[0, 1, 4, 1]])):
        cov = cov.add(sp.csr_matrix(batch.astype(np.float32)), tokens)
    assert cov.gene_match == 0.5
    assert cov.count_match == pytest.approx(5 / 10)
    assert cov.to_json()["counts_outside_vocab_fraction"] == 0.5
    cov.require(0.5)
    with pytest.raises(LowGeneMatchError, match="symbols"):
        cov.require(0.9)
