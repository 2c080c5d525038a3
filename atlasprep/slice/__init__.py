"""`slice`: cells matching ontology-aware filters, streamed out of core into h5ad or zarr."""

from atlasprep.slice.api import DEFAULT_BATCH_SIZE, SliceConfig, SliceResult, slice_cells
from atlasprep.slice.writer import AnnDataWriter

__all__ = ["DEFAULT_BATCH_SIZE", "AnnDataWriter", "SliceConfig", "SliceResult", "slice_cells"]
