"""Everyday names resolve to the term a biologist means, within the field's ontologies (the
organism's, for development stages); typos get the intended term as the first suggestion."""

from __future__ import annotations

import pytest

from atlasprep.ontology import resolve_term, suggest
from atlasprep.ontology.resolve import FIELD_ONTOLOGIES

HUMAN_STAGES = ("HsapDv", "UBERON")
MOUSE_STAGES = ("MmusDv", "UBERON")

EVERYDAY = [
    # cell types
    ("cell_type", "CD4+ T cell", "CL:0000624"),
    ("cell_type", "CD4+ T cells", "CL:0000624"),
    ("cell_type", "CD4 T cells", "CL:0000624"),
    ("cell_type", "CD4 T cell", "CL:0000624"),
    ("cell_type", "CD8+ T cells", "CL:0000625"),
    ("cell_type", "CD8 T cells", "CL:0000625"),
    ("cell_type", "Tregs", "CL:0000815"),
    ("cell_type", "Treg", "CL:0000815"),
    ("cell_type", "NK cells", "CL:0000623"),
    ("cell_type", "NK cell", "CL:0000623"),
    ("cell_type", "B cells", "CL:0000236"),
    ("cell_type", "T cells", "CL:0000084"),
    ("cell_type", "immune cells", "CL:0000738"),
    ("cell_type", "monocytes", "CL:0000576"),
    ("cell_type", "CD14+ monocytes", "CL:0001054"),
    ("cell_type", "macrophages", "CL:0000235"),
    ("cell_type", "dendritic cells", "CL:0000451"),
    ("cell_type", "PBMCs", "CL:2000001"),
    ("cell_type", "hepatocytes", "CL:0000182"),
    ("cell_type", "fibroblasts", "CL:0000057"),
    ("cell_type", "endothelial cells", "CL:0000115"),
    ("cell_type", "MAIT cells", "CL:0000940"),
    ("cell_type", "neurons", "CL:0000540"),
    ("cell_type", "plasma cells", "CL:0000786"),
    # tissues
    ("tissue", "gut", "UBERON:0001555"),
    ("tissue", "bone marrow", "UBERON:0002371"),
    ("tissue", "lung", "UBERON:0002048"),
    ("tissue", "blood", "UBERON:0000178"),
    ("tissue", "liver", "UBERON:0002107"),
    ("tissue", "kidney", "UBERON:0002113"),
    ("tissue", "colon", "UBERON:0001155"),
    ("tissue", "adipose", "UBERON:0001013"),
    ("tissue", "spleen", "UBERON:0002106"),
    ("tissue", "brain", "UBERON:0000955"),
    # assays
    ("assay", "10x v3", "EFO:0009922"),
    ("assay", "10x 3' v3", "EFO:0009922"),
    ("assay", "10x v2", "EFO:0009899"),
    ("assay", "10x 3' v2", "EFO:0009899"),
    ("assay", "10x 5' v1", "EFO:0011025"),
    ("assay", "Smart-seq2", "EFO:0008931"),
    ("assay", "Smartseq2", "EFO:0008931"),
    ("assay", "10x multiome", "EFO:0030059"),
    # stages, in the organism's own ontology
    (HUMAN_STAGES, "adult", "HsapDv:0000258"),
    (MOUSE_STAGES, "adult", "MmusDv:0000110"),
    # diseases
    ("disease", "healthy", "PATO:0000461"),
    ("disease", "normal", "PATO:0000461"),
    ("disease", "COVID", "MONDO:0100096"),
]


@pytest.mark.parametrize(("field", "name", "term_id"), EVERYDAY, ids=[f"{n}->{t}" for _, n, t in EVERYDAY])
def test_everyday_names_resolve_to_the_intended_term(field, name, term_id):
    ontologies = FIELD_ONTOLOGIES[field] if isinstance(field, str) else field
    assert resolve_term(name, ontologies).term_id == term_id


TYPOS = [
    ("lnug", ("UBERON",), "UBERON:0002048"),
    ("kidny", ("UBERON",), "UBERON:0002113"),
    ("brian", ("UBERON",), "UBERON:0000955"),
    ("livr", ("UBERON",), "UBERON:0002107"),
    ("leukocyt", None, "CL:0000738"),
    ("hepatocite", ("CL",), "CL:0000182"),
    ("macrophag", ("CL",), "CL:0000235"),
    ("CD4+ T cels", ("CL",), "CL:0000624"),
    ("T cel", ("CL",), "CL:0000084"),
    ("adlt", HUMAN_STAGES, "HsapDv:0000258"),
    ("10x 3 v3", ("EFO",), "EFO:0009922"),
]


@pytest.mark.parametrize(("typo", "ontologies", "term_id"), TYPOS, ids=[t for t, _, _ in TYPOS])
def test_a_typo_suggests_the_intended_term_first(typo, ontologies, term_id):
    assert suggest(typo, ontologies)[0][1] == term_id


def test_adult_across_both_organisms_is_ambiguous_not_a_guess():
    from atlasprep.errors import AmbiguousTermError

    with pytest.raises(
        AmbiguousTermError, match=r"HsapDv:0000258.*MmusDv:0000110|MmusDv:0000110.*HsapDv:0000258"
    ):
        resolve_term("adult", ("HsapDv", "MmusDv"))
