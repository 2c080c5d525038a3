"""`validate`: does an AnnData slice (.h5ad, .zarr, zipped .zarr) pass CELLxGENE's validator?

Rules and where they come from
------------------------------
Every rule of CELLxGENE dataset schema 7.1.0 that cellxgene-schema 7.1.2 enforces as an error is
a problem here, and what it only warns about is a warning; ``tests/test_validate_differential.py``
holds both to the same verdict on single-fault mutants of the CELLxGENE fixtures. Ontology terms are
judged against the releases cellxgene-ontology-guide pins to the schema
(:data:`atlasprep.ontology.SCHEMA_VERSION`; the report lists every release).

* obs: required columns; each ``*_ontology_term_id`` a live term of the right ontology and branch,
  where the branch can depend on the organism and on ``tissue_type`` (:class:`._term_rules.TermRule`
  holds one such rule as data); ``suspension_type`` as the assay allows; categorical ``donor_id``,
  ``suspension_type`` and ``tissue_type``, boolean ``is_primary_data``; no deprecated column
  (``organism_ontology_term_id``, ``ethnicity`` …), no reserved one (``cell_type``,
  ``observation_joinid`` …), none starting ``__``; unique names. A missing
  ``cell_type_ontology_term_id`` is a warning: cellxgene-schema 7.1.2 accepts it.
* uns (``_uns_checks``): the organism (one per dataset, since schema 6.0.0), ``title``,
  ``default_embedding``, ``batch_condition``, ``X_approximate_distribution``, colours, reserved
  and deprecated keys, no empty values. obsm (``_obsm_checks``): embeddings. The spatial rules
  (``_spatial``): Visium and bead-based assays, ``uns['spatial']``, tissue positions.
* var: Ensembl gene IDs without version suffix of the dataset's organism (``ENSG`` human,
  ``ENSMUSG`` mouse) in atlasprep's GENCODE table (v48 / vM37), or ERCC spike-ins;
  ``feature_is_filtered`` (in var only); no reserved column (``feature_name`` …).
* Counts (``raw.X`` when present, else ``X``): whole, non-negative, float32, every cell with a
  nonzero count (warnings for ATAC or methylation data that is not multiome), no two cells alike;
  every matrix CSR, or dense and at most half zeros. The matrices are streamed in slices of their
  stored values (sparse) or rows (dense), never loaded whole.
* ``profile="atlasprep"`` drops the upload-only rules (``title``, embeddings) and says so in the
  warnings. ``profile="hca"`` adds the HCA Tier 1 fields (see :data:`HCA_OBS`): required,
  non-empty, and ``cell_enrichment`` a list of ``CL:nnnnnnn+``/``-`` or "na". The HCA validator
  wants the organism in obs, so that profile requires the obs column and accepts ``uns`` only as a
  consistent extra. Values outside the enumerations of hca-validation-tools'
  ``hca_schema_definition.yaml`` (HCA anndata schema 1.0.0) are warnings: the HCA Tier 1 text
  states no such lists.

A required column that is missing but whose deprecated predecessor is present
(``ethnicity_ontology_term_id``) is a problem, and the predecessor's values are checked under the
new column's rules and reported under the predecessor's name.

Every check runs once per distinct value (or combination of values, such as a tissue and its
``tissue_type``) and then counts cells by value, so a million-cell obs costs a few group-bys. Only
the ontologies a file's terms name are loaded; NCBITaxon never is (``atlasprep.ontology._taxa``).

The checks live beside this module, one concern each, in the order they run: ``_slice`` (open
and read), ``_obs_checks`` (with the rules of ``_schema_rules`` and ``_term_rules``), ``_hca``,
``_spatial``, ``_uns_checks``, ``_obsm_checks``, ``_var_checks``, ``_matrix_scan``; ``_report``
holds what they report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import h5py
import pandas as pd

from atlasprep.errors import AtlasprepError, InputFormatError, UsageError
from atlasprep.harmonize._hca import HCA_OBS, HCA_UNS, check_hca
from atlasprep.harmonize._matrix_scan import check_counts, check_layer, check_normalized
from atlasprep.harmonize._obs_checks import check_obs, check_organism
from atlasprep.harmonize._obsm_checks import check_obsm
from atlasprep.harmonize._perturbation import check_conditions, check_perturbations
from atlasprep.harmonize._report import Found, Problem, Profile, ValidationReport
from atlasprep.harmonize._schema_rules import REQUIRED_OBS
from atlasprep.harmonize._slice import Slice, opened, read_slice
from atlasprep.harmonize._spatial import check_spatial, check_spot_counts, needs_counts, spatial_kind
from atlasprep.harmonize._term_rules import raw_rules_apply
from atlasprep.harmonize._uns_checks import check_uns
from atlasprep.harmonize._var_checks import check_frames, check_genes
from atlasprep.harmonize.asctb import check_cell_types, load_asctb
from atlasprep.ontology import SCHEMA_VERSION, ontology_versions

__all__ = ["HCA_OBS", "HCA_UNS", "REQUIRED_OBS", "Problem", "Profile", "ValidationReport", "validate_anndata"]

log = logging.getLogger("atlasprep.harmonize")

# stored matrix values per read (~8 MB of float32 data, plus indices); read at each call, so a test
# can shrink it to cut slices through rows
_CHUNK_VALUES = 1 << 21


def validate_anndata(
    path: Path, *, profile: Profile | str = Profile.cellxgene, asctb: Path | None = None
) -> ValidationReport:
    """Check an AnnData file against CELLxGENE schema 7.1.0 (and HCA Tier 1 for ``profile="hca"``).

    ``asctb`` names an HRA ASCT+B table: (tissue, cell type) pairs it does not list become warnings.
    Bad input (no such file, not AnnData) raises :class:`~atlasprep.errors.AtlasprepError`; what the
    file gets wrong is in the report, never raised.
    """
    if profile not in list(Profile):
        raise UsageError(f"profile {profile!r}: choose {' or '.join(Profile)}")
    profile = Profile(profile)
    path = Path(path)
    table = None
    references: dict[str, str] = {}
    if asctb is not None:
        table = load_asctb(Path(asctb))
        references["asctb"] = table.name
    problems, warnings = Found(), Found()
    with opened(path) as handle:
        try:
            part = read_slice(handle, path)
        except AtlasprepError:
            raise
        except Exception as exc:  # anndata, h5py and zarr raise many kinds on a damaged store
            raise InputFormatError(f"{path}: cannot read it as AnnData ({exc})") from None
        _check_store(handle, part, profile, problems, warnings, references)
    n = len(part.obs)
    if table is not None:
        cols = ("tissue_ontology_term_id", "cell_type_ontology_term_id")
        if all(c in part.obs for c in cols):
            warnings.extend(check_cell_types(table, part.obs[cols[0]], part.obs[cols[1]]))
    report = ValidationReport(
        path=path,
        profile=profile,
        schema_version=SCHEMA_VERSION,
        ontology_versions=ontology_versions(),
        problems=problems.freeze(),
        warnings=warnings.freeze(),
        n_cells=n,
        n_genes=len(part.var),
        references=references,
    )
    log.info("validate %s: %d problem(s), %d warning(s)", path, len(report.problems), len(report.warnings))
    return report


def _check_store(
    handle: Any, part: Slice, profile: Profile, problems: Found, warnings: Found, references: dict[str, str]
) -> None:
    """Every rule, in the order of the schema text: obs, uns, obsm, var, the matrices."""
    n = len(part.obs)
    if isinstance(handle, h5py.File) and handle.attrs.get("encoding-version") != "0.1.0":
        what = "written by an AnnData older than 0.8.0 (encoding-version is not 0.1.0): write it again"
        problems.add("h5ad", what, n)
    organism = check_organism(part, profile, problems, warnings)
    check_obs(part.obs, organism, problems, warnings)
    check_conditions(part.obs, problems)
    check_perturbations(part.obs, part.uns, problems, warnings)
    if profile == Profile.hca:
        check_hca(part.obs, part.uns, problems, warnings)
    elif profile == Profile.atlasprep:
        warnings.add(
            "profile", "atlasprep: uns['title'] and obsm embeddings not required (CELLxGENE needs them)", n
        )
    kind = spatial_kind(part.obs, part.uns)
    check_spatial(part.obs, part.uns, kind, problems)
    obsm = handle.get("obsm")
    check_uns(part.uns, part.obs, list(obsm.keys()) if obsm is not None else [], profile, problems)
    check_obsm(obsm, n, part.uns, kind.spatial, profile, problems)
    check_frames(part, problems)
    gene_flags, annotation = check_genes(part.var.index, organism, n, warnings)
    if annotation:
        references["genes"] = annotation
    needs = needs_counts(part.obs, kind)
    assays = part.obs.get("assay_ontology_term_id")
    raw_rules = raw_rules_apply(pd.unique(assays.astype(str)) if assays is not None else ())
    scan = check_counts(
        part,
        gene_flags,
        problems,
        warnings,
        chunk_values=_CHUNK_VALUES,
        needs_value=needs,
        raw_rules=raw_rules,
    )
    check_spot_counts(part.obs, scan.has_value, part.counts_name, kind, problems)
    if part.counts_name != "X":  # X holds normalized values beside raw.X
        check_normalized(part, handle["X"], scan, problems, warnings, chunk_values=_CHUNK_VALUES)
    layers = handle.get("layers")
    for key in layers.keys() if layers is not None else ():
        check_layer(f"layers['{key}']", layers[key], problems, chunk_values=_CHUNK_VALUES)
