import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from brainseg.data.preprocess import preprocess
from brainseg.data.index import read_index
from brainseg.data.layout import LayoutError, find_dataset_root, group_id, read_layout
from brainseg.data.split import SplitError, predefined_split, random_group_split

CATEGORIES = [{"id": 0, "name": "Tumor", "supercategory": "none"},
              {"id": 1, "name": "0", "supercategory": "Tumor"}, {"id": 2, "name": "1", "supercategory": "Tumor"}]


def _box(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1, x0, y0]


def make_coco(root: Path, split: str, images: dict[str, list[list[float]]], size=(40, 50)) -> None:
    """images: file name -> polygons. Annotations are written in reverse image order."""
    folder = root / split
    folder.mkdir(parents=True)
    h, w = size
    entries, annotations = [], []
    for i, (name, polygons) in enumerate(images.items()):
        cv2.imwrite(str(folder / name), np.full((h, w, 3), 60 + i, np.uint8))
        entries.append({"id": i, "file_name": name, "height": h, "width": w})
        for poly in polygons:
            annotations.append({"id": len(annotations), "image_id": i, "category_id": 1, "segmentation": [poly]})
    annotations.append({"id": 99, "image_id": 12345, "category_id": 1, "segmentation": [_box(0, 0, 2, 2)]})
    annotations.append({"id": 100, "image_id": 0, "category_id": 1, "segmentation": [[1, 1, 2, 2]]})
    coco = {"images": entries, "annotations": annotations[::-1], "categories": CATEGORIES}
    (folder / "_annotations.coco.json").write_text(json.dumps(coco))


def test_masks_follow_image_id_not_list_order(tmp_path):
    root = tmp_path / "ds"
    make_coco(root, "train", {"1_jpg.rf.aa.jpg": [_box(2, 3, 12, 8)], "2_jpg.rf.bb.jpg": [],
                              "3_jpg.rf.cc.jpg": [_box(20, 10, 30, 30), _box(40, 0, 45, 5)]})
    make_coco(root, "valid", {"4_jpg.rf.dd.jpg": [_box(0, 0, 5, 5)]})
    make_coco(root, "test", {"5_jpg.rf.ee.jpg": []})
    audit = preprocess(root, tmp_path / "processed", 32)
    index = read_index(tmp_path / "processed")
    pixels = dict(zip(index.file, index.tumor_pixels))
    assert pixels == {"1_jpg.rf.aa.jpg": 50, "2_jpg.rf.bb.jpg": 0, "3_jpg.rf.cc.jpg": 200 + 25,
                      "4_jpg.rf.dd.jpg": 25, "5_jpg.rf.ee.jpg": 0}
    assert dict(zip(index.file, index.group))["3_jpg.rf.cc.jpg"] == "3"
    assert audit["annotations_orphaned"] == 3  # one per split file
    assert audit["polygons_skipped_degenerate"] == 3
    assert audit["rectangle_fraction"] == 1.0
    masks = np.load(tmp_path / "processed/masks.npy")
    assert masks.shape == (5, 32, 32) and set(np.unique(masks)) <= {0, 1}


def test_unknown_layout_lists_what_it_saw(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(LayoutError, match=r"images/.*notes\.txt"):
        find_dataset_root(tmp_path)


def test_dataset_root_found_below_wrapper_folder(tmp_path):
    make_coco(tmp_path / "wrapper" / "ds", "train", {"a.jpg": []})
    assert find_dataset_root(tmp_path) == tmp_path / "wrapper" / "ds"
    samples, _ = read_layout(tmp_path)
    assert samples[0].group == "a"


def test_unreadable_image_is_named(tmp_path):
    make_coco(tmp_path, "train", {"ok.jpg": [], "broken.jpg": []})
    (tmp_path / "train/broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        preprocess(tmp_path, tmp_path / "processed", 32)
    assert not (tmp_path / "processed").exists()


def test_group_id_from_roboflow_name():
    assert group_id("2369_jpg.rf.8b8afa9d79c61fa42ca128c940b9cbc0.jpg") == "2369"
    assert group_id("Y1_png.rf.0a.jpg") == "Y1"
    assert group_id("scan_017.png") == "scan_017"


def _index(groups: list[str], splits: list[str] | None = None) -> pd.DataFrame:
    n = len(groups)
    return pd.DataFrame({"file": [f"f{i}.jpg" for i in range(n)], "split": splits or ["train"] * n, "group": groups})


def test_random_split_keeps_groups_together_and_is_seeded():
    groups = [f"g{i // 3}" for i in range(300)]  # 100 groups of 3 copies
    index = _index(groups)
    fractions = {"train": 0.7, "val": 0.15, "test": 0.15}
    split = random_group_split(index, fractions, seed=1)
    assert split == random_group_split(index, fractions, seed=1)
    assert split != random_group_split(index, fractions, seed=2)
    owner = {}
    for subset, keys in split.items():
        for key in keys:
            group = groups[int(key.split("/f")[1].split(".")[0])]
            assert owner.setdefault(group, subset) == subset
    assert sum(len(v) for v in split.values()) == 300
    assert abs(len(split["train"]) - 210) <= 3 and abs(len(split["test"]) - 45) <= 3


def test_random_split_with_too_few_groups_fails():
    with pytest.raises(SplitError, match="too few groups"):
        random_group_split(_index(["a", "a", "b"]), {"train": 0.7, "val": 0.15, "test": 0.15}, seed=0)


def test_predefined_split_maps_valid_to_val():
    index = _index(["a", "b", "c"], ["train", "valid", "test"])
    assert predefined_split(index) == {"train": ["train/f0.jpg"], "val": ["valid/f1.jpg"], "test": ["test/f2.jpg"]}
    with pytest.raises(SplitError, match="random"):
        predefined_split(_index(["a", "b"], ["train", "test"]))
