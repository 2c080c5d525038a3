"""atlasprep: training corpora for biology foundation models from cell atlases."""

__version__ = "0.1.0"

__all__ = ["__version__"]
