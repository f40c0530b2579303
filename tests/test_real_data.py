"""Checks on the real Kaggle download, when a copy is present in ../shared/data (skipped otherwise)."""

from pathlib import Path

import numpy as np
import pytest

from brainseg.config import DataConfig
from brainseg.data.preprocess import preprocess
from brainseg.data.index import read_index
from brainseg.data.layout import read_layout
from brainseg.data.masks import rasterize_polygons
from brainseg.data.sources import download

SHARED_ZIP = Path(__file__).resolve().parents[2] / "shared/data/brain-tumor-image-dataset-semantic-segmentation.zip"
pytestmark = pytest.mark.skipif(not SHARED_ZIP.is_file(), reason="the real Kaggle copy (../shared/data) is absent")


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real")
    download(DataConfig(source="local", local_path=str(SHARED_ZIP)), 0, root / "raw", root / "download.json")
    return root / "raw"


def test_audit_matches_published_facts(raw, tmp_path):
    audit = preprocess(raw, tmp_path / "processed", 64)
    assert (audit["images_train"], audit["images_valid"], audit["images_test"]) == (1502, 429, 215)
    assert audit["annotations"] == 2146 and audit["rectangle_fraction"] == 1.0
    assert audit["annotations_orphaned"] == 0
    index = read_index(tmp_path / "processed").set_index("file")
    assert index.loc["2369_jpg.rf.8b8afa9d79c61fa42ca128c940b9cbc0.jpg", "tumor_pixels"] == 0
    assert (index.tumor_pixels == 0).sum() == 1


def test_every_mask_bounding_box_equals_its_label_box(raw):
    samples, _ = read_layout(raw)
    two_boxes = [s.file.name for s in samples if len(s.polygons) == 2]
    assert two_boxes == ["176_jpg.rf.23ef40c30986ba54b865d55a934bfa72.jpg"]
    for sample in samples:
        if len(sample.polygons) != 1:
            continue
        (points,) = sample.polygons
        mask = rasterize_polygons([points], sample.height, sample.width)
        ys, xs = np.nonzero(mask)
        # Pixels whose centres lie inside the box [x0, x1) x [y0, y1).
        x0, y0 = np.ceil(points.min(axis=0) - 0.5).astype(int).clip(0)
        x1, y1 = np.ceil(points.max(axis=0) - 0.5).astype(int)
        x1, y1 = min(x1, sample.width), min(y1, sample.height)
        assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (x0, x1, y0, y1), sample.file.name
        assert mask.sum() == (x1 - x0) * (y1 - y0)
