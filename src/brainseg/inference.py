"""The inference contract: how a slice becomes the model's input, and how the model's
probabilities become a mask at the slice's own size.

Preprocess (training data), evaluate (the tuned, scored masks) and brainseg-predict (new scans)
all go through these functions, so a model is always run as it was evaluated. numpy and cv2 only:
deployments import this module without torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from brainseg.errors import BrainsegError

# model.json's schema: 2 holds the threshold inside "postprocess" (1 had it at the top level); 3 adds
# max_components, which a reader of 2 would ignore and so draw other masks. A 2 reads as max_components 0.
MODEL_FORMAT_VERSION = 3
READABLE_FORMAT_VERSIONS = (2, 3)
TTA_MEANING = "average the probabilities of the slice and of its left-right mirror image"
MIN_COMPONENT_MEANING = "drop predicted components smaller than this, counted at the model's input size"
MAX_COMPONENTS_MEANING = "with max_components > 0 keep only that many of the largest remaining components"


@dataclass(frozen=True)
class PostProcess:
    """Chosen on validation by the evaluate stage (models/postprocess.json) and carried into the
    exported model's description (model.json); every consumer applies it through `mask_at_size`."""
    threshold: float = 0.5
    tta: bool = False
    min_component_px: int = 0
    max_components: int = 0  # 0 keeps every component

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must lie strictly between 0 and 1, got {self.threshold}")
        for name in ("min_component_px", "max_components"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, raw: dict) -> PostProcess:
        """From postprocess.json or model.json's `postprocess` block (extra keys such as the meanings are
        ignored; format 2 descriptions, which have no max_components, kept every component)."""
        try:
            return cls(threshold=float(raw["threshold"]), tta=bool(raw["tta"]),
                       min_component_px=int(raw["min_component_px"]), max_components=int(raw.get("max_components", 0)))
        except KeyError as err:
            raise ValueError(f"the post-processing lacks {err.args[0]!r}") from None

    def to_dict(self) -> dict:
        return asdict(self)


def read_postprocess(path: Path) -> PostProcess:
    """The evaluate stage's choice, from its output file; a broken file is an error naming it."""
    try:
        return PostProcess.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, AttributeError) as err:
        raise BrainsegError(f"{path} is not a post-processing description ({err}); rerun the evaluate stage") from None


def resize_to_model(gray: np.ndarray, size: int) -> np.ndarray:
    """A uint8 slice at the model's size x size: area interpolation, which averages rather than
    skips pixels when shrinking (preprocess stores this; brainseg-predict feeds it)."""
    return cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)


def unit_range(images: np.ndarray) -> np.ndarray:
    """uint8 intensities -> float32 in [0, 1], the model's input (it standardises each slice itself)."""
    return images.astype(np.float32) / 255.0


def merge_flipped(plain: np.ndarray, of_mirrored: np.ndarray) -> np.ndarray:
    """Flip TTA: the mean of the probabilities of slices (... x H x W) and those the model gave their
    left-right mirror images, flipped back."""
    return (plain + of_mirrored[..., ::-1]) / 2


def filter_components(mask: np.ndarray, min_pixels: int, max_components: int = 0) -> np.ndarray:
    """uint8 {0, 1} mask without the 8-connected components of fewer than `min_pixels` pixels and,
    with `max_components` > 0, without all but that many of the largest of the rest (ties: the first
    in scan order). One tumor per slice makes max_components 1 drop every false positive elsewhere."""
    mask = np.asarray(mask, dtype=np.uint8)  # no copy when it already is one
    if (min_pixels <= 1 and max_components == 0) or not mask.any():
        return mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.zeros(count, dtype=np.uint8)
    keep[1:] = areas >= min_pixels
    if max_components and keep.sum() > max_components:
        by_size = np.argsort(-areas, kind="stable")  # largest first
        keep[1 + by_size[max_components:]] = 0
    return keep[labels]


def binarize(probs: np.ndarray, threshold: float, min_pixels: int = 0, max_components: int = 0) -> np.ndarray:
    """Masks (uint8 {0, 1}) at the model's size for one H x W map or a batch N x H x W."""
    masks = (probs >= threshold).astype(np.uint8)
    if masks.ndim == 2:
        return filter_components(masks, min_pixels, max_components)
    for i, mask in enumerate(masks):  # in place: the validation sweep calls this for every setting
        masks[i] = filter_components(mask, min_pixels, max_components)
    return masks


def mask_at_size(prob: np.ndarray, shape: tuple[int, int], post: PostProcess) -> np.ndarray:
    """The uint8 {0, 1} mask of one H x W probability map at `shape` (the slice's own height, width).

    Only the kept components' probabilities are resized (bilinear), then thresholded (>=): the
    outline follows the probability map between pixels rather than the model's pixel grid.
    """
    kept = prob * binarize(prob, post.threshold, post.min_component_px, post.max_components)
    full = cv2.resize(kept, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return (full >= post.threshold).astype(np.uint8)
