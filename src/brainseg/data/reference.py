"""A second truth for the test images: masks of the same slices from another dataset.

The reference stage fetches the set into data/reference/ (any layout data/raw accepts: mask files,
COCO polygons or boxes). Evaluate pairs each test image with one reference sample, by name or
through a mapping CSV, and scores the predictions against that sample's mask brought to the test
image's original size (nearest neighbour, so a mask stays a mask).
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from brainseg.config import REFERENCE_MAPPINGS_DIR
from brainseg.data.preprocess import sample_mask
from brainseg.data.index import names_index, without_extension
from brainseg.data.layout import read_layout
from brainseg.errors import BrainsegError, listing


class ReferenceError(BrainsegError, ValueError):
    """The reference set or its mapping does not fit the test images; the message says how."""


def read_mapping(path: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """(header, rows) of a two-column CSV pairing names of one dataset with names of the other."""
    if not path.is_file():
        raise ReferenceError(f"reference.mapping {path} does not exist; mapping files live in "
                             f"{REFERENCE_MAPPINGS_DIR}/")
    with path.open(newline="") as f:
        rows = [[cell.strip() for cell in row] for row in csv.reader(f) if row]
    if not rows or len(rows[0]) != 2:
        raise ReferenceError(f"{path}: needs a header of two columns (one per dataset), found "
                             f"{rows[0] if rows else 'an empty file'}")
    header, body = rows[0], rows[1:]
    bad = [f"line {i + 2}" for i, row in enumerate(body) if len(row) != 2 or not all(row)]
    if bad:
        raise ReferenceError(f"{path}: every line needs two non-empty names; {listing(bad)}")
    for column in (0, 1):
        twice = sorted(name for name, n in Counter(row[column] for row in body).items() if n > 1)
        if twice:
            raise ReferenceError(f"{path}: {len(twice)} name(s) listed more than once in column "
                                 f"{header[column]!r}: {listing(twice)}; keep one row each")
    return header, [(a, b) for a, b in body]


def pair_with_reference(test_files: list[str], reference_names: list[str],
                        mapping: tuple[list[str], list[tuple[str, str]]] | None = None,
                        mapping_path: Path | None = None) -> list[int]:
    """For each test image, the position of its reference sample in `reference_names`.

    Without a mapping, names match as in split files (with or without extension). With one, the
    mapping's column that names the test images is found by matching, so one file serves both
    directions (box dataset -> outlines and outlines -> boxes).
    """
    tests, refs = names_index(test_files), names_index(reference_names)
    if mapping is None:
        wanted = {file: file if file in refs else without_extension(file) for file in test_files}
    else:
        header, rows = mapping
        hits = [sum(row[c] in tests for row in rows) for c in (0, 1)]
        image_col = int(hits[1] > hits[0])
        if not hits[image_col]:
            raise ReferenceError(f"{mapping_path}: no name in column {header[0]!r} or {header[1]!r} is a test image; "
                                 "is reference.mapping meant for this dataset?")
        wanted = {}
        for row in rows:
            for i in tests.get(row[image_col], ()):
                wanted[test_files[i]] = row[1 - image_col]
        where = f"{mapping_path} (column {header[image_col]!r})"
    missing = [file for file in test_files if file not in wanted]
    if missing:
        raise ReferenceError(f"{len(missing)} test image(s) have no entry in {where}: {listing(missing)}. "
                             "The reference must cover every test image")
    unknown = sorted({wanted[file] for file in test_files if wanted[file] not in refs})
    if unknown and mapping is None:
        unmatched = [file for file in test_files if wanted[file] not in refs]
        raise ReferenceError(f"{len(unmatched)} test image(s) have no sample of the same name in the reference set: "
                             f"{listing(unmatched)}. Set reference.mapping (a CSV under {REFERENCE_MAPPINGS_DIR}/) "
                             "when the names differ")
    if unknown:
        raise ReferenceError(f"{len(unknown)} name(s) in {where} match no sample of the reference set: "
                             f"{listing(unknown)}. Is the reference set the one the mapping describes?")
    ambiguous = sorted({wanted[file] for file in test_files if len(refs[wanted[file]]) > 1})
    if ambiguous:
        raise ReferenceError(f"reference name(s) {listing(ambiguous)} match several samples of the reference set "
                             "(the same name in several folders or with several extensions); map to full names")
    return [refs[wanted[file]][0] for file in test_files]


def reference_masks(reference_dir: Path, test_rows: pd.DataFrame,
                    mapping_path: Path | None = None) -> tuple[list[str], list[np.ndarray]]:
    """(reference names, masks) for the index.csv rows of the test images, each mask at its image's
    original height x width."""
    samples, _ = read_layout(reference_dir)
    mapping = read_mapping(mapping_path) if mapping_path is not None else None
    picks = pair_with_reference(test_rows["file"].tolist(), [s.name for s in samples], mapping, mapping_path)
    masks = []
    for pick, height, width in zip(picks, test_rows["height"], test_rows["width"]):
        sample = samples[pick]
        mask = sample_mask(sample, sample.height, sample.width)
        if mask is None:
            raise ReferenceError(f"{sample.mask_file}: reference mask cannot be decoded; replace or remove it")
        if mask.shape != (height, width):
            mask = cv2.resize(mask, (int(width), int(height)), interpolation=cv2.INTER_NEAREST)
        masks.append(mask)
    return [samples[i].name for i in picks], masks
