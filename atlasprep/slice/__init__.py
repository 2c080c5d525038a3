"""`slice`: cells matching ontology-aware filters, streamed out of core into h5ad or zarr."""

from atlasprep.slice.api import DEFAULT_BATCH_SIZE, SliceConfig, SliceResult, open_source, slice_cells
from atlasprep.slice.writer import AnnDataWriter

__all__ = ["DEFAULT_BATCH_SIZE", "AnnDataWriter", "SliceConfig", "SliceResult", "open_source", "slice_cells"]
