"""Preprocess: decode every image once, build its mask, resize, and store arrays.

Output folder (written to a temporary folder, then renamed into place):
- images.npy, masks.npy: uint8 N x S x S (masks in {0, 1}); training memory-maps them.
- pseudo_masks.npy (with preprocess.pseudo_masks): uint8 N x S x S, tumor outlines drawn from the box
  labels at up to preprocess.pseudo_mask_size px (`masks.grabcut_pseudo_mask`), for train.labels: pseudo.
- index.csv: one row per array row: file, split, group, height, width, tumor_pixels
  (height, width: original size in pixels; tumor_pixels counted at that size).
- skipped.csv: split, file, problem of each image `preprocess.on_bad_image: skip` left out.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from brainseg.io import atomic_write_bytes, staging_dir
from brainseg.data.index import INDEX_COLUMNS, PSEUDO_MASKS_FILE
from brainseg.data.layout import DROP_REASONS, LayoutStats, Sample, read_layout
from brainseg.data.masks import decode_rle, grabcut_pseudo_mask, rasterize_polygons
from brainseg.errors import BrainsegError
from brainseg.inference import resize_to_model
from brainseg.imaging import read_grayscale

SKIPPED_FILE = "skipped.csv"


class BadImageError(BrainsegError, ValueError):
    """Image files that are missing or could not be decoded; the message lists every one."""


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Area-resample then threshold at half coverage, so thin or small lesions keep their extent."""
    resized = cv2.resize(mask * np.uint8(255), (size, size), interpolation=cv2.INTER_AREA)
    return (resized >= 128).astype(np.uint8)


def read_mask_file(path: Path) -> np.ndarray | None:
    """Any non-zero channel is tumor: covers 0/255 and 0/1 masks, 8 or 16 bit, gray or RGB."""
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        return None
    if mask.ndim == 3:
        mask = mask[:, :, :3]  # an alpha channel is opacity, not label
        return (mask > 0).any(axis=2).astype(np.uint8)
    return (mask > 0).astype(np.uint8)


def _coco_mask(sample: Sample, height: int, width: int) -> np.ndarray:
    polygons = sample.polygons
    if (height, width) != (sample.height, sample.width):
        # Annotations are in the coordinates the annotation file declares; scale them to the pixels.
        scale = np.array([width / sample.width, height / sample.height])
        polygons = [p * scale for p in polygons]
    mask = rasterize_polygons(polygons, height, width)
    for counts, rle_height, rle_width in sample.rles:
        rle = decode_rle(counts, rle_height, rle_width)
        if rle.shape != (height, width):
            rle = cv2.resize(rle, (width, height), interpolation=cv2.INTER_NEAREST)
        mask |= rle
    return mask


def load_sample(sample: Sample, size: int, pseudo_mask_size: int | None = None
                ) -> tuple[np.ndarray, np.ndarray, int, int, int, np.ndarray | None] | str:
    """(image, mask, tumor pixels, original height, width, pseudo-mask or None), or why the sample cannot
    be used. The pseudo-mask is drawn at the original size (GrabCut needs the pixels) when
    `pseudo_mask_size` is given, then resized like the mask."""
    if not sample.file.is_file():
        return f"{sample.file} (missing)"
    if sample.mask_file is not None:
        mask = read_mask_file(sample.mask_file)
        if mask is None:
            return f"{sample.mask_file} (mask missing or cannot be decoded)"
    image = read_grayscale(sample.file)
    if isinstance(image, str):
        return f"{sample.file} ({image})"
    height, width = image.shape
    if sample.mask_file is not None and mask.shape != (height, width):
        return f"{sample.file} (image is {height}x{width}, its mask {mask.shape[0]}x{mask.shape[1]})"
    if sample.mask_file is None:
        mask = _coco_mask(sample, height, width)
    tumor_pixels = cv2.countNonZero(mask)
    pseudo = None if pseudo_mask_size is None else resize_mask(grabcut_pseudo_mask(image, mask, pseudo_mask_size), size)
    image = resize_to_model(image, size)
    small = resize_mask(mask, size) if tumor_pixels else np.zeros((size, size), np.uint8)
    return image, small, tumor_pixels, height, width, pseudo


def original_masks(raw_dir: Path, index_rows, categories: Sequence[str] = ()) -> list[np.ndarray]:
    """Truth masks at each image's original size for the given index.csv rows (evaluation).

    Rebuilt from data/raw rather than stored: preprocess keeps only the resized arrays.
    """
    samples, _ = read_layout(raw_dir, categories)
    by_key = {(s.split, s.name): s for s in samples}
    return [sample_mask(by_key[(row.split, row.file)], int(row.height), int(row.width))
            for row in index_rows.itertuples()]


def sample_mask(sample: Sample, height: int, width: int) -> np.ndarray | None:
    """The sample's truth mask: its mask file as stored, or its annotations rasterised at height x width
    (its image's size); None when the mask file cannot be decoded."""
    if sample.mask_file is not None:
        return read_mask_file(sample.mask_file)
    return _coco_mask(sample, height, width)


def preprocess(raw_dir: Path, out_dir: Path, size: int, categories: Sequence[str] = (),
               on_bad_image: str = "error", plot_path: Path | None = None, pseudo_mask_size: int | None = None) -> dict:
    """Write the arrays and index for the dataset at `raw_dir`; return the audit (flat numbers).

    on_bad_image: "error" raises naming every missing or undecodable file; "skip" drops them
    and counts them in the audit. plot_path: where to write the tumor-area histogram.
    pseudo_mask_size: also draw GrabCut pseudo-masks from the labels (pseudo_masks.npy), at up to this size.
    """
    samples, stats = read_layout(raw_dir, categories)
    # cv2 releases the GIL while decoding, resizing and cutting, so threads scale across cores.
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        results = list(tqdm(pool.map(lambda s: load_sample(s, size, pseudo_mask_size), samples), total=len(samples),
                            desc="preprocess" + (" + GrabCut" if pseudo_mask_size else ""), unit="img",
                            mininterval=1.0))
    bad = [r for r in results if isinstance(r, str)]
    if bad and on_bad_image != "skip":
        raise BadImageError(f"{len(bad)} image(s) are missing or could not be decoded; fix or remove them, or set "
                            "preprocess.on_bad_image: skip: " + ", ".join(bad))
    kept = [(s, r) for s, r in zip(samples, results) if not isinstance(r, str)]
    if not kept:
        raise BadImageError(f"{raw_dir}: none of the {len(samples)} images could be read: " + ", ".join(bad[:10]))

    pseudo_audit = {}  # the pseudo-masks' own audit entries, when they are drawn
    with staging_dir(out_dir) as staging:
        images = np.lib.format.open_memmap(staging / "images.npy", "w+", np.uint8, (len(kept), size, size))
        masks = np.lib.format.open_memmap(staging / "masks.npy", "w+", np.uint8, (len(kept), size, size))
        rows = []
        for i, (sample, (image, mask, tumor_pixels, height, width, _)) in enumerate(kept):
            images[i], masks[i] = image, mask
            rows.append([sample.name, sample.split, sample.group, height, width, tumor_pixels])
        images.flush()
        masks.flush()
        if pseudo_mask_size is not None:
            pseudo = np.stack([result[5] for _, result in kept])
            np.save(staging / PSEUDO_MASKS_FILE, pseudo)
            pseudo_audit["pseudo_mask_label_share"] = pseudo_mask_label_share(masks, pseudo)
        del images, masks
        index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
        index.to_csv(staging / "index.csv", index=False)
        # Which files on_bad_image: skip dropped, and why (header only when none were).
        pd.DataFrame([(s.split, s.name, r) for s, r in zip(samples, results) if isinstance(r, str)],
                     columns=["split", "file", "problem"]).to_csv(staging / SKIPPED_FILE, index=False)
    if plot_path is not None:
        plot_tumor_area(index, plot_path)
    return audit(index, stats, skipped=len(bad)) | pseudo_audit


def pseudo_mask_label_share(masks: np.ndarray, pseudo: np.ndarray) -> float:
    """Mean over labelled slices of the share of their label pixels the pseudo-mask keeps (N x S x S).

    A check that needs no outlines: boxes drawn around tumors hold about 0.4 tumor (the Kaggle boxes:
    0.39 against the expert outlines), an inscribed ellipse pi/4."""
    label_pixels = masks.reshape(len(masks), -1).sum(1, dtype=np.int64)
    labelled = label_pixels > 0
    if not labelled.any():
        return 0.0
    kept = (masks & pseudo).reshape(len(masks), -1).sum(1, dtype=np.int64)
    return round(float(np.mean(kept[labelled] / label_pixels[labelled])), 6)


def tumor_area_fraction(index: pd.DataFrame) -> pd.Series:
    """Tumor share of the image, for images that have a tumor."""
    has_tumor = index["tumor_pixels"] > 0
    return index.loc[has_tumor, "tumor_pixels"] / (index["height"] * index["width"])[has_tumor]


def audit(index: pd.DataFrame, stats: LayoutStats, skipped: int = 0) -> dict:
    """Dataset facts worth tracking: counts, tumor-free share, tumor sizes, label shapes, leakage."""
    per_split = index.groupby("split").size().to_dict()
    area = tumor_area_fraction(index)
    quantiles = {f"tumor_area_fraction_{name}": round(float(area.quantile(q)), 6) if len(area) else 0.0
                 for name, q in (("p10", 0.1), ("median", 0.5), ("p90", 0.9))}
    group_sizes = index.groupby("group").size()
    splits_per_group = index.groupby("group")["split"].nunique()
    return {
        "images": int(len(index)),
        **{f"images_{k}": int(v) for k, v in sorted(per_split.items())},
        "images_skipped": skipped,
        "tumor_free_fraction": round(float((index["tumor_pixels"] == 0).mean()), 6),
        **quantiles,
        "tumor_area_fraction_max": round(float(area.max()), 6) if len(area) else 0.0,
        "annotations": stats.annotations,
        "polygons": stats.polygons,
        "polygons_skipped_degenerate": stats.degenerate_polygons,
        "polygon_vertices_median": float(np.median(stats.polygon_vertices)) if stats.polygon_vertices else 0.0,
        "rectangle_fraction": round(stats.rectangles / stats.polygons, 6) if stats.polygons else 0.0,
        "rle_annotations": stats.rle_annotations,
        "box_annotations": stats.box_annotations,
        "annotations_orphaned": stats.orphan_annotations,
        **{f"annotations_dropped_{reason}": stats.dropped_annotations.get(reason, 0)
           for reason in DROP_REASONS},
        "masks_orphaned": stats.orphan_masks,
        "groups": int(len(group_sizes)),
        "groups_duplicated": int((group_sizes > 1).sum()),
        "groups_cross_split": int((splits_per_group > 1).sum()),
    }


def plot_tumor_area(index: pd.DataFrame, path: Path) -> None:
    # A bare Figure renders without pyplot, so no display or global backend is involved.
    from matplotlib.figure import Figure

    area = tumor_area_fraction(index) * 100
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.hist(area, bins=40, color="tab:red")
    ax.set_xlabel("tumor area (% of image)")
    ax.set_ylabel("images")
    ax.set_title(f"Tumor area, {len(area)} images with tumor ({int((index['tumor_pixels'] == 0).sum())} without)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())
