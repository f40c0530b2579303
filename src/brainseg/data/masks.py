"""Annotation geometry -> binary masks (pure functions)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def polygon_to_points(flat: Sequence[float]) -> np.ndarray | None:
    """COCO flat [x1, y1, x2, y2, ...] -> (K, 2) array, or None when it has fewer than 3 points."""
    points = np.asarray(flat, dtype=np.float64)
    if points.size % 2 or points.size < 6:
        return None
    return points.reshape(-1, 2)


def rasterize_polygons(polygons: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """Fill polygons given in COCO pixel coordinates into a uint8 {0, 1} mask.

    COCO coordinates are continuous: pixel (r, c) covers [c, c+1) x [r, r+1), so its centre is
    (c + 0.5, r + 0.5). A pixel is set when its centre lies inside a polygon (even-odd rule,
    half-open edges), so an integer box [x0, x1) x [y0, y1) fills exactly its (x1-x0)*(y1-y0)
    pixels and its mask's bounding box equals the box. Parts outside the image are clipped.
    cv2.fillPoly is not used because it also fills pixels the outline merely touches.
    """
    mask = np.zeros((height, width), dtype=np.uint8)
    for points in polygons:
        _fill_polygon(mask, np.asarray(points, dtype=np.float64))
    return mask


def _fill_polygon(mask: np.ndarray, points: np.ndarray) -> None:
    height, width = mask.shape
    x0, y0 = points[:, 0], points[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    first = max(int(np.floor(y0.min() - 0.5)), 0)
    last = min(int(np.ceil(y0.max() - 0.5)), height - 1)
    if last < first:
        return
    rows = np.arange(first, last + 1)
    yc = rows[:, None] + 0.5
    # An edge crosses a scanline when exactly one endpoint lies at or below it (half-open).
    crosses = (y0 <= yc) != (y1 <= yc)
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = x0 + (yc - y0) * (x1 - x0) / (y1 - y0)
    xs = np.sort(np.where(crosses, xs, np.inf), axis=1)
    n_pairs = crosses.sum(axis=1).max() // 2
    if n_pairs == 0:
        return
    starts, ends = xs[:, 0 : 2 * n_pairs : 2], xs[:, 1 : 2 * n_pairs : 2]
    valid = np.isfinite(ends)
    # Columns whose centres c + 0.5 fall in [start, end).
    c_start = np.clip(np.ceil(np.where(valid, starts, 0) - 0.5), 0, width).astype(np.int64)
    c_end = np.clip(np.ceil(np.where(valid, ends, 0) - 0.5), 0, width).astype(np.int64)
    coverage = np.zeros((len(rows), width + 1), dtype=np.int32)
    row_idx = np.broadcast_to(np.arange(len(rows))[:, None], c_start.shape)
    np.add.at(coverage, (row_idx[valid], c_start[valid]), 1)
    np.add.at(coverage, (row_idx[valid], c_end[valid]), -1)
    mask[rows] |= (np.cumsum(coverage, axis=1)[:, :width] > 0).astype(np.uint8)


def rle_counts(counts: Sequence[int] | str) -> list[int]:
    """COCO RLE counts: an uncompressed list, or the compressed string pycocotools writes.

    The string packs each count into 5-bit chunks (offset by 48 to printable characters, 0x20 =
    more chunks follow, 0x10 in the last chunk = negative); from the fourth count on, each is
    stored as the difference to the count two places earlier (same pixel value).
    """
    if not isinstance(counts, str):
        values = [int(c) for c in counts]
        if any(c < 0 for c in values):
            raise ValueError("negative run length")
        return values
    values: list[int] = []
    pos = 0
    while pos < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(counts):
                raise ValueError("compressed counts end inside a number")
            chunk = ord(counts[pos]) - 48
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            pos += 1
            shift += 5
            if not more and chunk & 0x10:
                value |= -1 << shift
        if len(values) > 2:
            value += values[-2]
        if value < 0:
            raise ValueError("negative run length")
        values.append(value)
    return values


def decode_rle(counts: Sequence[int], height: int, width: int) -> np.ndarray:
    """Run lengths (alternating 0s and 1s, starting with 0s) over the pixels in column-major order."""
    values = np.zeros(len(counts), dtype=np.uint8)
    values[1::2] = 1
    flat = np.repeat(values, np.asarray(counts, dtype=np.int64))
    # COCO runs down columns first (Fortran order), as pycocotools does.
    return np.ascontiguousarray(flat.reshape(width, height).T)
