"""Odd COCO annotations through the preprocess stage: each is a clear error (exit 2, the file, image and
annotation named, earlier outputs untouched) or handled and counted in metrics/data.json."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from test_layouts import poly, write_coco

ROOT = Path(__file__).resolve().parents[1]
COCO = "data/raw/c.json"


def _preprocess(ws: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "stages/preprocess.py")], cwd=ws, capture_output=True,
                          text=True)


def _outputs(ws: Path) -> dict[str, bytes]:
    files = [ws / "metrics/data.json", *sorted((ws / "data/processed").iterdir())]
    return {p.name: p.read_bytes() for p in files}


@pytest.fixture
def workspace(tmp_path) -> Path:
    """A preprocessed two-image COCO dataset; tests then edit its annotation file and rerun the stage."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"preprocess": {"image_size": 32}}))
    write_coco(tmp_path / COCO, tmp_path / "data/raw", {"a.png": [poly((2, 2, 12, 12))], "b.png": []})
    result = _preprocess(tmp_path)
    assert result.returncode == 0, result.stderr
    return tmp_path


def _edit(ws: Path, change) -> None:
    coco = json.loads((ws / COCO).read_text())
    change(coco)
    (ws / COCO).write_text(json.dumps(coco))


def _segmentation(value):
    def change(coco):
        coco["annotations"][0]["segmentation"] = value
    return change


def _image_field(key, value):
    def change(coco):
        coco["images"][0][key] = value
    return change


def _annotation_without(*keys, bbox=None):
    def change(coco):
        for key in keys:
            coco["annotations"][0].pop(key)
        if bbox is not None:
            coco["annotations"][0]["bbox"] = bbox
    return change


@pytest.mark.parametrize("change, message", [
    (_image_field("id", 1), r"image id 1 is used by both a\.png and b\.png"),
    (_segmentation([2, 2, 12, 2, 12, 12]), r"annotation 0 of a\.png: segmentation must be a list of polygons"),
    (_segmentation([[2, 2, "x", 2, 12, 12]]), r"annotation 0 of a\.png: a polygon must be a list of numbers"),
    (_segmentation([[2, 2, float("inf"), 2, 12, 12]]), r"annotation 0 of a\.png: a polygon has .*not finite"),
    (_segmentation([[2, 2, float("nan"), 2, 12, 12]]), r"annotation 0 of a\.png: a polygon has .*not finite"),
    (_image_field("height", 0), r"image a\.png declares height 0"),
    (_image_field("width", "fifty"), r"image a\.png declares width 'fifty'"),
    (_image_field("height", float("inf")), r"image a\.png declares height inf"),
    (_annotation_without("segmentation"), r"annotation 0 of a\.png: it has neither a segmentation nor a bbox"),
    (_annotation_without("segmentation", bbox=[2, 2, 0, 5]), r"annotation 0 of a\.png: a bbox must be .*positive"),
], ids=["duplicate-image-id", "flat-segmentation", "non-numeric", "infinity", "nan", "height-0", "width-text",
        "height-inf", "no-geometry", "empty-bbox"])
def test_malformed_annotations_are_named_and_change_nothing(workspace, change, message):
    before = _outputs(workspace)
    _edit(workspace, change)
    result = _preprocess(workspace)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "c.json" in result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert _outputs(workspace) == before


def test_ambiguous_category_names_are_refused(workspace):
    before = _outputs(workspace)
    _edit(workspace, lambda coco: coco["categories"].append({"id": 3, "name": "1", "supercategory": "Tumor"}))
    (workspace / "params.yaml").write_text(yaml.safe_dump({"preprocess": {"image_size": 32},
                                                           "data": {"categories": ["1"]}}))
    result = _preprocess(workspace)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "c.json: category names ['1'] each name several ids {'1': [2, 3]}" in result.stderr
    assert _outputs(workspace) == before


@pytest.mark.parametrize("segmentation", ["missing", []])
def test_box_only_annotation_is_filled_as_its_box_and_counted(workspace, segmentation):
    def change(coco):
        ann = coco["annotations"][0]
        ann.pop("segmentation") if segmentation == "missing" else ann.update(segmentation=segmentation)
        ann["bbox"] = [2, 2, 10, 6]
    _edit(workspace, change)
    assert _preprocess(workspace).returncode == 0
    audit = json.loads((workspace / "metrics/data.json").read_text())
    assert audit["box_annotations"] == 1 and audit["polygons"] == 0
    index = (workspace / "data/processed/index.csv").read_text()
    assert "a.png,train,a,40,50,60" in index  # a 10 x 6 box


def test_annotations_outside_the_selection_are_counted_by_reason(workspace):
    supercategory = {"category_id": 0, "segmentation": [[0, 0, 4, 0, 4, 4]]}
    string_id = {"category_id": "1", "segmentation": [[0, 0, 4, 0, 4, 4]]}
    unknown_id = {"category_id": 7, "segmentation": [[0, 0, 4, 0, 4, 4]]}

    def change(coco):
        coco["annotations"] += [{"id": 10 + i, "image_id": 1, **a}
                                for i, a in enumerate([supercategory, string_id, unknown_id])]
    _edit(workspace, change)
    assert _preprocess(workspace).returncode == 0
    audit = json.loads((workspace / "metrics/data.json").read_text())
    assert audit["annotations_dropped_category_not_selected"] == 1
    assert audit["annotations_dropped_category_undefined"] == 2
    assert audit["annotations"] == 1


def test_skipped_images_are_named_and_a_multi_page_tiff_is_not_its_first_page(tmp_path):
    """A TIFF stack decodes as its first page in OpenCV; it is refused, and under skip named in skipped.csv."""
    raw = tmp_path / "data/raw"
    write_coco(raw / "c.json", raw, {"a.png": [poly((2, 2, 12, 12))], "stack.tif": [], "broken.png": []})
    page = np.full((40, 50), 70, np.uint8)
    assert cv2.imwritemulti(str(raw / "stack.tif"), [page, page, page])
    (raw / "broken.png").write_bytes(b"not an image")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"preprocess": {"image_size": 32}}))
    result = _preprocess(tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "stack.tif (a multi-page TIFF (a stack of images); save each slice as its own file)" in result.stderr
    assert not (tmp_path / "data/processed").exists()

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"preprocess": {"image_size": 32, "on_bad_image": "skip"}}))
    result = _preprocess(tmp_path)
    assert result.returncode == 0 and "2 unreadable skipped (named in data/processed/skipped.csv)" in result.stdout
    skipped = pd.read_csv(tmp_path / "data/processed/skipped.csv")
    assert list(skipped.file) == ["broken.png", "stack.tif"] and skipped.problem.str.contains("multi-page").sum() == 1
    assert json.loads((tmp_path / "metrics/data.json").read_text())["images_skipped"] == 2
