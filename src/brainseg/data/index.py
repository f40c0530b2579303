"""data/processed/index.csv: one row per array row, written by preprocess, read by split, training and evaluation.

Its own module so that the stages that only read the index do not depend on the preprocessing code.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path, PurePosixPath

import pandas as pd

# height, width: original size in pixels; tumor_pixels: counted at that size.
INDEX_COLUMNS = ["file", "split", "group", "height", "width", "tumor_pixels"]
# Beside the index when preprocess.pseudo_masks is set: uint8 N x S x S, one pseudo-mask per index row.
PSEUDO_MASKS_FILE = "pseudo_masks.npy"


def read_index(processed_dir: Path) -> pd.DataFrame:
    return pd.read_csv(processed_dir / "index.csv", dtype={"file": str, "split": str, "group": str},
                       keep_default_na=False)


def sample_keys(index: pd.DataFrame) -> pd.Series:
    """Unique, human-readable row keys: `<original split>/<file>`."""
    return index["split"] + "/" + index["file"]


def names_index(names: list[str]) -> dict[str, list[int]]:
    """Positions of each name, also under the name without its extension (`12` finds `12.png`), so one
    list of names (a split file, a reference mapping) serves a dataset in PNG and its JPEG copy."""
    found: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        found[name].append(i)
        if without_extension(name) != name:
            found[without_extension(name)].append(i)
    return found


def without_extension(name: str) -> str:
    return str(PurePosixPath(name).with_suffix(""))
