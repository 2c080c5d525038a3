"""The organisms the Census carries, named any way a person names them."""

from __future__ import annotations

__all__ = ["ORGANISMS", "experiment_name"]

# The organisms the Census carries, so that naming one never loads NCBITaxon (~16 s).
# experiment name -> (label, NCBITaxon ID, common names)
ORGANISMS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "homo_sapiens": ("Homo sapiens", "NCBITaxon:9606", ("human",)),
    "mus_musculus": ("Mus musculus", "NCBITaxon:10090", ("mouse",)),
    "callithrix_jacchus": ("Callithrix jacchus", "NCBITaxon:9483", ("marmoset",)),
    "macaca_mulatta": ("Macaca mulatta", "NCBITaxon:9544", ("rhesus macaque",)),
    "pan_troglodytes": ("Pan troglodytes", "NCBITaxon:9598", ("chimpanzee",)),
}


def experiment_name(organism: str) -> str:
    """``"Homo sapiens"``, ``"human"``, ``"NCBITaxon:9606"`` -> ``"homo_sapiens"``."""
    key = organism.strip().lower().replace(" ", "_")
    for name, (label, taxon, common) in ORGANISMS.items():
        if key in (name, label.lower().replace(" ", "_"), taxon.lower(), *common):
            return name
    return key  # a store may carry an organism we do not list; the open checks it exists
