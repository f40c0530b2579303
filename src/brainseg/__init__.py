"""Brain-tumor segmentation in 2D MRI slices: a reproducible DVC pipeline and its inference tools."""

__version__ = "0.1.0"  # the one home of the version: pyproject.toml reads it, model.json records it
