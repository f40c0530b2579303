"""Lesion-level metrics on one slice (pure numpy/cv2): boundary distance and tumor detection.

- HD95: the 95th percentile of the distances from each boundary pixel of one mask to the nearest
  boundary pixel of the other, both directions pooled (as MedPy's hd95); undefined (NaN) unless
  both masks are non-empty.
- Detection: a true tumor (8-connected component of the truth) counts as found when any predicted
  pixel overlaps it.
- Box agreement, fair to box labels (the Kaggle dataset's): the bounding box of the whole predicted
  mask against that of the whole truth, as Dice and IoU of the two rectangles, and a localisation
  hit when the predicted box's centre lies inside the truth's box.
- Component boxes: a mask as box labels would draw it (each tumor's bounding box, filled), so that a
  model trained on boxes can be scored, selected and tuned against boxes without ever seeing an outline.
"""

from __future__ import annotations

import cv2
import numpy as np

_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def _boundary(mask: np.ndarray) -> np.ndarray:
    mask = mask.astype(np.uint8)
    return mask & ~cv2.erode(mask, _CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0) & 1


def hausdorff95(pred: np.ndarray, truth: np.ndarray) -> float:
    if not pred.any() or not truth.any():
        return float("nan")
    pred_edge, truth_edge = _boundary(pred), _boundary(truth)
    # distanceTransform measures the distance to the nearest zero pixel, so zero the edges.
    to_truth = cv2.distanceTransform((1 - truth_edge).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    to_pred = cv2.distanceTransform((1 - pred_edge).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    distances = np.concatenate([to_truth[pred_edge > 0], to_pred[truth_edge > 0]])
    return float(np.percentile(distances, 95))


def tumors_found(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """(true tumors overlapped by the prediction, true tumors)."""
    count, labels = cv2.connectedComponents(truth.astype(np.uint8), connectivity=8)
    if count <= 1:
        return 0, 0
    hit = np.unique(labels[(pred > 0) & (labels > 0)])
    return len(hit), count - 1


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), half-open pixel bounds of the non-zero pixels, or None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def box_agreement(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """(box Dice, box IoU, localisation hit) of the masks' bounding boxes.

    Both empty: Dice and IoU 1 (as for pixels); exactly one empty: 0. The hit is 1 or 0 on slices
    with a tumor (a missed tumor is 0) and NaN on tumor-free slices.
    """
    p, t = bounding_box(pred), bounding_box(truth)
    if p is None or t is None:
        agree = float(p is None and t is None)
        return agree, agree, (float("nan") if t is None else 0.0)
    area_p, area_t = (p[2] - p[0]) * (p[3] - p[1]), (t[2] - t[0]) * (t[3] - t[1])
    inter = max(0, min(p[2], t[2]) - max(p[0], t[0])) * max(0, min(p[3], t[3]) - max(p[1], t[1]))
    dice = 2 * inter / (area_p + area_t)
    iou = inter / (area_p + area_t - inter)
    cx, cy = (p[0] + p[2]) / 2, (p[1] + p[3]) / 2
    hit = float(t[0] <= cx <= t[2] and t[1] <= cy <= t[3])
    return dice, iou, hit


def box_margin(length: int, span: float) -> int:
    """Pixels left out at each end of a box side `length` long when only its central `span` share
    counts (train.box.span: loose boxes)."""
    return int(length * (1.0 - span) / 2)


def component_boxes(masks: np.ndarray, span: float = 1.0) -> np.ndarray:
    """uint8 {0, 1} masks (H x W, or N x H x W) with each 8-connected component replaced by its filled
    bounding box: what a box annotator would have drawn for the same tumors. With `span` < 1 each
    box keeps only its central share of each side: where a tumor in a box that loose must reach."""
    if masks.ndim == 3:
        return np.stack([component_boxes(m, span) for m in masks]) if len(masks) else masks.astype(np.uint8)
    boxes = np.zeros(masks.shape, np.uint8)
    if not masks.any():
        return boxes
    _, _, stats, _ = cv2.connectedComponentsWithStats(masks.astype(np.uint8), connectivity=8)
    for x, y, w, h, _ in stats[1:]:
        mx, my = box_margin(w, span), box_margin(h, span)
        boxes[y + my:y + h - my, x + mx:x + w - mx] = 1
    return boxes


def scored_boxes(label_boxes: np.ndarray, span: float) -> np.ndarray:
    """The boxes a box-trained model's component boxes are scored against on validation: the label
    boxes themselves when they are tight (span 1), else the central `span` share of each."""
    return component_boxes(label_boxes, span) if span < 1.0 else label_boxes
