"""Reference facts atlasprep ships: the GENCODE-derived gene tables."""

from atlasprep.reference.genes import GENE_ANNOTATIONS, GeneTable, gene_table

__all__ = ["GENE_ANNOTATIONS", "GeneTable", "gene_table"]
