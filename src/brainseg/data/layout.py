"""Dataset layouts on disk -> a list of samples (image file + tumor polygons).

Supported: Roboflow COCO split folders, as in the Kaggle dataset
`pkdarabi/brain-tumor-image-dataset-semantic-segmentation`:
`train/ valid/ test/`, each with images and one `_annotations.coco.json`.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brainseg.data.masks import polygon_to_points
from brainseg.errors import BrainsegError

COCO_FILE = "_annotations.coco.json"
SPLIT_NAMES = ("train", "valid", "test")
# Roboflow names exports `<source>_<ext>.rf.<hash>.<ext>`; the source identifies the original slice.
_ROBOFLOW_NAME = re.compile(r"^(?P<source>.+)_(?:jpe?g|png|bmp|tiff?)\.rf\.[0-9a-f]+\.", re.IGNORECASE)


class LayoutError(BrainsegError, ValueError):
    """The folder does not hold a supported dataset layout; the message lists what was seen."""


@dataclass
class Sample:
    file: Path
    split: str  # split as given by the dataset: train / valid / test
    group: str  # source id: copies of one original slice share it
    height: int
    width: int
    polygons: list[np.ndarray] = field(default_factory=list)


@dataclass
class LayoutStats:
    annotations: int = 0
    polygons: int = 0
    rectangles: int = 0
    degenerate_polygons: int = 0
    orphan_annotations: int = 0


def group_id(file_name: str) -> str:
    match = _ROBOFLOW_NAME.match(file_name)
    return match.group("source") if match else Path(file_name).stem


def _describe(folder: Path) -> str:
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    shown = ", ".join(entries[:12]) + (f", ... ({len(entries)} entries)" if len(entries) > 12 else "")
    return shown or "nothing"


def find_dataset_root(folder: Path) -> Path:
    """The folder holding the split folders, descending through single-folder wrappers."""
    current = folder
    while True:
        if any((current / s / COCO_FILE).is_file() for s in SPLIT_NAMES):
            return current
        children = [p for p in current.iterdir() if not p.name.startswith(".")]
        if len(children) == 1 and children[0].is_dir():
            current = children[0]
            continue
        raise LayoutError(
            f"{folder}: no Roboflow COCO layout found (expected {'/, '.join(SPLIT_NAMES)}/ folders "
            f"each holding {COCO_FILE}); saw in {current}: {_describe(current)}"
        )


def _is_axis_aligned_rectangle(points: np.ndarray) -> bool:
    distinct = np.unique(points, axis=0)
    return len(distinct) == 4 and len(np.unique(distinct[:, 0])) == 2 and len(np.unique(distinct[:, 1])) == 2


def tumor_category_ids(categories: list[dict]) -> set[int]:
    """Roboflow puts a supercategory first ("Tumor", supercategory "none"); the classes under it are tumors."""
    children = {c["id"] for c in categories if c.get("supercategory") not in (None, "none")}
    return children or {c["id"] for c in categories}


def read_coco_split(split_dir: Path, split: str, stats: LayoutStats) -> list[Sample]:
    coco_path = split_dir / COCO_FILE
    try:
        coco = json.loads(coco_path.read_text())
        images, annotations = coco["images"], coco.get("annotations", [])
        wanted = tumor_category_ids(coco.get("categories", []))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise LayoutError(f"{coco_path}: not a COCO annotation file ({err})") from None

    # Group by image_id, never by list order: the export's annotation order is arbitrary.
    by_image: dict[int, list[dict]] = defaultdict(list)
    for ann in annotations:
        by_image[ann["image_id"]].append(ann)
    known_ids = {img["id"] for img in images}
    stats.orphan_annotations += sum(len(v) for k, v in by_image.items() if k not in known_ids)

    samples = []
    for img in sorted(images, key=lambda i: i["file_name"]):
        sample = Sample(file=split_dir / img["file_name"], split=split, group=group_id(img["file_name"]),
                        height=int(img["height"]), width=int(img["width"]))
        for ann in by_image.get(img["id"], []):
            if ann.get("category_id") not in wanted:
                continue
            segmentation = ann.get("segmentation")
            if not isinstance(segmentation, list):
                raise LayoutError(f"{coco_path}: annotation {ann.get('id')} uses RLE segmentation, "
                                  "which is not supported yet; convert it to polygons")
            stats.annotations += 1
            for flat in segmentation:
                points = polygon_to_points(flat)
                if points is None:
                    stats.degenerate_polygons += 1
                    continue
                stats.polygons += 1
                stats.rectangles += _is_axis_aligned_rectangle(points)
                sample.polygons.append(points)
        samples.append(sample)
    return samples


def read_layout(root: Path) -> tuple[list[Sample], LayoutStats]:
    root = find_dataset_root(root)
    stats = LayoutStats()
    samples = []
    for split in SPLIT_NAMES:
        if (root / split / COCO_FILE).is_file():
            samples += read_coco_split(root / split, split, stats)
    if not samples:
        raise LayoutError(f"{root}: the annotation files list no images")
    return samples, stats
