"""Lesion-level metrics on one slice (pure numpy/cv2): boundary distance and tumor detection.

- HD95: the 95th percentile of the distances from each boundary pixel of one mask to the nearest
  boundary pixel of the other, both directions pooled (as MedPy's hd95); undefined (NaN) unless
  both masks are non-empty.
- Detection: a true tumor (8-connected component of the truth) counts as found when any predicted
  pixel overlaps it.
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
