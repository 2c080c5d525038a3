"""The mutations the validate mutants are made of: a :class:`Mutant` names one fault and the
function that puts it into a copy of a fixture (see make_mutants.py)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

Mutation = Callable[[ad.AnnData], "ad.AnnData | None"]


@dataclass(frozen=True)
class Mutant:
    name: str
    rule: str  # where the fault is: the column, key or matrix a validator must name
    mutate: Mutation
    base: str = "valid"  # "valid", "invalid" (the fixtures) or "visium" (built from the valid one)


def obs(column: str, values: object) -> Mutation:
    def mutate(a: ad.AnnData) -> None:
        given = values if isinstance(values, list) else [values] * a.n_obs
        a.obs[column] = pd.Categorical(given)

    return mutate


def put(where: str, key: str, value: object) -> Mutation:
    """Set ``adata.<where>[key] = value`` (obs columns as given: no categorical conversion)."""

    def mutate(a: ad.AnnData) -> None:
        getattr(a, where)[key] = value

    return mutate


def drop(where: str, key: str) -> Mutation:
    def mutate(a: ad.AnnData) -> None:
        del getattr(a, where)[key]

    return mutate


def obsm(key: str, value: np.ndarray | None, *, drop: str | None = None) -> Mutation:
    def mutate(a: ad.AnnData) -> None:
        if drop is not None:
            del a.obsm[drop]
            if a.uns.get("default_embedding") == drop:
                del a.uns["default_embedding"]
        if value is not None:
            a.obsm[key] = value

    return mutate


def several(*steps: Mutation) -> Mutation:
    def mutate(a: ad.AnnData) -> ad.AnnData | None:
        for step in steps:
            out = step(a)
            if out is not None:
                a = out
        return a

    return mutate


def var_names(names: list[str]) -> Mutation:
    """Rename genes in var and raw.var alike (the first len(names) genes)."""

    def mutate(a: ad.AnnData) -> ad.AnnData:
        new = list(a.var_names)
        new[: len(names)] = names
        raw = a.raw.to_adata()
        raw.var_names = new
        a.var_names = new
        a.raw = raw
        return a

    return mutate


def raw(transform: Callable[[np.ndarray], object]) -> Mutation:
    """Replace raw.X by transform(dense raw counts)."""

    def mutate(a: ad.AnnData) -> ad.AnnData:
        raw = a.raw.to_adata()
        raw.X = transform(raw.X.toarray())
        a.raw = raw
        return a

    return mutate


def x(transform: Callable[[np.ndarray], object]) -> Mutation:
    def mutate(a: ad.AnnData) -> None:
        a.X = transform(a.X.toarray())

    return mutate


def raw_in_x(transform: Callable[[np.ndarray], object] = sp.csr_matrix) -> Mutation:
    """No raw: X holds the counts (optionally transformed)."""

    def mutate(a: ad.AnnData) -> ad.AnnData:
        counts = a.raw.X.toarray()
        b = ad.AnnData(X=transform(counts), obs=a.obs.copy(), var=a.var.copy(), uns=dict(a.uns))
        b.obsm["X_umap"] = a.obsm["X_umap"]
        return b

    return mutate


def no_raw_normalized(a: ad.AnnData) -> ad.AnnData:
    b = ad.AnnData(X=a.X.copy(), obs=a.obs.copy(), var=a.var.copy(), uns=dict(a.uns))
    b.obsm["X_umap"] = a.obsm["X_umap"]
    return b


def raw_var(column: str, values: object) -> Mutation:
    def mutate(a: ad.AnnData) -> ad.AnnData:
        raw = a.raw.to_adata()
        raw.var[column] = values
        a.raw = raw
        return a

    return mutate


def cell_line(a: ad.AnnData) -> None:
    for column, value in {
        "tissue_type": "cell line",
        "tissue_ontology_term_id": "CVCL_0030",
        "cell_type_ontology_term_id": "na",
        "sex_ontology_term_id": "na",
        "development_stage_ontology_term_id": "na",
        "self_reported_ethnicity_ontology_term_id": "na",
        "donor_id": "na",
    }.items():
        a.obs[column] = pd.Categorical([value] * a.n_obs)


def fixture(a: ad.AnnData) -> None:
    return None


def build(mutant: Mutant, base: ad.AnnData, out: Path) -> Path:
    """Write ``mutant`` of (a copy of) ``base`` to ``out`` and return it."""
    adata = base.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        changed = mutant.mutate(adata)
        (changed if changed is not None else adata).write_h5ad(out)
    return out
