"""split.strategy: file — a published split reused exactly, with clear errors for every mismatch."""

from __future__ import annotations

import csv
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from brainseg.data.preprocess import preprocess
from brainseg.data.index import read_index
from brainseg.data.split import SplitError, file_split

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def _index(files: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"file": files, "split": "train", "group": [Path(f).stem for f in files]})


def _split_file(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("file,subset\n" + "".join(f"{name},{subset}\n" for name, subset in rows))
    return path


def test_names_match_by_file_or_by_stem(tmp_path):
    index = _index(["1.png", "2.jpg", "3.png", "4.png", "p1/5.png"])
    path = _split_file(tmp_path / "s.csv", [("1", "train"), ("2.jpg", "valid"), ("3", "test"), ("4", "exclude"),
                                            ("p1/5", "train")])
    assert file_split(index, path) == {"train": ["train/1.png", "train/p1/5.png"], "val": ["train/2.jpg"],
                                       "test": ["train/3.png"]}


@pytest.mark.parametrize("rows,message", [
    ([("1", "train"), ("2", "val"), ("3", "test"), ("9", "test")], r"1 name\(s\) match no image of the dataset: 9"),
    ([("1", "train"), ("2", "val")], r"1 image\(s\) of the dataset are not listed: train/3.png.*split.unlisted"),
    ([("1", "train"), ("2", "val"), ("3", "test"), ("1", "test")], r"1 name\(s\) listed more than once: 1"),
    ([("1", "train"), ("2", "val"), ("3", "holdout")], r"subset must be one of train, val, valid, test, exclude; line 4: 'holdout'"),
    ([("1", "train"), ("2", "train"), ("3", "train")], r"assigns no image to val, test"),
])
def test_mismatches_are_errors_that_name_the_file_and_the_names(tmp_path, rows, message):
    path = _split_file(tmp_path / "s.csv", rows)
    with pytest.raises(SplitError, match=str(path).replace(".", r"\.") + ": " + message):
        file_split(_index(["1.png", "2.png", "3.png"]), path)


def test_unlisted_images_can_be_excluded_and_ambiguous_stems_are_refused(tmp_path):
    path = _split_file(tmp_path / "s.csv", [("1", "train"), ("2", "val"), ("3", "test")])
    split = file_split(_index(["1.png", "2.png", "3.png", "extra.png"]), path, unlisted="exclude")
    assert sum(len(v) for v in split.values()) == 3
    with pytest.raises(SplitError, match="1 match several images"):
        file_split(_index(["1.png", "1.jpg", "2.png", "3.png"]), path, unlisted="exclude")
    (tmp_path / "bad.csv").write_text("name,set\n1,train\n")
    with pytest.raises(SplitError, match="needs a header with the columns file,subset"):
        file_split(_index(["1.png"]), tmp_path / "bad.csv")
    with pytest.raises(SplitError, match="does not exist"):
        file_split(_index(["1.png"]), tmp_path / "missing.csv")


def _pairs_dataset(root: Path) -> None:
    """images/ + masks/ with the figshare naming, JPEG and PNG images, 512 and 256 px slices."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (ext, size) in enumerate([(".jpg", 512), (".png", 512), (".jpg", 256), (".png", 512)], start=1):
        image = np.full((size, size), 40 + 20 * i, np.uint8)
        mask = np.zeros((size, size), np.uint8)
        mask[size // 4: size // 2, size // 4: size // 2] = 255
        cv2.imwrite(str(root / "images" / f"{i}{ext}"), image)
        cv2.imwrite(str(root / "masks" / f"{i}.png"), mask)


def test_the_split_stage_reads_a_split_file_for_mixed_image_pairs(tmp_path):
    dataset = tmp_path / "raw"
    _pairs_dataset(dataset)
    preprocess(dataset, tmp_path / "data/processed", 64)
    index = read_index(tmp_path / "data/processed")
    # Mixed extensions pair by stem; a 256 px slice keeps its own size and tumor area.
    assert dict(zip(index.file, index.height)) == {"1.jpg": 512, "2.png": 512, "3.jpg": 256, "4.png": 512}
    assert dict(zip(index.file, index.tumor_pixels))["3.jpg"] == 64 * 64
    (tmp_path / "configs/splits").mkdir(parents=True)
    _split_file(tmp_path / "configs/splits/mine.csv", [("1", "train"), ("2", "train"), ("3", "val"), ("4", "test")])
    params = {"split": {"strategy": "file", "file": "configs/splits/mine.csv"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run([sys.executable, str(ROOT / "stages/split.py")], cwd=tmp_path, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert "split (file): train 2, val 1, test 1" in result.stdout
    assert (tmp_path / "data/splits/test.txt").read_text() == "train/4.png\n"

    # A wrong file is a clear error (exit 2, no traceback), and the earlier split stays as it was.
    _split_file(tmp_path / "configs/splits/mine.csv", [("1", "train"), ("2", "val"), ("5", "test")])
    result = subprocess.run([sys.executable, str(ROOT / "stages/split.py")], cwd=tmp_path, capture_output=True,
                            text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "configs/splits/mine.csv: 1 name(s) match no image of the dataset: 5" in result.stderr
    assert (tmp_path / "data/splits/test.txt").read_text() == "train/4.png\n"


def test_committed_figshare_split_matches_the_box_dataset():
    mapping = SHARED / "kaggle-figshare-split.csv"
    archive = SHARED / "brain-tumor-segmentation-figshare.zip"
    if not (mapping.is_file() and archive.is_file()):
        pytest.skip("the real data is not in ../shared/data (it never is on a user's machine)")
    committed = dict(csv.reader((ROOT / "configs/splits/figshare-kaggle.csv").read_text().splitlines()[1:]))
    subsets = {"train": "train", "valid": "val", "test": "test"}
    expected = {row["figshare_id"]: subsets[row["kaggle_split"]] for row in csv.DictReader(mapping.open())}
    assert committed == expected
    with zipfile.ZipFile(archive) as zf:
        images = [n.removeprefix("images/") for n in zf.namelist() if n.startswith("images/") and not n.endswith("/")]
    split = file_split(_index(images), ROOT / "configs/splits/figshare-kaggle.csv")
    assert {s: len(v) for s, v in split.items()} == {"train": 1502, "val": 429, "test": 215}
