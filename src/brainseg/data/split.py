"""Assign index rows to train / val / test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainseg.data.archive import staging_dir
from brainseg.data.index import sample_keys
from brainseg.errors import BrainsegError

SUBSETS = ("train", "val", "test")
_PREDEFINED = {"train": "train", "valid": "val", "test": "test"}


class SplitError(BrainsegError, ValueError):
    pass


def predefined_split(index: pd.DataFrame) -> dict[str, list[str]]:
    subsets = index["split"].map(_PREDEFINED)
    missing = [s for s in SUBSETS if not (subsets == s).any()]
    if missing:
        raise SplitError(
            f"split.strategy 'predefined' needs train, valid and test folders; the dataset has none for "
            f"{', '.join(missing)}. Use split.strategy: random."
        )
    keys = sample_keys(index)
    return {s: sorted(keys[subsets == s]) for s in SUBSETS}


def random_group_split(index: pd.DataFrame, fractions: dict[str, float], seed: int) -> dict[str, list[str]]:
    """Seeded split by source group, so copies of one slice never land in two subsets.

    Groups are shuffled and filled into subsets in order until each reaches its share of images.
    """
    groups = index.groupby("group").size()
    order = np.random.default_rng(seed).permutation(len(groups))
    sizes = groups.to_numpy()[order]
    names = groups.index.to_numpy()[order]
    bounds = np.cumsum([fractions[s] for s in SUBSETS]) * len(index)
    # A group goes to the first subset whose bound its midpoint lies below.
    midpoints = np.cumsum(sizes) - sizes / 2
    assignment = np.searchsorted(bounds, midpoints, side="right").clip(max=len(SUBSETS) - 1)
    group_subset = dict(zip(names, (SUBSETS[a] for a in assignment)))
    subsets = index["group"].map(group_subset)
    keys = sample_keys(index)
    split = {s: sorted(keys[subsets == s]) for s in SUBSETS}
    empty = [s for s in SUBSETS if not split[s]]
    if empty:
        raise SplitError(f"random split left {', '.join(empty)} empty: the dataset has too few groups "
                         f"({len(groups)}) for split fractions {fractions}")
    return split


def write_split(split: dict[str, list[str]], out_dir: Path) -> None:
    with staging_dir(out_dir) as staging:
        for subset, keys in split.items():
            (staging / f"{subset}.txt").write_text("".join(k + "\n" for k in keys))


def read_split(split_dir: Path) -> dict[str, list[str]]:
    return {s: (split_dir / f"{s}.txt").read_text().splitlines() for s in SUBSETS}
