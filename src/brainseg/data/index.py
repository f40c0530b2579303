"""data/processed/index.csv: one row per array row, written by preprocess, read by split, training and evaluation.

Its own module so that the stages that only read the index do not depend on the preprocessing code.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

# height, width: original size in pixels; tumor_pixels: counted at that size.
INDEX_COLUMNS = ["file", "split", "group", "height", "width", "tumor_pixels"]


def read_index(processed_dir: Path) -> pd.DataFrame:
    return pd.read_csv(processed_dir / "index.csv", dtype={"file": str, "split": str, "group": str},
                       keep_default_na=False)


def sample_keys(index: pd.DataFrame) -> pd.Series:
    """Unique, human-readable row keys: `<original split>/<file>`."""
    return index["split"] + "/" + index["file"]
