"""A second truth for the test images: pairing by name or mapping, masks at each image's size, scores."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from brainseg.config import DataConfig, ReferenceConfig
from brainseg.data.preprocess import sample_mask
from brainseg.data.masks import grabcut_pseudo_mask, inscribed_ellipses
from brainseg.imaging import read_grayscale
from brainseg.data.layout import read_layout
from brainseg.data.reference import ReferenceError, pair_with_reference, read_mapping, reference_masks
from brainseg.data.sources import download_reference
from brainseg.evaluate import score_against_reference
from brainseg.inference import PostProcess
from tiny_repo import boxes_instead_of_outlines, copy_repo, run

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def _mapping(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_names_match_with_or_without_extension():
    assert pair_with_reference(["a.jpg", "sub/b.png"], ["b.png", "a.png", "sub/b.png"]) == [1, 2]


def test_a_test_image_without_reference_is_named():
    with pytest.raises(ReferenceError, match=r"1 test image\(s\) have no sample of the same name.*c\.jpg.*"
                                             r"reference\.mapping"):
        pair_with_reference(["a.jpg", "c.jpg"], ["a.png"])


def test_same_name_in_two_folders_is_ambiguous():
    with pytest.raises(ReferenceError, match="match several samples"):
        pair_with_reference(["a.bmp"], ["a.png", "a.jpg"])


def test_one_mapping_serves_both_directions(tmp_path):
    mapping = read_mapping(_mapping(tmp_path / "m.csv", "outline,box\n1,1_jpg.rf.aa.jpg\n2,2_jpg.rf.bb.jpg\n"))
    boxes = ["2_jpg.rf.bb.jpg", "1_jpg.rf.aa.jpg"]
    assert pair_with_reference(boxes, ["1.jpg", "2.jpg"], mapping) == [1, 0]
    assert pair_with_reference(["1.jpg", "2.jpg"], boxes, mapping) == [1, 0]


@pytest.mark.parametrize("text,message", [
    ("a,b,c\n1,2,3\n", "two columns"),
    ("", "empty file"),
    ("a,b\n1,\n", r"line 2"),
    ("a,b\n1,x\n1,y\n", r"more than once in column 'a': 1"),
])
def test_bad_mapping_files(tmp_path, text, message):
    with pytest.raises(ReferenceError, match=message):
        read_mapping(_mapping(tmp_path / "m.csv", text))


def test_missing_mapping_file_names_the_folder(tmp_path):
    with pytest.raises(ReferenceError, match=r"does not exist.*configs/references/"):
        read_mapping(tmp_path / "nope.csv")


def test_mapping_errors_name_what_is_missing(tmp_path):
    path = _mapping(tmp_path / "m.csv", "outline,box\n1,1_x.jpg\n2,2_x.jpg\n")
    mapping = read_mapping(path)
    with pytest.raises(ReferenceError, match=r"1 test image\(s\) have no entry.*3_x\.jpg"):
        pair_with_reference(["1_x.jpg", "3_x.jpg"], ["1.png"], mapping, path)
    with pytest.raises(ReferenceError, match=r"name\(s\) in .*match no sample of the reference set: 2"):
        pair_with_reference(["1_x.jpg", "2_x.jpg"], ["1.png"], mapping, path)
    with pytest.raises(ReferenceError, match="no name in column 'outline' or 'box' is a test image"):
        pair_with_reference(["9.jpg"], ["1.png"], mapping, path)


def _pairs_dataset(root: Path, masks: dict[str, np.ndarray]) -> Path:
    for name, mask in masks.items():
        for folder, pixels in (("images", mask * 80 + 40), ("masks", mask * 255)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / folder / f"{name}.png"), pixels.astype(np.uint8))
    return root


def test_box_against_its_own_outline_scores_exactly(tmp_path):
    """A 20 x 20 px outline inside a 20 x 40 px box, stored at half the test image's size: the reference
    mask is brought to 200 x 200 (a 40 x 40 square), a box label scores 2*1600/(1600+3200) = 2/3 against it,
    and a prediction that draws the outline scores 1."""
    outline = np.zeros((100, 100), np.uint8)
    outline[10:30, 10:30] = 1
    reference_dir = _pairs_dataset(tmp_path / "outlines", {"s1": outline})
    rows = pd.DataFrame({"file": ["s1.jpg"], "height": [200], "width": [200]})
    names, masks = reference_masks(reference_dir, rows)
    assert names == ["s1.png"] and masks[0].shape == (200, 200)
    assert masks[0].sum() == 1600 and masks[0][20:60, 20:60].all()

    box = np.zeros((200, 200), np.uint8)
    box[20:60, 20:100] = 1
    probs = np.zeros((1, 100, 100), np.float32)
    probs[0] = outline  # the outline, at a model resolution of 100 px
    table, scores = score_against_reference(probs, [box], masks, PostProcess())
    assert scores["labels_vs_reference"]["dice_mean"] == pytest.approx(2 / 3, abs=1e-6)
    assert scores["labels_vs_reference"]["iou_mean"] == pytest.approx(0.5, abs=1e-6)
    assert table.dice[0] == 1.0 and scores["all"]["dice_mean"] == 1.0
    assert "ellipses_vs_reference" not in scores

    # Box labels: the ellipse inscribed in the box, 40 x 80 px, against the 40 x 40 outline at its left.
    _, scores = score_against_reference(probs, [box], masks, PostProcess(), box_labels=True)
    ellipse = inscribed_ellipses(box).astype(bool)
    expected = 2 * (ellipse & masks[0].astype(bool)).sum() / (ellipse.sum() + 1600)
    assert scores["ellipses_vs_reference"]["dice_mean"] == pytest.approx(expected, abs=1e-6)
    assert scores["labels_vs_reference"]["dice_mean"] == pytest.approx(2 / 3, abs=1e-6)


@pytest.mark.slow
def test_evaluate_scores_the_reference_beside_the_labels(pipeline_repo, tmp_path):
    repo = copy_repo(pipeline_repo, tmp_path / "repo")
    before = json.loads((repo / "metrics/test.json").read_text())
    boxes = boxes_instead_of_outlines(repo / "data/raw", tmp_path / "boxes")
    params = yaml.safe_load((repo / "params.yaml").read_text())

    def evaluate_against(reference: Path) -> tuple[dict, dict, pd.DataFrame]:
        params["reference"] = {**params["reference"], "source": "local", "local_path": str(reference)}
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        out = run(["dvc", "repro", "evaluate"], repo).stdout
        assert "Running stage 'train'" not in out  # the reference does not touch training
        return (json.loads((repo / "metrics/test.json").read_text()),
                json.loads((repo / "metrics/test_details.json").read_text()),
                pd.read_csv(repo / "plots/per_image.csv"))

    # The labels themselves as the reference: every score is the primary one.
    metrics, details, table = evaluate_against(repo / "data/raw")
    assert {k: v for k, v in metrics.items() if k != "reference"} == before
    assert metrics["reference"]["dice_mean"] == before["dice_mean"]
    assert details["reference"]["labels_vs_reference"]["dice_mean"] == 1.0
    assert (table.ref_dice == table.dice).all() and (table.ref_file == table.file).all()

    # Box labels as the reference: each outline against its box, Dice 2|O|/(|O|+|B|) since O lies in B.
    metrics, details, table = evaluate_against(boxes)
    outlines, box_samples = ({s.name: s for s in read_layout(root)[0] if s.split == "test"}
                             for root in (repo / "data/raw", boxes))
    expected = []
    for name in table.file:
        o = sample_mask(outlines[name], outlines[name].height, outlines[name].width).astype(bool)
        b = sample_mask(box_samples[name], box_samples[name].height, box_samples[name].width).astype(bool)
        assert not (o & ~b).any()
        expected.append(1.0 if not b.any() else 2 * o.sum() / (o.sum() + b.sum()))
    labels = details["reference"]["labels_vs_reference"]
    assert labels["dice_mean"] == pytest.approx(np.mean(expected), abs=1e-6)
    assert labels["dice_mean"] < 0.95
    assert metrics["dice_mean"] == before["dice_mean"]  # the primary scores do not move
    assert metrics["reference"]["dice_mean"] == pytest.approx(table.ref_dice.mean(), abs=1e-6)


@pytest.mark.skipif(not (SHARED / "kaggle-figshare-split.csv").is_file(), reason="needs ../shared/data")
def test_committed_mapping_matches_the_shared_one():
    shared = pd.read_csv(SHARED / "kaggle-figshare-split.csv", dtype=str)
    committed = pd.read_csv(ROOT / "configs/references/figshare-kaggle.csv", dtype=str)
    assert dict(zip(committed.figshare, committed.kaggle)) == dict(zip(shared.figshare_id, shared.kaggle_file))


@pytest.mark.skipif(not (SHARED / "brain-tumor-segmentation-figshare.zip").is_file(), reason="needs ../shared/data")
def test_kaggle_boxes_score_about_055_against_the_expert_outlines(tmp_path):
    """The data README measured 0.546 per-image Dice for the box labels of the 215 test slices against the
    expert outlines; the reference path (mapping, layouts, nearest resizing to 640 px) must find the same."""
    for name, zip_name in (("boxes", "brain-tumor-image-dataset-semantic-segmentation.zip"),
                           ("outlines", "brain-tumor-segmentation-figshare.zip")):
        download_reference(ReferenceConfig(source="local", local_path=str(SHARED / zip_name)), DataConfig(),
                           tmp_path / name, tmp_path / f"{name}.json")
    boxes = [s for s in read_layout(tmp_path / "boxes")[0] if s.split == "test"]
    rows = pd.DataFrame({"file": [s.name for s in boxes], "height": 640, "width": 640})
    names, outlines = reference_masks(tmp_path / "outlines", rows, ROOT / "configs/references/figshare-kaggle.csv")
    assert len(set(names)) == 215
    truths = [sample_mask(s, s.height, s.width) for s in boxes]
    _, scores = score_against_reference(np.zeros((215, 8, 8), np.float32), truths, outlines, PostProcess(), box_labels=True)
    assert scores["labels_vs_reference"]["dice_mean"] == pytest.approx(0.546, abs=0.006)
    # The ellipses inscribed in the boxes (train.labels: ellipse) are closer to the outlines.
    assert scores["ellipses_vs_reference"]["dice_mean"] == pytest.approx(0.639, abs=0.002)

    # GrabCut pseudo-masks (train.labels: pseudo) closer still, on the first 40 test slices (~0.5 s each):
    # offline on all 215 (figshare's own 512-px images, the same boxes) 0.745 against the ellipses' 0.635.
    few = slice(0, 40)
    pseudo = np.stack([grabcut_pseudo_mask(read_grayscale(s.file), t) for s, t in zip(boxes[few], truths[few])])
    _, few_scores = score_against_reference(np.zeros((40, 8, 8), np.float32), truths[few], outlines[few],
                                            PostProcess(), box_labels=True, pseudo_masks=pseudo)
    assert few_scores["pseudo_masks_vs_reference"]["dice_mean"] > few_scores["ellipses_vs_reference"]["dice_mean"] + 0.05
