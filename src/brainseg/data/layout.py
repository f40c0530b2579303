"""Dataset layouts on disk -> a list of samples (image file + tumor polygons, RLE masks or a mask file).

Detected automatically (below any single-folder wrappers):
- `coco-splits`: Roboflow COCO split folders, as in the Kaggle dataset
  `pkdarabi/brain-tumor-image-dataset-semantic-segmentation`: `train/ valid/ test/`, each with
  images and one `_annotations.coco.json`.
- `coco`: one COCO JSON (in the folder or in `annotations/`) plus the images it names; no split
  folders, so every sample is "train" and the split stage's `random` strategy applies.
- `pairs`: image/mask pairs, either `images/` + `masks/` with matching relative paths and stems
  (a mask may add `_mask` to the stem), or `<name>_mask.<ext>` beside `<name>.<ext>` (LGG style:
  one folder per patient). The group is the patient folder where there is one, else the stem.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brainseg.data.masks import box_to_points, polygon_to_points, rle_counts
from brainseg.errors import BrainsegError, listing
from brainseg.imaging import IMAGE_SUFFIXES

COCO_FILE = "_annotations.coco.json"
SPLIT_NAMES = ("train", "valid", "test")
MASK_SUFFIX = "_mask"
# Roboflow names exports `<source>_<ext>.rf.<hash>.<ext>`; the source identifies the original slice.
_ROBOFLOW_NAME = re.compile(r"^(?P<source>.+)_(?:jpe?g|png|bmp|tiff?)\.rf\.[0-9a-f]+\.", re.IGNORECASE)
# Wrapper folders a dataset may sit under; deeper than this is not searched.
_MAX_DEPTH = 4
# Why an annotation is not drawn: its category is defined but outside the selection (e.g. the
# supercategory), or its category_id is one the file does not define.
DROP_REASONS = ("category_not_selected", "category_undefined")
_IGNORED = ("__MACOSX",)


class LayoutError(BrainsegError, ValueError):
    """The folder does not hold a supported dataset layout; the message lists what was seen."""


@dataclass
class Sample:
    file: Path
    split: str  # split as given by the dataset: train / valid / test
    group: str  # source id: copies of one original slice (or slices of one patient) share it
    height: int  # as declared by the annotations; 0 = unknown until the mask file is read
    width: int
    polygons: list[np.ndarray] = field(default_factory=list)
    rles: list[tuple[list[int], int, int]] = field(default_factory=list)  # (counts, height, width)
    mask_file: Path | None = None
    name: str = ""  # unique within the split (index.csv `file`); defaults to the file name

    def __post_init__(self) -> None:
        self.name = self.name or self.file.name


@dataclass
class LayoutStats:
    layout: str = ""
    annotations: int = 0
    polygons: int = 0
    polygon_vertices: list[int] = field(default_factory=list)
    rectangles: int = 0
    rle_annotations: int = 0
    degenerate_polygons: int = 0
    box_annotations: int = 0  # a bbox but no segmentation: filled as its box
    orphan_annotations: int = 0
    dropped_annotations: dict[str, int] = field(default_factory=dict)  # DROP_REASONS -> count
    orphan_masks: int = 0


def group_id(file_name: str) -> str:
    match = _ROBOFLOW_NAME.match(Path(file_name).name)
    return match.group("source") if match else Path(file_name).stem


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.name not in _IGNORED)


def _describe(folder: Path) -> str:
    entries = [p.name + ("/" if p.is_dir() else "") for p in _visible(folder)]
    shown = ", ".join(entries[:12]) + (f", ... ({len(entries)} entries)" if len(entries) > 12 else "")
    return shown or "nothing"


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _coco_jsons(folder: Path) -> list[Path]:
    """COCO annotation files directly in `folder` or in `folder/annotations/`."""
    found = []
    for candidate in sorted([*folder.glob("*.json"), *folder.glob("annotations/*.json")]):
        try:
            data = json.loads(candidate.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and isinstance(data.get("images"), list):
            found.append(candidate)
    return found


def _has_suffix_pairs(folder: Path) -> bool:
    """`x_mask.ext` beside `x.ext`, in `folder` or one folder down (one folder per patient)."""
    for mask in [*folder.glob(f"*{MASK_SUFFIX}.*"), *folder.glob(f"*/*{MASK_SUFFIX}.*")]:
        stem = mask.stem[: -len(MASK_SUFFIX)]
        if _is_image(mask) and any(p.stem == stem and _is_image(p) for p in mask.parent.glob(stem + ".*")):
            return True
    return False


def _layouts_at(folder: Path) -> list[str]:
    kinds = []
    if any((folder / s / COCO_FILE).is_file() for s in SPLIT_NAMES):
        kinds.append("coco-splits")
    if _coco_jsons(folder):
        kinds.append("coco")
    if (folder / "images").is_dir() and (folder / "masks").is_dir():
        kinds.append("pairs")
    elif _has_suffix_pairs(folder):
        kinds.append("pairs")
    return kinds


def detect_layout(folder: Path) -> tuple[Path, str]:
    """(dataset root, layout kind): the shallowest folder holding a supported layout."""
    if not folder.is_dir():
        raise LayoutError(f"{folder}: not a folder; point data.local_path at the dataset zip or folder")
    level = [folder]
    for _ in range(_MAX_DEPTH + 1):
        found = [(f, kind) for f in level for kind in _layouts_at(f)]
        if len(found) == 1:
            return found[0]
        if found:
            listed = "; ".join(f"{kind} in {f}" for f, kind in found)
            raise LayoutError(f"{folder}: ambiguous dataset layout, found {listed}. Point data.local_path "
                              "at the one folder to use, or remove the others")
        level = [c for f in level for c in _visible(f) if c.is_dir()]
        if not level:
            break
    raise LayoutError(
        f"{folder}: no supported dataset layout found. Expected one of: {'/, '.join(SPLIT_NAMES)}/ folders "
        f"each holding {COCO_FILE}; one COCO .json with its images; images/ + masks/ folders; or "
        f"<name>{MASK_SUFFIX}.<ext> files beside <name>.<ext>. Saw in {folder}: {_describe(folder)}"
    )


def find_dataset_root(folder: Path) -> Path:
    """The folder holding the dataset (split folders, COCO file or image/mask pairs)."""
    return detect_layout(folder)[0]


def _vertex_count(points: np.ndarray) -> int:
    """Vertices without the closing repeat of the first point."""
    return len(points) - int(len(points) > 1 and bool((points[0] == points[-1]).all()))


def _is_axis_aligned_rectangle(points: np.ndarray) -> bool:
    # Column uniques first: np.unique(axis=0) is slow and long outlines fail the column test anyway.
    if len(np.unique(points[:, 0])) != 2 or len(np.unique(points[:, 1])) != 2:
        return False
    return len({tuple(p) for p in points.tolist()}) == 4


def tumor_category_ids(categories: list[dict], names: Sequence[str] = (), source: Path | None = None) -> set[int]:
    """The wanted category ids: those named in `names`, else every class under the tumor supercategory.

    Roboflow puts a supercategory first ("Tumor", supercategory "none"); the classes under it are tumors.
    """
    if names:
        by_name: dict[str, list] = defaultdict(list)
        for c in categories:
            by_name[str(c.get("name"))].append(c["id"])
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise LayoutError(f"{source}: data.categories names {unknown} which the annotation file does not "
                              f"define; available: {sorted(by_name)}. Set data.categories to some of these, "
                              "or [] for all tumor classes")
        ambiguous = {n: by_name[n] for n in names if len(by_name[n]) > 1}
        if ambiguous:
            raise LayoutError(f"{source}: category names {sorted(ambiguous)} each name several ids {ambiguous}; "
                              "rename the categories in the annotation file so each name is unique")
        return {by_name[n][0] for n in names}
    children = {c["id"] for c in categories if c.get("supercategory") not in (None, "none")}
    return children or {c["id"] for c in categories}


def _add_segmentation(sample: Sample, ann: dict, coco_path: Path, stats: LayoutStats) -> None:
    segmentation = ann.get("segmentation")
    stats.annotations += 1
    where = f"{coco_path}: annotation {ann.get('id')} of {sample.name}"
    if isinstance(segmentation, dict):  # RLE, as written for iscrowd: 1
        try:
            height, width = (int(v) for v in segmentation["size"])
            counts = rle_counts(segmentation["counts"])
        except (KeyError, TypeError, ValueError) as err:
            raise LayoutError(f"{where} has an unreadable RLE ({err})") from None
        if sum(counts) != height * width:
            raise LayoutError(f"{where}: RLE counts sum to {sum(counts)}, not {height}x{width}; the file is corrupt")
        stats.rle_annotations += 1
        sample.rles.append((counts, height, width))
        return
    try:
        if not segmentation:  # a detection-only annotation: its box is all there is
            if "bbox" not in ann:
                raise ValueError("it has neither a segmentation nor a bbox")
            sample.polygons.append(box_to_points(ann["bbox"]))
            stats.box_annotations += 1
            return
        if not isinstance(segmentation, list) or not all(isinstance(f, list) for f in segmentation):
            raise ValueError("segmentation must be a list of polygons, [[x1, y1, x2, y2, ...], ...], "
                             f"got {str(segmentation)[:80]}")
        polygons = [polygon_to_points(flat) for flat in segmentation]
    except ValueError as err:
        raise LayoutError(f"{where}: {err}. Fix or remove the annotation") from None
    for points in polygons:
        if points is None:
            stats.degenerate_polygons += 1
            continue
        stats.polygons += 1
        stats.polygon_vertices.append(_vertex_count(points))
        stats.rectangles += _is_axis_aligned_rectangle(points)
        sample.polygons.append(points)


def _image_base(coco_path: Path, root: Path, file_names: list[str]) -> Path:
    """Where the `file_name`s resolve: beside the JSON, at the root, or in `images/` (most files found wins)."""
    bases = list(dict.fromkeys([coco_path.parent, root, root / "images"]))
    probe = file_names[:200]
    hits = [sum((b / n).is_file() for n in probe) for b in bases]
    return bases[int(np.argmax(hits))]


def read_coco(coco_path: Path, split: str, stats: LayoutStats, categories: Sequence[str], root: Path) -> list[Sample]:
    try:
        coco = json.loads(coco_path.read_text())
        images, annotations = coco["images"], coco.get("annotations") or []
        wanted = tumor_category_ids(coco.get("categories") or [], categories, coco_path)
        image_base = _image_base(coco_path, root, [img["file_name"] for img in images])
        # Group by image_id, never by list order: the export's annotation order is arbitrary.
        by_image: dict[int, list[dict]] = defaultdict(list)
        for ann in annotations:
            by_image[ann["image_id"]].append(ann)
        known_ids: dict = {}
        for img in images:
            if img["id"] in known_ids:
                raise LayoutError(f"{coco_path}: image id {img['id']!r} is used by both {known_ids[img['id']]} and "
                                  f"{img['file_name']}, so their annotations cannot be told apart; give each "
                                  "image its own id")
            known_ids[img["id"]] = img["file_name"]
        samples = [Sample(file=image_base / img["file_name"], split=split, group=group_id(img["file_name"]),
                          height=_declared_size(img, "height", coco_path),
                          width=_declared_size(img, "width", coco_path), name=img["file_name"]) for img in images]
        defined = {c["id"] for c in coco.get("categories") or []}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        if isinstance(err, LayoutError):
            raise
        raise LayoutError(f"{coco_path}: not a COCO annotation file ({type(err).__name__}: {err})") from None
    stats.orphan_annotations += sum(len(v) for k, v in by_image.items() if k not in known_ids)
    for img, sample in zip(images, samples):
        for ann in by_image.get(img["id"], []):
            category = ann.get("category_id")
            if category in wanted:
                _add_segmentation(sample, ann, coco_path, stats)
            else:
                reason = DROP_REASONS[0] if category in defined else DROP_REASONS[1]
                stats.dropped_annotations[reason] = stats.dropped_annotations.get(reason, 0) + 1
    return sorted(samples, key=lambda s: s.name)


def _declared_size(image: dict, key: str, coco_path: Path) -> int:
    """An image's declared height or width: a positive whole number, or a LayoutError naming the image."""
    value = image[key]
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value != int(value) or value <= 0):
        raise LayoutError(f"{coco_path}: image {image.get('file_name')} declares {key} {value!r}; it must be "
                          "a positive whole number of pixels. Fix the entry")
    return int(value)


def _read_pairs(root: Path, stats: LayoutStats) -> list[Sample]:
    if (root / "images").is_dir() and (root / "masks").is_dir():
        image_root, mask_root = root / "images", root / "masks"
        images = [p for p in image_root.rglob("*") if _is_image(p)]
        masks = [p for p in mask_root.rglob("*") if _is_image(p)]
    else:
        image_root = mask_root = root
        files = [p for p in root.rglob("*") if _is_image(p)]
        masks = [p for p in files if p.stem.endswith(MASK_SUFFIX)]
        images = [p for p in files if not p.stem.endswith(MASK_SUFFIX)]

    def key(path: Path, base: Path) -> str:
        stem = path.stem[: -len(MASK_SUFFIX)] if path.stem.endswith(MASK_SUFFIX) else path.stem
        return (path.parent.relative_to(base) / stem).as_posix()

    mask_of: dict[str, Path] = {}
    for mask in masks:
        if mask_of.setdefault(key(mask, mask_root), mask) != mask:
            raise LayoutError(f"{root}: two masks for one image: {mask_of[key(mask, mask_root)]} and {mask}; "
                              "remove one")
    samples, unmatched = [], []
    for image in sorted(images):
        mask = mask_of.pop(key(image, image_root), None)
        if mask is None:
            unmatched.append(str(image.relative_to(root)))
            continue
        relative = image.relative_to(image_root)
        # The first folder below the image root is the patient (LGG: one folder per patient).
        group = relative.parts[0] if len(relative.parts) > 1 else image.stem
        samples.append(Sample(file=image, split="train", group=group, height=0, width=0,
                              mask_file=mask, name=relative.as_posix()))
    if unmatched:
        shown = listing(unmatched)
        raise LayoutError(f"{root}: {len(unmatched)} image(s) have no mask (expected the same relative path and "
                          f"stem under masks/, or <name>{MASK_SUFFIX}.<ext> beside it): {shown}. "
                          "Add the masks or remove those images")
    stats.orphan_masks = len(mask_of)
    return samples


def read_layout(root: Path, categories: Sequence[str] = ()) -> tuple[list[Sample], LayoutStats]:
    """Samples of the dataset at or below `root`; `categories` = COCO category names counted as tumor."""
    root, kind = detect_layout(root)
    stats = LayoutStats(layout=kind)
    if kind == "coco-splits":
        samples = []
        for split in SPLIT_NAMES:
            if (root / split / COCO_FILE).is_file():
                samples += read_coco(root / split / COCO_FILE, split, stats, categories, root / split)
    elif kind == "coco":
        paths = _coco_jsons(root)
        if len(paths) > 1:
            raise LayoutError(f"{root}: several COCO files ({', '.join(p.name for p in paths)}); "
                              "keep one, or arrange them as train/ valid/ test/ folders each with " + COCO_FILE)
        samples = read_coco(paths[0], "train", stats, categories, root)
    else:
        if categories:
            raise LayoutError(f"{root}: data.categories {list(categories)} applies to COCO annotations, but this "
                              "dataset has mask files; set data.categories to []")
        samples = _read_pairs(root, stats)
    if not samples:
        raise LayoutError(f"{root}: the dataset ({kind}) lists no images")
    seen: set[tuple[str, str]] = set()
    for sample in samples:
        if (sample.split, sample.name) in seen:
            raise LayoutError(f"{root}: {sample.name} is listed twice in {sample.split}; remove the duplicate entry")
        seen.add((sample.split, sample.name))
    return samples, stats
