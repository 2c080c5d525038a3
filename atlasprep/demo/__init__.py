"""The demo atlas: a deterministic, offline, Census-layout SOMA collection with realistic content.

``cellxgene_census.open_soma(uri=...)`` and ``get_anndata(census, "Homo sapiens", ...)`` work
on it unchanged. Seven datasets (lung, liver, kidney, blood, brain, colon; 10x 3' v2/v3,
10x 5' v2, Smart-seq2, single-nucleus) plus an integrated lung atlas whose cells duplicate
some of theirs with ``is_primary_data`` False; real CL/UBERON/EFO/MONDO/HsapDv/HANCESTRO
terms; cell-type marker programs in negative-binomial counts.
"""

from atlasprep.demo._build import DEFAULT_BATCH_SIZE, DEMO_N_CELLS, build_census, demo_census_uri
from atlasprep.demo._spec import DEMO_VERSION

__all__ = ["DEFAULT_BATCH_SIZE", "DEMO_N_CELLS", "DEMO_VERSION", "build_census", "demo_census_uri"]
