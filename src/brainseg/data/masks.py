"""Annotation geometry -> binary masks (pure functions)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def _finite_numbers(values: Sequence[float], what: str) -> np.ndarray:
    """ValueError unless `values` is a list of finite numbers: a NaN or infinite vertex has no place in
    the image, and dropping it would silently change the shape."""
    if not isinstance(values, (list, tuple)) or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise ValueError(f"{what} must be a list of numbers, got {str(values)[:80]}")
    numbers = np.asarray(values, dtype=np.float64)
    if not np.isfinite(numbers).all():
        raise ValueError(f"{what} has coordinates that are not finite: {str(values)[:80]}")
    return numbers


def polygon_to_points(flat: Sequence[float]) -> np.ndarray | None:
    """COCO flat [x1, y1, x2, y2, ...] -> (K, 2) array, or None when it has fewer than 3 points."""
    points = _finite_numbers(flat, "a polygon")
    if points.size % 2 or points.size < 6:
        return None
    return points.reshape(-1, 2)


def box_to_points(bbox: Sequence[float]) -> np.ndarray:
    """COCO bbox [x, y, width, height] -> the 4 corners of its rectangle."""
    values = _finite_numbers(bbox, "a bbox")
    if values.size != 4 or values[2] <= 0 or values[3] <= 0:
        raise ValueError(f"a bbox must be [x, y, width, height] with positive width and height, got {bbox}")
    x, y, w, h = values
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])


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
    # Edge e crosses the scanline of row r when its centre r + 0.5 lies in [min(y), max(y)):
    # exactly one endpoint at or below it (half-open, so shared vertices count once).
    row_from = np.clip(np.ceil(np.minimum(y0, y1) - 0.5), 0, height).astype(np.int64)
    row_to = np.clip(np.ceil(np.maximum(y0, y1) - 0.5), 0, height).astype(np.int64)
    counts = np.maximum(row_to - row_from, 0)
    total = int(counts.sum())
    if total == 0:
        return
    # One entry per (edge, row) crossing: O(perimeter), not O(rows x edges).
    edge = np.repeat(np.arange(len(counts)), counts)
    rows = row_from[edge] + np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    yc = rows + 0.5
    xs = x0[edge] + (yc - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
    order = np.lexsort((xs, rows))
    rows, xs = rows[order], xs[order]
    # A closed polygon crosses every scanline an even number of times; sorted crossings pair up
    # into the inside spans (even-odd rule). Columns whose centres c + 0.5 lie in [start, end):
    span_rows = rows[0::2]
    starts = np.clip(np.ceil(xs[0::2] - 0.5), 0, width).astype(np.int64)
    ends = np.clip(np.ceil(xs[1::2] - 0.5), 0, width).astype(np.int64)
    # Difference array over the polygon's bounding box: +1 at each span start, -1 at its end.
    first, last = int(span_rows[0]), int(span_rows[-1])
    left, right = int(starts.min()), int(ends.max())
    stride = right - left + 1
    local = (span_rows - first) * stride - left
    size = (last - first + 1) * stride
    diff = np.bincount(local + starts, minlength=size) - np.bincount(local + ends, minlength=size)
    inside = np.cumsum(diff).reshape(-1, stride)[:, :-1] > 0
    mask[first : last + 1, left:right] |= inside.view(np.uint8)


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


def inscribed_ellipses(masks: np.ndarray) -> np.ndarray:
    """uint8 {0, 1} box masks (H x W, or N x H x W) -> each 8-connected component replaced by the filled
    ellipse inscribed in its smallest enclosing rectangle, rotated or not.

    The ellipse touches every side of its box, as a tumor does in a tight box, and keeps pi/4 of the
    box's area. Rotated rectangles (boxes after rotate/scale/shift augmentation) get the rotated
    ellipse, so the target can be drawn after augmentation and still match the image. A pixel is
    set when its centre lies inside the ellipse (cv2.ellipse draws a polygon and spills over).
    """
    if masks.ndim == 3:
        return np.stack([inscribed_ellipses(m) for m in masks]) if len(masks) else masks.astype(np.uint8)
    ellipses = np.zeros(masks.shape, np.uint8)
    count, components = cv2.connectedComponents(masks.astype(np.uint8), connectivity=8)
    for component in range(1, count):
        ys, xs = np.nonzero(components == component)
        # The smallest rectangle through the pixel centres, widened on both axes by the margin that
        # gives it the component's own area in pixels: one pixel for an upright box, less for a
        # rotated one. Two adjacent corners give the axes, whatever the angle.
        rect = cv2.minAreaRect(np.stack([xs, ys], 1).astype(np.float32))
        corner, *adjacent = cv2.boxPoints(rect)[[1, 0, 2]].astype(np.float64)
        axes = [side - corner for side in adjacent]
        lengths = [float(np.hypot(*axis)) for axis in axes]
        spread = lengths[0] + lengths[1]
        margin = max(0.0, (np.sqrt(spread ** 2 - 4 * (lengths[0] * lengths[1] - len(xs))) - spread) / 2)
        rows, cols = np.mgrid[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        dx, dy = cols - rect[0][0], rows - rect[0][1]
        inside = np.zeros(rows.shape)
        for axis, length in zip(axes, lengths):
            unit = axis / length if length else np.zeros(2)
            inside += ((dx * unit[0] + dy * unit[1]) / ((length + margin) / 2)) ** 2
        ellipses[rows, cols] |= (inside <= 1.0 + 1e-6).astype(np.uint8)
    return ellipses


# GrabCut pseudo-masks: the share of each box's half-sides that the sure-tumor core spans.
GRABCUT_CORE = 1 / 3
GRABCUT_ITERATIONS = 5


def _central_boxes(masks: np.ndarray, share: float) -> np.ndarray:
    """Each 8-connected component's bounding box shrunk about its centre to `share` of its sides."""
    central = np.zeros(masks.shape, np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(masks.astype(np.uint8), connectivity=8)
    for x, y, width, height, _ in stats[1:count]:
        keep_w, keep_h = max(1, round(width * share)), max(1, round(height * share))
        left, top = x + (width - keep_w) // 2, y + (height - keep_h) // 2
        central[top:top + keep_h, left:left + keep_w] = 1
    return central


def grabcut_pseudo_mask(image: np.ndarray, boxes: np.ndarray, work_size: int = 512) -> np.ndarray:
    """A tumor outline drawn from box labels by the image itself: OpenCV's GrabCut (Rother et al. 2004;
    as pseudo-labels from boxes, Khoreva et al., "Simple Does It", CVPR 2017).

    `image`: uint8 H x W; `boxes`: uint8 {0, 1} H x W, the filled label boxes. Outside every box is
    sure background, the ellipse inscribed in each box probable tumor, the rest of the box probable
    background, and the ellipse inscribed in the box's central third sure tumor; GrabCut then fits
    intensity models of tumor and background and cuts along the image's edges. Without the sure
    core it often takes nothing (a box drawn on an MRI slice holds more background than tumor).
    Computed at most `work_size` px on the longer side (cost grows with the pixels), returned at H x W,
    and deterministic (OpenCV's random generator is reset for its k-means). No box: all zeros.
    """
    height, width = boxes.shape
    if not boxes.any():
        return np.zeros((height, width), np.uint8)
    scale = min(1.0, work_size / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small_image = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1 else image
    small_boxes = cv2.resize(boxes, size, interpolation=cv2.INTER_NEAREST) if scale < 1 else boxes
    trimap = np.full(small_boxes.shape, cv2.GC_BGD, np.uint8)
    trimap[small_boxes > 0] = cv2.GC_PR_BGD
    trimap[inscribed_ellipses(small_boxes) > 0] = cv2.GC_PR_FGD
    trimap[inscribed_ellipses(_central_boxes(small_boxes, GRABCUT_CORE)) > 0] = cv2.GC_FGD
    if (trimap == cv2.GC_BGD).any():  # GrabCut needs background to model; a box over the whole slice leaves none
        cv2.setRNGSeed(0)
        colour = cv2.cvtColor(np.ascontiguousarray(small_image, np.uint8), cv2.COLOR_GRAY2BGR)
        cv2.grabCut(colour, trimap, None, np.zeros((1, 65)), np.zeros((1, 65)), GRABCUT_ITERATIONS,
                    cv2.GC_INIT_WITH_MASK)
    tumor = ((trimap == cv2.GC_FGD) | (trimap == cv2.GC_PR_FGD)).astype(np.uint8)
    return cv2.resize(tumor, (width, height), interpolation=cv2.INTER_NEAREST) if scale < 1 else tumor
