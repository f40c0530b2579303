import json
import re
import zipfile
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from brainseg.config import ConfigError, PhantomConfig
from brainseg.data.masks import rasterize_polygons
from brainseg.data.layout import COCO_FILE
from brainseg.data.phantom import (
    CATEGORIES,
    MAX_AREA_FRACTION,
    MIN_AREA_FRACTION,
    _place_tumors,
    mask_to_polygons,
    render_slice,
    write_phantom_archive,
)

COUNTS = {"train": 6, "valid": 3, "test": 3}
SMALL = PhantomConfig(**COUNTS, image_size=128)
NAME_RE = re.compile(r"^(train|valid|test)/(\d+)_jpg\.rf\.[0-9a-f]{32}\.jpg$")


def _slices(n: int, spec: PhantomConfig = SMALL, seed: int = 0):
    for i in range(n):
        yield render_slice(np.random.default_rng(np.random.SeedSequence([seed, i])), spec)


def _split_members(path: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            split, _, base = name.partition("/")
            out.setdefault(split, {})[base] = zf.read(name)
    return out


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("phantom") / "data.zip"
    write_phantom_archive(path, SMALL, seed=3)
    return path


def test_same_seed_same_bytes_and_other_seed_differs(archive, tmp_path):
    again, other = tmp_path / "again.zip", tmp_path / "other.zip"
    write_phantom_archive(again, SMALL, seed=3)
    write_phantom_archive(other, SMALL, seed=4)
    assert again.read_bytes() == archive.read_bytes()
    assert other.read_bytes() != archive.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.zip", "other.zip"]  # no temp left


def test_changing_one_split_count_keeps_other_splits(archive, tmp_path):
    changed = tmp_path / "changed.zip"
    write_phantom_archive(changed, replace(SMALL, train=COUNTS["train"] + 2), seed=3)
    before, after = _split_members(archive), _split_members(changed)
    assert before["valid"] == after["valid"] and before["test"] == after["test"]
    old_train = {k: v for k, v in before["train"].items() if k != COCO_FILE}
    new_train = {k: v for k, v in after["train"].items() if k != COCO_FILE}
    assert set(old_train) < set(new_train)


def test_archive_layout_and_coco(archive):
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        assert names == sorted(names)
        sources = []
        for split, count in COUNTS.items():
            members = [n for n in names if n.startswith(f"{split}/")]
            assert f"{split}/{COCO_FILE}" in members
            jpegs = [n for n in members if n != f"{split}/{COCO_FILE}"]
            assert len(jpegs) == count
            for name in jpegs:
                sources.append(NAME_RE.match(name).group(2))
                img = cv2.imdecode(np.frombuffer(zf.read(name), np.uint8), cv2.IMREAD_UNCHANGED)
                assert img.shape == (128, 128, 3) and img.dtype == np.uint8
                assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2])
            coco = json.loads(zf.read(f"{split}/{COCO_FILE}"))
            assert set(coco) == {"info", "licenses", "categories", "images", "annotations"}
            assert coco["categories"] == CATEGORIES == [
                {"id": 0, "name": "Tumor", "supercategory": "none"},
                {"id": 1, "name": "0", "supercategory": "Tumor"},
                {"id": 2, "name": "1", "supercategory": "Tumor"},
            ]
            assert [im["id"] for im in coco["images"]] == list(range(count))
            assert {f"{split}/{im['file_name']}" for im in coco["images"]} == set(jpegs)
            for im in coco["images"]:
                assert set(im) == {"id", "license", "file_name", "height", "width", "date_captured"}
                assert (im["height"], im["width"], im["license"]) == (128, 128, 1)
            image_ids = {im["id"] for im in coco["images"]}
            for ann in coco["annotations"]:
                assert set(ann) == {"id", "image_id", "category_id", "bbox", "area", "segmentation", "iscrowd"}
                assert ann["image_id"] in image_ids and ann["category_id"] in (1, 2) and ann["iscrowd"] == 0
                assert ann["segmentation"] and all(len(p) >= 6 and len(p) % 2 == 0 for p in ann["segmentation"])
        assert len(set(sources)) == len(sources), "source numbers must be unique across splits"


def test_annotations_are_not_grouped_by_image(tmp_path):
    path = tmp_path / "a.zip"
    write_phantom_archive(path, replace(SMALL, train=30, valid=1, test=1), seed=1)
    with zipfile.ZipFile(path) as zf:
        anns = json.loads(zf.read(f"train/{COCO_FILE}"))["annotations"]
    image_ids = [a["image_id"] for a in anns]
    assert len(anns) > 10 and image_ids != sorted(image_ids)


def test_tumor_count_fractions():
    counts = np.array([int(label.max()) for _, label in _slices(200, PhantomConfig(image_size=96))])
    assert 0.08 <= (counts == 0).mean() <= 0.24
    assert 0.08 <= (counts == 2).mean() <= 0.24


def test_polygons_reproduce_label():
    n_tumors = 0
    for image, label in _slices(40):
        assert image.shape == label.shape == (128, 128) and image.dtype == label.dtype == np.uint8
        assert set(np.unique(label)) <= {0, 1, 2}
        for k in range(1, int(label.max()) + 1):
            mask = label == k
            assert mask.any(), "tumour ids must be consecutive"
            polygons = [np.asarray(p).reshape(-1, 2) for p in mask_to_polygons(mask)]
            canvas = rasterize_polygons(polygons, *label.shape).astype(bool)
            iou = (mask & canvas).sum() / (mask | canvas).sum()
            assert iou >= 0.99
            n_tumors += 1
    assert n_tumors >= 25


def test_mask_to_polygons_keeps_every_piece():
    mask = np.zeros((40, 40), bool)
    mask[2:10, 2:10] = mask[20:30, 15:35] = True
    mask[38, 38] = True  # a single pixel is a piece too
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 3
    canvas = rasterize_polygons([np.asarray(p).reshape(-1, 2) for p in polygons], 40, 40)
    assert np.array_equal(canvas.astype(bool), mask)


def test_tumor_area_fractions_in_range():
    yy, xx = np.mgrid[:128, :128]
    brain = (yy - 64) ** 2 / 50**2 + (xx - 64) ** 2 / 40**2 < 1
    fractions = []
    for i in range(60):
        masks = _place_tumors(np.random.default_rng(i), brain, 1 + i % 2)
        assert len(masks) == 1 + i % 2
        for m in masks:
            assert not np.any(m & ~brain)
            fractions.append(m.sum() / brain.sum())
        if len(masks) == 2:
            assert not np.any(masks[0] & masks[1])
    fractions = np.array(fractions)
    assert fractions.min() >= MIN_AREA_FRACTION and fractions.max() <= MAX_AREA_FRACTION
    assert (fractions < 0.03).any() and (fractions > 0.1).any(), "sizes should span the range"


def test_difficulty_is_monotonic():
    noise, contrast = [], []
    for d in (0.0, 0.5, 1.0):
        spec = PhantomConfig(image_size=128, difficulty=d)
        corner, lesion = [], []
        for image, label in _slices(12, spec, seed=5):
            corner.append(image[:12, :12].std())
            if label.any():
                lesion.append(image[label > 0].mean() / np.median(image[image > 40]))
        noise.append(np.mean(corner))
        contrast.append(np.mean(lesion))
    assert noise[0] < noise[1] < noise[2]
    assert contrast[0] > contrast[1] > contrast[2]


def test_phantom_settings_are_checked_once_naming_the_key():
    for field, value in [("difficulty", 1.5), ("tumor_free_fraction", -0.1), ("two_tumor_fraction", 2.0),
                         ("image_size", 8), ("valid", 0), ("test", 10_001)]:
        with pytest.raises(ConfigError, match=rf"data\.phantom\.{field}"):
            PhantomConfig(**{field: value})
    with pytest.raises(ConfigError, match=r"data\.phantom\.tumor_free_fraction/two_tumor_fraction must sum"):
        PhantomConfig(tumor_free_fraction=0.6, two_tumor_fraction=0.6)
