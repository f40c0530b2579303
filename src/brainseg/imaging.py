"""Image decoding shared by preprocessing and inference (numpy and cv2 only: no torch, no pandas)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def to_uint8(image: np.ndarray) -> np.ndarray:
    """16-bit (or float) slices scaled by their own maximum.

    MRI intensities have no absolute unit (they depend on scanner, coil and protocol), and 16-bit
    exports often use only a few thousand levels: OpenCV's default 16->8 bit shift would leave such
    slices nearly black. Per-image max scaling keeps the full contrast of each slice.
    """
    if image.dtype == np.uint8:
        return image
    image = np.nan_to_num(image.astype(np.float32)).clip(min=0)
    peak = float(image.max())
    return np.zeros(image.shape, np.uint8) if peak == 0 else np.rint(image * (255.0 / peak)).astype(np.uint8)


def read_grayscale(path: Path) -> np.ndarray | None:
    """Grayscale uint8 at full resolution, or None if undecodable.

    Always a full decode (then area resizing by the caller): the exported model's preprocessing
    contract is the same two steps, so training and inference see identical pixels (libjpeg's
    reduced-scale decode would be ~15% faster here but would not match).
    """
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
    return None if image is None else to_uint8(image)
