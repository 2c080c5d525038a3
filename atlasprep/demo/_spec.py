"""What the demo atlas contains, declared as data.

Every ontology term is a real, current term of the ontology releases pinned by
:data:`atlasprep.ontology.SCHEMA_VERSION`; labels are never written here but looked up from
the ontology at build time (the comments only help the reader). ``tests/test_demo.py`` checks
that each ID is valid, not deprecated, and in the ontology its column requires.

The numbers (cell shares, sequencing depths, marker levels) are chosen to look like the
Census: 10x 3' v3 cells around 5,000 UMIs, v2 around 2,500, nuclei lower, Smart-seq2 read
counts far higher and denser. Content changes must bump ``DEMO_VERSION`` below.

This module holds the types, the genes and the cell types; the donors, collections and
datasets that sample them are in :mod:`atlasprep.demo._datasets`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CELL_TYPES",
    "DEMO_VERSION",
    "DISEASE_PROGRAMS",
    "FEMALE_ONLY_GENES",
    "HOUSEKEEPING",
    "LINEAGES",
    "MALE_ONLY_GENES",
    "MODEL_SEED",
    "AtlasSource",
    "CellTypeSpec",
    "CollectionSpec",
    "DatasetSpec",
    "DonorSpec",
    "IntegratedAtlasSpec",
]

# Bump when anything here, or how _expression turns it into counts, changes: the cached demo
# atlas is keyed by it and recorded in census_info/summary as its census_build_date.
DEMO_VERSION = "2026-11-24.1"

# The gene programs (background, per-cell-type and per-dataset effects) come from this seed,
# not from ``build_census(seed=...)``: a cell type means the same thing in every build, only the
# sampled cells and counts change with the build seed.
MODEL_SEED = 20_261_124


@dataclass(frozen=True, slots=True, kw_only=True)
class CellTypeSpec:
    term_id: str  # CL
    lineage: str  # key of LINEAGES: genes the type shares with its relatives
    markers: tuple[str, ...]  # HGNC symbols, strongest first


@dataclass(frozen=True, slots=True, kw_only=True)
class DonorSpec:
    donor_id: str
    sex: str  # PATO
    development_stage: str  # HsapDv
    ethnicity: str  # HANCESTRO, " || "-joined when several, or "unknown"
    disease: str  # PATO:0000461 or MONDO
    tissues: tuple[tuple[str, float], ...]  # (UBERON term, share of the donor's cells)
    weight: float = 1.0  # share of the dataset's cells, relative to its other donors


@dataclass(frozen=True, slots=True, kw_only=True)
class CollectionSpec:
    key: str
    name: str
    doi: str  # 10.5555 is Crossref's prefix for test DOIs: these resolve to nothing real
    doi_label: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetSpec:
    key: str
    title: str
    collection: str
    assay: str  # EFO
    suspension_type: Literal["cell", "nucleus"]
    median_counts: float  # median total counts per cell (UMIs; reads for Smart-seq2)
    counts_sigma: float  # log-normal spread of total counts between cells
    weight: float  # share of all primary cells, relative to the other datasets
    donors: tuple[DonorSpec, ...]
    composition: tuple[tuple[str, float], ...]  # (CL term, relative abundance)
    # "legacy": aligned to an older GENCODE that lacks the newest genes (see _expression)
    gene_annotation: Literal["current", "legacy"] = "current"


@dataclass(frozen=True, slots=True, kw_only=True)
class AtlasSource:
    dataset: str
    donor_id: str
    share: float  # relative share of the atlas's cells taken from this donor


@dataclass(frozen=True, slots=True, kw_only=True)
class IntegratedAtlasSpec:
    """A dataset that re-contains cells of other datasets (``is_primary_data`` False)."""

    key: str
    title: str
    collection: str
    duplicate_fraction: float  # atlas cells / cells of its source datasets
    sources: tuple[AtlasSource, ...]


# -- genes -------------------------------------------------------------------------------------

# Expressed in every cell at a fixed share of its counts (before the per-dataset effects).
HOUSEKEEPING: dict[str, float] = {
    "MALAT1": 0.020,
    "ACTB": 0.008,
    "TMSB4X": 0.006,
    "EEF1A1": 0.006,
    "B2M": 0.005,
    "GAPDH": 0.004,
    "FTL": 0.004,
    "FTH1": 0.004,
    "TPT1": 0.004,
    "TMSB10": 0.003,
    "NEAT1": 0.002,
    "MT-CO1": 0.006,
    "MT-CO2": 0.004,
    "MT-CO3": 0.004,
    "MT-ND4": 0.003,
    "MT-CYB": 0.003,
    "MT-ATP6": 0.004,
    "MT-ND1": 0.002,
    "MT-RNR2": 0.003,
}
FEMALE_ONLY_GENES = ("XIST",)
MALE_ONLY_GENES = ("RPS4Y1", "DDX3Y", "UTY", "KDM5D", "EIF1AY")

LINEAGES: dict[str, tuple[str, ...]] = {
    "epithelial": ("EPCAM", "KRT8", "KRT18", "CDH1", "ELF3"),
    "endothelial": ("PECAM1", "VWF", "CDH5", "CLDN5", "EGFL7"),
    "stromal": ("COL1A2", "COL3A1", "COL1A1", "SPARC", "LUM"),
    "myeloid": ("PTPRC", "LYZ", "TYROBP", "FCER1G", "AIF1", "CD74"),
    "lymphoid": ("PTPRC", "CORO1A", "LAPTM5", "ARHGDIB", "CD52"),
    "neuron": ("SNAP25", "SYT1", "RBFOX3", "STMN2"),
    "glia": ("SPARCL1", "APOE", "CLU", "SLC1A3"),
}


def _ct(term_id: str, lineage: str, *markers: str) -> tuple[str, CellTypeSpec]:
    return term_id, CellTypeSpec(term_id=term_id, lineage=lineage, markers=markers)


CELL_TYPES: dict[str, CellTypeSpec] = dict(
    [
        # lung
        _ct("CL:0002063", "epithelial", "SFTPC", "SFTPB", "SFTPA1", "SFTPA2", "NAPSA", "LAMP3", "ABCA3"),
        _ct("CL:0002062", "epithelial", "AGER", "EMP2", "RTKN2", "CLIC5", "HOPX", "CAV1"),
        _ct("CL:0000158", "epithelial", "SCGB1A1", "SCGB3A1", "SCGB3A2", "BPIFB1", "MSMB"),
        _ct("CL:1000271", "epithelial", "FOXJ1", "CAPS", "TPPP3", "SNTN", "RSPH1", "DNAH5"),
        _ct("CL:0000583", "myeloid", "MARCO", "MSR1", "FABP4", "APOC1", "INHBA", "C1QA"),
        _ct("CL:0002144", "endothelial", "CA4", "AQP1", "EDNRB", "GPIHBP1"),
        _ct("CL:0000057", "stromal", "DCN", "LUM", "PDGFRA", "FBLN1", "COL1A2"),
        _ct("CL:0000097", "myeloid", "TPSAB1", "CPA3", "KIT", "MS4A2", "HDC"),
        # lymphocytes, found in several tissues
        _ct("CL:0000625", "lymphoid", "CD8A", "CD3E", "CD3D", "CD8B", "GZMK", "CCL5"),
        _ct("CL:0000624", "lymphoid", "CD4", "CD3E", "IL7R", "CCR7", "LTB", "TCF7"),
        _ct("CL:0000084", "lymphoid", "CD3E", "CD3D", "CD2", "IL7R"),
        _ct("CL:0000623", "lymphoid", "NKG7", "GNLY", "KLRD1", "PRF1", "GZMB", "KLRF1"),
        _ct("CL:0000236", "lymphoid", "MS4A1", "CD79A", "CD79B", "BANK1", "CD19"),
        _ct("CL:0000788", "lymphoid", "MS4A1", "CD79A", "TCL1A", "IGHD", "IGHM"),
        _ct("CL:0000786", "lymphoid", "JCHAIN", "MZB1", "IGHA1", "XBP1", "SDC1"),
        # liver
        _ct("CL:0000182", "epithelial", "ALB", "APOA1", "APOC3", "CYP3A4", "TF", "SERPINA1", "HP"),
        _ct("CL:0000091", "myeloid", "CD5L", "MARCO", "VSIG4", "CD163", "C1QC"),
        _ct("CL:0000632", "stromal", "DCN", "LRAT", "RGS5", "COLEC11", "RELN"),
        _ct("CL:1000398", "endothelial", "CLEC4G", "STAB2", "FCN2", "CRHBP"),
        _ct("CL:1000488", "epithelial", "KRT19", "KRT7", "SOX9", "SPP1"),
        # kidney
        _ct("CL:1000838", "epithelial", "LRP2", "SLC34A1", "CUBN", "SLC5A12", "HNF4A"),
        _ct("CL:0000653", "epithelial", "NPHS2", "NPHS1", "PODXL", "PTPRO", "WT1"),
        _ct("CL:1001106", "epithelial", "UMOD", "SLC12A1", "CASR"),
        _ct("CL:1000849", "epithelial", "SLC12A3", "CALB1", "PVALB"),
        _ct("CL:1001431", "epithelial", "AQP2", "SCNN1G", "FXYD4"),
        _ct("CL:0002188", "endothelial", "EHD3", "EMCN", "PLAT"),
        _ct("CL:0000235", "myeloid", "CD68", "C1QA", "C1QB", "CD163", "MS4A7"),
        # blood
        _ct("CL:0001054", "myeloid", "CD14", "LYZ", "S100A8", "S100A9", "VCAN", "FCN1"),
        _ct("CL:0002396", "myeloid", "FCGR3A", "MS4A7", "LST1", "CDKN1C"),
        _ct("CL:0000784", "myeloid", "LILRA4", "IL3RA", "CLEC4C", "IRF7"),
        # brain
        _ct("CL:0000679", "neuron", "SLC17A7", "SATB2", "CAMK2A", "NRGN"),
        _ct("CL:0000617", "neuron", "GAD1", "GAD2", "SLC32A1", "SST", "PVALB"),
        _ct("CL:0000127", "glia", "GFAP", "AQP4", "SLC1A2", "ALDH1L1", "GJA1"),
        _ct("CL:0000128", "glia", "PLP1", "MBP", "MOG", "MOBP", "ST18"),
        _ct("CL:0002453", "glia", "PDGFRA", "OLIG1", "OLIG2", "CSPG4"),
        _ct("CL:0000129", "myeloid", "CX3CR1", "P2RY12", "CSF1R", "TMEM119", "C3"),
        # colon
        _ct("CL:0002071", "epithelial", "CA1", "CA2", "SLC26A3", "CEACAM7", "AQP8"),
        _ct("CL:1000320", "epithelial", "MUC2", "TFF3", "SPINK4", "ZG16", "CLCA1"),
    ]
)

# Genes up-regulated in every cell of a donor with the disease.
DISEASE_PROGRAMS: dict[str, tuple[str, ...]] = {
    "MONDO:0100096": ("IFI27", "ISG15", "IFI6", "MX1", "IFITM3", "IFI44L", "OAS1"),  # COVID-19
    "MONDO:0005002": ("MMP12", "SPP1", "CHI3L1"),  # chronic obstructive pulmonary disease
    "MONDO:0004975": ("APOE", "CLU", "GPNMB"),  # Alzheimer disease
    "MONDO:0005300": ("HAVCR1", "LCN2", "VCAM1", "SPP1"),  # chronic kidney disease
    # metabolic dysfunction-associated steatotic liver disease
    "MONDO:0013209": ("PLIN2", "SAA1", "SAA2", "CRP"),
    "MONDO:0005532": ("REG1A", "REG1B", "DUOX2", "LCN2", "S100A8", "CXCL8"),  # Crohn's colitis
}
