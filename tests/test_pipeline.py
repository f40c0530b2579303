"""The whole `dvc repro` on a tiny phantom, in a temporary copy of the repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tiny_repo import copy_repo, lock_md5, run


@pytest.fixture
def repo(pipeline_repo: Path) -> Path:
    return pipeline_repo


@pytest.mark.slow
def test_every_declared_output_exists(repo):
    for split in ("train", "valid", "test"):
        assert (repo / "data/raw" / split / "_annotations.coco.json").is_file()
    for path in ["data/download.json", "data/reference.json", "data/reference/README.txt",
                 "data/processed/images.npy", "data/processed/masks.npy",
                 "data/processed/index.csv", "data/splits/train.txt", "data/splits/val.txt", "data/splits/test.txt",
                 "models/model.pt", "models/model.onnx", "models/model.ts", "models/model.json",
                 "metrics/data.json", "metrics/train/metrics.json", "metrics/test.json", "metrics/test_details.json",
                 "plots/thresholds.csv", "plots/per_image.csv", "plots/curves.png", "plots/overlays.png"]:
        assert (repo / path).is_file(), path
    assert (repo / "metrics/train/plots/metrics/val/dice.tsv").is_file()
    assert len((repo / "data/splits/test.txt").read_text().splitlines()) == 8


@pytest.mark.slow
def test_metrics_are_probabilities(repo):
    metrics = json.loads((repo / "metrics/test.json").read_text())
    for key in ("dice_mean", "iou_mean", "precision_global", "recall_global", "dice_global", "iou_global",
                "tumor_free_fpr"):
        assert 0.0 <= metrics[key] <= 1.0, key
    details = json.loads((repo / "metrics/test_details.json").read_text())
    assert 0.0 <= details["baselines"]["intensity_threshold"]["dice_mean"] <= 1.0
    assert set(details["test_set"]) == {"images", "tumor_free_images", "tumors"}
    assert details["test_set"]["images"] == 8
    assert "baselines" not in metrics and "images" not in metrics  # exp show lists only the compared figures
    assert 0.0 <= metrics["dice_mean_ci95_low"] <= metrics["dice_mean"] <= metrics["dice_mean_ci95_high"] <= 1.0
    spec = json.loads((repo / "models/model.json").read_text())
    assert spec["input"]["shape"] == ["batch", 1, 64, 64]
    assert spec["check"]["max_abs_diff_onnx"] <= spec["check"]["tolerance"]


@pytest.mark.slow
def test_nothing_to_reproduce_and_dvc_reads_results(repo, tmp_path):
    assert "up to date" in run(["dvc", "status"], repo).stdout
    assert "dice_mean" in run(["dvc", "metrics", "show"], repo).stdout
    run(["dvc", "plots", "show", "-o", str(tmp_path / "plots_html")], repo)
    assert (tmp_path / "plots_html/index.html").is_file()


MODEL_FILES = [("train", "models/model.pt"), ("export", "models/model.onnx"), ("export", "models/model.ts")]


@pytest.mark.slow
def test_same_params_give_the_same_bytes_in_another_checkout(repo, tmp_path):
    # Another path on disk, as a colleague's clone or CI would have: training, evaluation and
    # export must give byte-identical model files and metrics, so dvc.lock hashes reproduce.
    other = copy_repo(repo, tmp_path / "elsewhere")
    run(["dvc", "repro", "--force", "--downstream", "train"], other)
    for stage, path in MODEL_FILES:
        assert lock_md5(other, stage, path) == lock_md5(repo, stage, path), path
    for path in sorted((repo / "metrics").rglob("*")):
        if path.is_file():
            assert path.read_bytes() == (other / path.relative_to(repo)).read_bytes(), path
    assert "up to date" in run(["dvc", "status"], other).stdout
