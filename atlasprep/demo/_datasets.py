"""The demo atlas' donors, collections and datasets (and the integrated atlas that re-contains
some of them), declared as data; the types, genes and cell types are in
:mod:`atlasprep.demo._spec`, whose rules (real ontology terms, ``DEMO_VERSION``) hold here too."""

from __future__ import annotations

from atlasprep.demo._spec import (
    AtlasSource,
    CollectionSpec,
    DatasetSpec,
    DonorSpec,
    IntegratedAtlasSpec,
)

__all__ = ["ATLAS", "COLLECTIONS", "DATASETS"]

# -- donors ------------------------------------------------------------------------------------
_F, _M = "PATO:0000383", "PATO:0000384"
_NORMAL = "PATO:0000461"
_EUR, _ASN, _EAS, _AFA = "HANCESTRO:0005", "HANCESTRO:0008", "HANCESTRO:0009", "HANCESTRO:0568"
_SAS, _LAT = "HANCESTRO:0006", "HANCESTRO:0014"
# lung, lower lobe of left lung, upper lobe of left lung
_LUNG, _LLL, _LUL = "UBERON:0002048", "UBERON:0008953", "UBERON:0008952"
_LIVER, _LIVER_RIGHT_LOBE = "UBERON:0002107", "UBERON:0001114"
_KIDNEY, _KIDNEY_CORTEX = "UBERON:0002113", "UBERON:0001225"
_BLOOD, _VENOUS_BLOOD = "UBERON:0000178", "UBERON:0013756"
_PREFRONTAL_CORTEX, _CEREBRAL_CORTEX = "UBERON:0000451", "UBERON:0000956"
_TRANSVERSE_COLON, _SIGMOID_COLON = "UBERON:0001157", "UBERON:0001159"
_COVID, _COPD, _ALZHEIMER = "MONDO:0100096", "MONDO:0005002", "MONDO:0004975"
_CKD, _MASLD, _CROHNS_COLITIS = "MONDO:0005300", "MONDO:0013209", "MONDO:0005532"
# HsapDv "<n>-year-old stage" is HsapDv:0000(94 + n) for 2 to 79 years (tested); older donors
# get a decade term, as in many Census datasets
_Y = {n: f"HsapDv:{94 + n:07d}" for n in range(18, 80)}
_SIXTH_DECADE, _SEVENTH_DECADE = "HsapDv:0000240", "HsapDv:0000241"
_EIGHTH_DECADE, _NINTH_DECADE = "HsapDv:0000242", "HsapDv:0000243"


def _donor(
    donor_id: str,
    sex: str,
    stage: str,
    ethnicity: str,
    disease: str,
    *tissues: tuple[str, float],
    weight: float = 1.0,
) -> DonorSpec:
    return DonorSpec(
        donor_id=donor_id,
        sex=sex,
        development_stage=stage,
        ethnicity=ethnicity,
        disease=disease,
        tissues=tissues,
        weight=weight,
    )


COLLECTIONS: dict[str, CollectionSpec] = {
    c.key: c
    for c in (
        CollectionSpec(
            key="lung",
            name="Human lung in health, COVID-19 and COPD (synthetic atlasprep demo)",
            doi="10.5555/atlasprep.demo.lung",
            doi_label="atlasprep demo (2026) lung",
        ),
        CollectionSpec(
            key="organs",
            name="Liver, kidney and colon in chronic disease (synthetic atlasprep demo)",
            doi="10.5555/atlasprep.demo.organs",
            doi_label="atlasprep demo (2026) organs",
        ),
        CollectionSpec(
            key="blood",
            name="Peripheral blood in COVID-19 (synthetic atlasprep demo)",
            doi="10.5555/atlasprep.demo.blood",
            doi_label="atlasprep demo (2026) blood",
        ),
        CollectionSpec(
            key="brain",
            name="Prefrontal cortex in Alzheimer disease (synthetic atlasprep demo)",
            doi="10.5555/atlasprep.demo.brain",
            doi_label="atlasprep demo (2026) brain",
        ),
    )
}

DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        key="lung-10x3v3",
        title="Lung parenchyma in COVID-19 and COPD, 10x 3' v3",
        collection="lung",
        assay="EFO:0009922",  # 10x 3' v3
        suspension_type="cell",
        median_counts=5_000,
        counts_sigma=0.5,
        weight=0.22,
        donors=(
            _donor("LUNG-N01", _F, _Y[49], _EUR, _NORMAL, (_LUNG, 0.6), (_LLL, 0.4)),
            _donor("LUNG-N02", _M, _Y[63], _EUR, _NORMAL, (_LUNG, 1.0)),
            _donor("LUNG-N03", _M, _Y[37], _ASN, _NORMAL, (_LLL, 1.0)),
            _donor("LUNG-C01", _M, _Y[72], _EUR, _COVID, (_LUNG, 1.0)),
            _donor("LUNG-C02", _F, _Y[55], _AFA, _COVID, (_LUNG, 0.5), (_LLL, 0.5)),
            _donor("LUNG-C03", _M, _Y[66], "unknown", _COVID, (_LUNG, 1.0)),
            _donor("LUNG-P01", _M, _Y[76], _EUR, _COPD, (_LLL, 1.0)),
            _donor("LUNG-P02", _F, _Y[67], f"{_EUR} || {_LAT}", _COPD, (_LUNG, 1.0)),
        ),
        composition=(
            ("CL:0002063", 0.24),  # pulmonary alveolar type 2 cell
            ("CL:0002062", 0.07),  # pulmonary alveolar type 1 cell
            ("CL:0000158", 0.04),  # club cell
            ("CL:1000271", 0.05),  # lung multiciliated epithelial cell
            ("CL:0000583", 0.20),  # alveolar macrophage
            ("CL:0002144", 0.08),  # capillary endothelial cell
            ("CL:0000057", 0.05),  # fibroblast
            ("CL:0000625", 0.10),  # CD8-positive, alpha-beta T cell
            ("CL:0000623", 0.07),  # natural killer cell
            ("CL:0000236", 0.05),  # B cell
            ("CL:0000097", 0.05),  # mast cell
        ),
    ),
    DatasetSpec(
        key="lung-smartseq2",
        title="Distal lung epithelium and macrophages, Smart-seq2",
        collection="lung",
        assay="EFO:0008931",  # Smart-seq2
        suspension_type="cell",
        median_counts=40_000,
        counts_sigma=0.6,
        weight=0.05,
        donors=(
            _donor("SS2-1", _F, _Y[30], _EAS, _NORMAL, (_LUL, 1.0)),
            _donor("SS2-2", _M, _Y[47], _EUR, _NORMAL, (_LUNG, 0.5), (_LUL, 0.5)),
            _donor("SS2-3", _M, _Y[58], _SAS, _NORMAL, (_LUNG, 1.0)),
        ),
        composition=(
            ("CL:0002063", 0.35),
            ("CL:0002062", 0.15),
            ("CL:0000158", 0.10),
            ("CL:1000271", 0.10),
            ("CL:0000583", 0.20),
            ("CL:0000057", 0.10),
        ),
    ),
    DatasetSpec(
        key="liver-10x5v2",
        title="Liver in metabolic dysfunction-associated steatotic liver disease, 10x 5' v2",
        collection="organs",
        assay="EFO:0009900",  # 10x 5' v2
        suspension_type="cell",
        median_counts=3_500,
        counts_sigma=0.5,
        weight=0.14,
        donors=(
            _donor("LIV-01", _M, _Y[42], _EUR, _NORMAL, (_LIVER, 1.0)),
            _donor("LIV-02", _F, _Y[56], _EAS, _NORMAL, (_LIVER_RIGHT_LOBE, 1.0)),
            _donor("LIV-03", _F, _Y[51], _EUR, _MASLD, (_LIVER, 1.0)),
            _donor("LIV-04", _M, _Y[63], _LAT, _MASLD, (_LIVER_RIGHT_LOBE, 1.0)),
            _donor("LIV-05", _M, _SIXTH_DECADE, "unknown", _MASLD, (_LIVER, 1.0)),
        ),
        composition=(
            ("CL:0000182", 0.45),  # hepatocyte
            ("CL:0000091", 0.15),  # Kupffer cell
            ("CL:0000632", 0.07),  # hepatic stellate cell
            ("CL:1000398", 0.12),  # endothelial cell of hepatic sinusoid
            ("CL:1000488", 0.05),  # cholangiocyte
            ("CL:0000623", 0.08),  # natural killer cell
            ("CL:0000625", 0.08),  # CD8-positive, alpha-beta T cell
        ),
    ),
    DatasetSpec(
        key="kidney-sn10x3v3",
        title="Kidney cortex in chronic kidney disease, single-nucleus 10x 3' v3",
        collection="organs",
        assay="EFO:0009922",
        suspension_type="nucleus",
        median_counts=2_000,
        counts_sigma=0.6,
        weight=0.14,
        donors=(
            _donor("KID-01", _F, _Y[43], _AFA, _NORMAL, (_KIDNEY_CORTEX, 1.0)),
            _donor("KID-02", _M, _Y[72], _EUR, _NORMAL, (_KIDNEY, 0.4), (_KIDNEY_CORTEX, 0.6)),
            _donor("KID-03", _M, _Y[74], _AFA, _CKD, (_KIDNEY_CORTEX, 1.0)),
            _donor("KID-04", _F, _Y[78], _EUR, _CKD, (_KIDNEY, 1.0)),
            _donor("KID-05", _M, _SEVENTH_DECADE, _ASN, _CKD, (_KIDNEY_CORTEX, 1.0)),
        ),
        composition=(
            ("CL:1000838", 0.38),  # kidney proximal convoluted tubule epithelial cell
            ("CL:0000653", 0.06),  # podocyte
            ("CL:1001106", 0.14),  # kidney loop of Henle thick ascending limb epithelial cell
            ("CL:1000849", 0.09),  # kidney distal convoluted tubule epithelial cell
            ("CL:1001431", 0.09),  # kidney collecting duct principal cell
            ("CL:0002188", 0.10),  # glomerular endothelial cell
            ("CL:0000235", 0.07),  # macrophage
            ("CL:0000084", 0.07),  # T cell
        ),
    ),
    DatasetSpec(
        key="blood-10x3v2",
        title="Peripheral blood mononuclear cells in COVID-19, 10x 3' v2",
        collection="blood",
        assay="EFO:0009899",  # 10x 3' v2
        suspension_type="cell",
        median_counts=2_500,
        counts_sigma=0.45,
        weight=0.18,
        gene_annotation="legacy",
        donors=(
            _donor("PBMC-H1", _F, _Y[23], _EUR, _NORMAL, (_BLOOD, 1.0)),
            _donor("PBMC-H2", _M, _Y[31], _EAS, _NORMAL, (_VENOUS_BLOOD, 1.0)),
            _donor("PBMC-H3", _F, _Y[55], _AFA, _NORMAL, (_BLOOD, 1.0)),
            _donor("PBMC-C1", _M, _Y[66], _EUR, _COVID, (_VENOUS_BLOOD, 1.0)),
            _donor("PBMC-C2", _M, _Y[76], _SAS, _COVID, (_BLOOD, 1.0)),
            _donor("PBMC-C3", _F, _EIGHTH_DECADE, "unknown", _COVID, (_VENOUS_BLOOD, 1.0)),
        ),
        composition=(
            ("CL:0001054", 0.20),  # CD14-positive monocyte
            ("CL:0002396", 0.05),  # CD14-low, CD16-positive monocyte
            ("CL:0000624", 0.30),  # CD4-positive, alpha-beta T cell
            ("CL:0000625", 0.15),  # CD8-positive, alpha-beta T cell
            ("CL:0000788", 0.12),  # naive B cell
            ("CL:0000623", 0.14),  # natural killer cell
            ("CL:0000784", 0.04),  # plasmacytoid dendritic cell
        ),
    ),
    DatasetSpec(
        key="brain-sn10x3v3",
        title="Prefrontal cortex in Alzheimer disease, single-nucleus 10x 3' v3",
        collection="brain",
        assay="EFO:0009922",
        suspension_type="nucleus",
        median_counts=3_000,
        counts_sigma=0.6,
        weight=0.17,
        donors=(
            _donor("BR-01", _F, _Y[72], _EUR, _NORMAL, (_PREFRONTAL_CORTEX, 1.0)),
            _donor("BR-02", _M, _Y[76], _EUR, _NORMAL, (_CEREBRAL_CORTEX, 1.0)),
            _donor("BR-03", _F, _Y[78], _EUR, _ALZHEIMER, (_PREFRONTAL_CORTEX, 1.0)),
            _donor("BR-04", _M, _Y[74], _AFA, _ALZHEIMER, (_PREFRONTAL_CORTEX, 0.5), (_CEREBRAL_CORTEX, 0.5)),
            _donor("BR-05", _F, _NINTH_DECADE, "unknown", _ALZHEIMER, (_PREFRONTAL_CORTEX, 1.0)),
        ),
        composition=(
            ("CL:0000679", 0.40),  # glutamatergic neuron
            ("CL:0000617", 0.15),  # GABAergic neuron
            ("CL:0000127", 0.12),  # astrocyte
            ("CL:0000128", 0.20),  # oligodendrocyte
            ("CL:0002453", 0.06),  # oligodendrocyte precursor cell
            ("CL:0000129", 0.07),  # microglial cell
        ),
    ),
    DatasetSpec(
        key="colon-10x3v3",
        title="Colonic mucosa in Crohn's colitis, 10x 3' v3",
        collection="organs",
        assay="EFO:0009922",
        suspension_type="cell",
        median_counts=5_500,
        counts_sigma=0.5,
        weight=0.10,
        donors=(
            _donor("GUT-01", _M, _Y[30], _EUR, _NORMAL, (_TRANSVERSE_COLON, 1.0)),
            _donor("GUT-02", _F, _Y[37], _EUR, _NORMAL, (_SIGMOID_COLON, 1.0)),
            _donor(
                "GUT-03", _F, _Y[23], _LAT, _CROHNS_COLITIS, (_TRANSVERSE_COLON, 0.5), (_SIGMOID_COLON, 0.5)
            ),
            _donor("GUT-04", _M, _Y[42], _ASN, _CROHNS_COLITIS, (_SIGMOID_COLON, 1.0)),
        ),
        composition=(
            ("CL:0002071", 0.30),  # enterocyte of epithelium of large intestine
            ("CL:1000320", 0.15),  # large intestine goblet cell
            ("CL:0000786", 0.20),  # plasma cell
            ("CL:0000624", 0.15),  # CD4-positive, alpha-beta T cell
            ("CL:0000235", 0.10),  # macrophage
            ("CL:0000057", 0.10),  # fibroblast
        ),
    ),
)

# An integrated lung atlas that re-contains part of two lung datasets, as the HLCA does in the
# Census: same counts, same observation_joinid, is_primary_data False. Last in soma_joinid order.
ATLAS = IntegratedAtlasSpec(
    key="lung-atlas",
    title="Integrated lung cell atlas (core)",
    collection="lung",
    duplicate_fraction=0.12,
    sources=(
        AtlasSource(dataset="lung-10x3v3", donor_id="LUNG-N02", share=0.45),
        AtlasSource(dataset="lung-10x3v3", donor_id="LUNG-C01", share=0.35),
        AtlasSource(dataset="lung-smartseq2", donor_id="SS2-2", share=0.20),
    ),
)
