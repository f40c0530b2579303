"""Probability maps -> masks: threshold, then drop connected components smaller than a size.

Shared by evaluation (which tunes both on validation) and inference (numpy and cv2 only).
"""

from __future__ import annotations

import cv2
import numpy as np


def remove_small_components(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """uint8 {0, 1} mask without the 8-connected components of fewer than `min_pixels` pixels."""
    mask = mask.astype(np.uint8)
    if min_pixels <= 1 or not mask.any():
        return mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = np.zeros(count, dtype=np.uint8)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_pixels
    return keep[labels]


def binarize(probs: np.ndarray, threshold: float, min_pixels: int = 0) -> np.ndarray:
    """Masks (uint8 {0, 1}) for one H x W map or a batch N x H x W."""
    masks = (probs >= threshold).astype(np.uint8)
    if min_pixels <= 1:
        return masks
    if masks.ndim == 2:
        return remove_small_components(masks, min_pixels)
    return np.stack([remove_small_components(m, min_pixels) for m in masks])
