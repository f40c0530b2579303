"""The export stage's model card: a Hugging Face header a registry can read, and prose that says what
the model learned from (boxes or outlines), how good it is, and that it is not for diagnosis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from brainseg.config import parse_params
from brainseg.model_card import render_model_card

ROOT = Path(__file__).resolve().parents[1]
SPEC = {"input": {"shape": ["batch", 1, 192, 192]}, "files": {"onnx": "model.onnx", "torchscript": "model.ts"},
        "postprocess": {"threshold": 0.35, "tta": True, "min_component_px": 16}, "best_epoch": 35, "val_dice": 0.75}
SIZES = {"train": 1502, "val": 429, "test": 215}


def _card(data_overrides: dict, test_overrides: dict | None = None, params: dict | None = None) -> tuple[dict, str]:
    test = {**json.loads((ROOT / "metrics/test.json").read_text()), **(test_overrides or {})}
    data = {**json.loads((ROOT / "metrics/data.json").read_text()), **data_overrides}
    text = render_model_card(parse_params(params or {}), SPEC, test, data, SIZES)
    _, header, body = text.split("---\n", 2)
    return yaml.safe_load(header), body


def test_header_has_the_hub_keys_and_the_test_dice():
    header, _ = _card({})
    assert {"license", "library_name", "pipeline_tag", "tags", "datasets", "metrics", "model-index"} <= set(header)
    result = header["model-index"][0]["results"][0]
    dice = json.loads((ROOT / "metrics/test.json").read_text())["dice_mean"]
    assert result["metrics"][0] == {"type": "dice", "value": dice, "name": "per-image Dice vs outlines"}
    assert header["datasets"] == ["phantom"]


@pytest.mark.parametrize("rectangles, says", [(1.0, "The labels are loose boxes, not tumor outlines"),
                                              (0.0, "The labels are tumor outlines")])
def test_the_card_says_what_kind_of_labels_the_model_learned_from(rectangles, says):
    header, body = _card({"rectangle_fraction": rectangles},
                         params={"data": {"source": "kaggle"}})
    assert says in body
    assert header["datasets"] == ["pkdarabi/brain-tumor-image-dataset-semantic-segmentation"]
    assert header["model-index"][0]["results"][0]["metrics"][0]["name"].endswith("boxes" if rectangles else "outlines")


def test_the_body_has_metrics_with_intervals_use_limits_and_how_to_run():
    _, body = _card({}, {"reference": {"dice_mean": 0.5, "dice_global": 0.55, "hd95_px_median": 40.0}})
    for section in ("## Model", "## Training data", "## Metrics (test split)", "## Intended use",
                    "## Limitations: not for diagnosis", "## How to use"):
        assert f"\n{section}\n" in body
    test = json.loads((ROOT / "metrics/test.json").read_text())
    assert f"{test['dice_mean_ci95_low']:.3f}–{test['dice_mean_ci95_high']:.3f}" in body
    assert "Against the reference set" in body and "Research use only" in body
    assert "brainseg-predict" in body and "brainseg-demo --model models/" in body
    assert "threshold 0.35, flip TTA on" in body


def test_a_layout_without_valid_and_test_folders_gets_its_split_sizes():
    # Image/mask-pair layouts (the figshare outlines) have no split folders: metrics/data.json counts
    # every image under train, and the split stage decides the subsets.
    data = {k: v for k, v in json.loads((ROOT / "metrics/data.json").read_text()).items()
            if k not in ("images_valid", "images_test")}
    text = render_model_card(parse_params({}), SPEC, json.loads((ROOT / "metrics/test.json").read_text()), data, SIZES)
    assert "1502 training, 429 validation and 215 test slices" in text
