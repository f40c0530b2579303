"""Preprocess: decode every image once, rasterise its mask, resize, and store arrays.

Output folder (written to a temporary folder, then renamed into place):
- images.npy, masks.npy: uint8 N x S x S (masks in {0, 1}); training memory-maps them.
- index.csv: one row per array row: file, split, group, height, width, tumor_pixels.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from brainseg.data.archive import staging_dir
from brainseg.data.layout import LayoutStats, Sample, read_layout
from brainseg.data.masks import rasterize_polygons
from brainseg.errors import BrainsegError

INDEX_COLUMNS = ["file", "split", "group", "height", "width", "tumor_pixels"]


class BadImageError(BrainsegError, ValueError):
    """Image files that could not be decoded; the message lists every one."""


def read_index(processed_dir: Path) -> pd.DataFrame:
    return pd.read_csv(processed_dir / "index.csv", dtype={"file": str, "split": str, "group": str},
                       keep_default_na=False)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Area-resample then threshold at half coverage, so thin or small lesions keep their extent."""
    resized = cv2.resize(mask * np.uint8(255), (size, size), interpolation=cv2.INTER_AREA)
    return (resized >= 128).astype(np.uint8)


def load_sample(sample: Sample, size: int) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Decode, rasterise and resize one sample; None when the image cannot be read."""
    image = cv2.imread(str(sample.file), cv2.IMREAD_GRAYSCALE)
    if image is None:
        return None
    height, width = image.shape
    if (height, width) != (sample.height, sample.width):
        # Annotations are in the coordinates the annotation file declares; scale them to the pixels.
        scale = np.array([width / sample.width, height / sample.height])
        polygons = [p * scale for p in sample.polygons]
    else:
        polygons = sample.polygons
    mask = rasterize_polygons(polygons, height, width)
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return image, resize_mask(mask, size), int(mask.sum())


def preprocess(raw_dir: Path, out_dir: Path, size: int) -> dict:
    samples, stats = read_layout(raw_dir)
    # cv2 releases the GIL while decoding and resizing, so threads scale across cores.
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        results = list(tqdm(pool.map(lambda s: load_sample(s, size), samples), total=len(samples),
                            desc="preprocess", unit="img"))
    bad = [str(s.file) for s, r in zip(samples, results) if r is None]
    if bad:
        raise BadImageError(f"{len(bad)} image(s) could not be decoded; fix or remove them: " + ", ".join(bad))

    with staging_dir(out_dir) as staging:
        images = np.lib.format.open_memmap(staging / "images.npy", "w+", np.uint8, (len(samples), size, size))
        masks = np.lib.format.open_memmap(staging / "masks.npy", "w+", np.uint8, (len(samples), size, size))
        rows = []
        for i, (sample, (image, mask, tumor_pixels)) in enumerate(zip(samples, results)):
            images[i], masks[i] = image, mask
            rows.append([sample.file.name, sample.split, sample.group, sample.height, sample.width, tumor_pixels])
        images.flush()
        masks.flush()
        del images, masks
        index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
        index.to_csv(staging / "index.csv", index=False)
    return audit(index, stats)


def audit(index: pd.DataFrame, stats: LayoutStats) -> dict:
    """Dataset facts worth tracking: counts, tumor-free share, label shapes."""
    per_split = index.groupby("split").size().to_dict()
    tumor_free = index["tumor_pixels"] == 0
    area = index.loc[~tumor_free, "tumor_pixels"] / (index["height"] * index["width"])[~tumor_free]
    return {
        "images": int(len(index)),
        **{f"images_{k}": int(v) for k, v in sorted(per_split.items())},
        "tumor_free_fraction": round(float(tumor_free.mean()), 6),
        "tumor_area_fraction_median": round(float(area.median()), 6) if len(area) else 0.0,
        "annotations": stats.annotations,
        "polygons": stats.polygons,
        "polygons_skipped_degenerate": stats.degenerate_polygons,
        "annotations_orphaned": stats.orphan_annotations,
        "rectangle_fraction": round(stats.rectangles / stats.polygons, 6) if stats.polygons else 0.0,
    }
