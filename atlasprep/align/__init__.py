"""Join modalities by barcode and register spatial data into the HRA Common Coordinate Framework."""
