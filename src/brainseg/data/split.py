"""Assign index rows to train / val / test."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from brainseg.config import SPLIT_FILES_DIR
from brainseg.io import staging_dir
from brainseg.data.index import names_index, sample_keys
from brainseg.errors import BrainsegError, listing

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


# Subset names a split file may use ("valid" as the Kaggle folders spell it); None: not used at all.
FILE_SUBSETS = {"train": "train", "val": "val", "valid": "val", "test": "test", "exclude": None}


def read_split_file(path: Path) -> list[tuple[str, str]]:
    """(name, subset) rows of a split CSV with the columns `file` and `subset`, checked line by line."""
    if not path.is_file():
        raise SplitError(f"split.file {path} does not exist; split files live in {SPLIT_FILES_DIR}/")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not {"file", "subset"} <= set(reader.fieldnames or ()):
            raise SplitError(f"{path}: needs a header with the columns file,subset; found {reader.fieldnames}")
        rows = [((r["file"] or "").strip(), (r["subset"] or "").strip().lower()) for r in reader]
    bad = [f"line {i + 2}: {subset!r}" for i, (_, subset) in enumerate(rows) if subset not in FILE_SUBSETS]
    if bad:
        raise SplitError(f"{path}: subset must be one of {', '.join(FILE_SUBSETS)}; {listing(bad)}")
    counts = Counter(name for name, _ in rows)
    twice = sorted(name for name, n in counts.items() if n > 1)
    if twice:
        raise SplitError(f"{path}: {len(twice)} name(s) listed more than once: {listing(twice)}; keep one row each")
    return rows


def file_split(index: pd.DataFrame, path: Path, unlisted: str = "error") -> dict[str, list[str]]:
    """Subsets as a published split file names them, so others' splits can be reused exactly.

    A name matches an image by its `file` in index.csv (a relative path), or by that path without its
    extension (`12` matches `12.png` or `12.jpg`), which lets one list serve a dataset in PNG and its
    JPEG copy. Names no image has, and images the file leaves out (unless `unlisted` is "exclude"),
    are errors.
    """
    rows = read_split_file(path)
    keys = sample_keys(index).tolist()
    by_name = names_index(index["file"].tolist())
    unknown = [name for name, _ in rows if name not in by_name]
    if unknown:
        raise SplitError(f"{path}: {len(unknown)} name(s) match no image of the dataset: {listing(unknown)}. "
                         "Is split.file meant for this dataset?")
    ambiguous = [name for name, _ in rows if len(by_name[name]) > 1]
    if ambiguous:
        raise SplitError(f"{path}: {listing(ambiguous)} match several images (the same name in several "
                         "folders or with several extensions); list their full file names")
    subset_of = {by_name[name][0]: FILE_SUBSETS[subset] for name, subset in rows}
    left_out = [keys[i] for i in range(len(keys)) if i not in subset_of]
    if left_out and unlisted != "exclude":
        raise SplitError(f"{path}: {len(left_out)} image(s) of the dataset are not listed: {listing(left_out)}. "
                         "List them, or set split.unlisted: exclude to leave them out of every subset")
    split = {s: sorted(keys[i] for i, subset in subset_of.items() if subset == s) for s in SUBSETS}
    empty = [s for s in SUBSETS if not split[s]]
    if empty:
        raise SplitError(f"{path}: assigns no image to {', '.join(empty)}")
    return split


def write_split(split: dict[str, list[str]], out_dir: Path) -> None:
    with staging_dir(out_dir) as staging:
        for subset, keys in split.items():
            (staging / f"{subset}.txt").write_text("".join(k + "\n" for k in keys))


def read_split(split_dir: Path) -> dict[str, list[str]]:
    return {s: (split_dir / f"{s}.txt").read_text().splitlines() for s in SUBSETS}
