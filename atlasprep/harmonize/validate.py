"""`validate`: does an AnnData slice (.h5ad, .zarr, zipped .zarr) meet the CELLxGENE rules a corpus needs?

Rules and where they come from
------------------------------
* CELLxGENE dataset schema 7.1.0 — the ``schema_definition.yaml`` that cellxgene-schema 7.1.2 ships
  — with the ontology releases cellxgene-ontology-guide pins to it
  (:data:`atlasprep.ontology.SCHEMA_VERSION`; the report lists every release). Required obs columns;
  each ``*_ontology_term_id`` a live (not deprecated) term of the right ontology and branch, where
  the branch can depend on the organism and on ``tissue_type`` (:class:`._term_rules.TermRule` holds one
  such rule as data); ``suspension_type`` as the assay allows; label columns (``cell_type`` …) equal to
  the labels of their IDs; one organism per dataset, in ``uns`` since schema 6.0.0.
* Genes: var names are Ensembl gene IDs without version suffix, of the dataset's organism
  (``ENSG`` human, ``ENSMUSG`` mouse) and present in atlasprep's GENCODE table (v48 / vM37), or
  ERCC spike-ins; obs names and var names unique.
* Counts (``raw.X`` when present, else ``X``): whole, non-negative numbers, and every cell with at
  least one nonzero count. The matrix is streamed in slices of its stored values (sparse) or rows
  (dense), never loaded whole.
* ``profile="hca"`` adds the HCA Tier 1 fields (see :data:`HCA_OBS`): required, non-empty, and
  ``cell_enrichment`` a list of ``CL:nnnnnnn+``/``-`` or "na". The HCA validator wants the organism
  in obs, so that profile requires the obs column and accepts ``uns`` only as a consistent extra.
  Values outside the enumerations of hca-validation-tools' ``hca_schema_definition.yaml`` (HCA
  anndata schema 1.0.0) are warnings: the HCA Tier 1 text states no such lists.

Problems are what breaks a corpus or misstates a cell; warnings are schema points CELLxGENE
would still reject (deprecated and reserved columns, dtype, layout) that atlasprep reads through.
A required column that is missing but whose deprecated predecessor is present
(``ethnicity_ontology_term_id``) is a problem, and the predecessor's values are checked under the
new column's rules and reported under the predecessor's name.

Every check runs once per distinct value (or combination of values, such as a tissue and its
``tissue_type``) and then counts cells by value, so a million-cell obs costs a few group-bys.

The checks live beside this module, one concern each, in the order they run: ``_slice`` (open
and read), ``_obs_checks`` (with the rules of ``_schema_rules`` and ``_term_rules``),
``_var_checks``, ``_matrix_scan``, ``_hca``; ``_report`` holds what they report.
"""

from __future__ import annotations

import logging
from pathlib import Path

from atlasprep.errors import AtlasprepError, InputFormatError, UsageError
from atlasprep.harmonize._hca import HCA_OBS, HCA_UNS, check_hca
from atlasprep.harmonize._matrix_scan import check_counts
from atlasprep.harmonize._obs_checks import check_obs, check_organism
from atlasprep.harmonize._report import Found, Problem, Profile, ValidationReport
from atlasprep.harmonize._schema_rules import REQUIRED_OBS
from atlasprep.harmonize._slice import opened, read_slice
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
        n = len(part.obs)
        organism = check_organism(part, profile, problems, warnings)
        check_obs(part.obs, organism, problems, warnings)
        if profile == "hca":
            check_hca(part.obs, part.uns, problems, warnings)
        check_frames(part, problems, warnings)
        gene_flags, annotation = check_genes(part.var.index, organism, n, warnings)
        if annotation:
            references["genes"] = annotation
        check_counts(part, gene_flags, problems, warnings, chunk_values=_CHUNK_VALUES)
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
