"""The whole `dvc repro` on a tiny phantom, in a temporary copy of the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COPIED = ["dvc.yaml", "params.yaml", "stages", "src", "pyproject.toml", ".dvcignore", ".gitignore"]
TINY = {
    "data": {"phantom": {"train": 24, "valid": 8, "test": 8, "image_size": 128}},
    "preprocess": {"image_size": 64},
    "train": {"epochs": 2, "batch_size": 8},
}


def _merge(base: dict, override: dict) -> dict:
    for key, value in override.items():
        base[key] = _merge(base[key], value) if isinstance(value, dict) else value
    return base


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _lock_md5(repo: Path, stage: str, path: str) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(o["md5"] for o in lock["stages"][stage]["outs"] if o["path"] == path)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("pipeline")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, repo / name)
    params = _merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], repo)
    _run(["dvc", "init", "-q"], repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "tiny pipeline"], repo)  # dvclive needs a commit to exist
    _run(["dvc", "repro"], repo)
    return repo


@pytest.mark.slow
def test_every_declared_output_exists(repo):
    for split in ("train", "valid", "test"):
        assert (repo / "data/raw" / split / "_annotations.coco.json").is_file()
    for path in ["data/download.json", "data/processed/images.npy", "data/processed/masks.npy",
                 "data/processed/index.csv", "data/splits/train.txt", "data/splits/val.txt", "data/splits/test.txt",
                 "models/model.pt", "models/model.onnx", "models/model.ts", "models/model.json",
                 "metrics/data.json", "metrics/train/metrics.json", "metrics/test.json",
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
    assert 0.0 <= metrics["baselines"]["intensity_threshold"]["dice_mean"] <= 1.0
    spec = json.loads((repo / "models/model.json").read_text())
    assert spec["input"]["shape"] == ["batch", 1, 64, 64]
    assert spec["check"]["max_abs_diff_onnx"] <= spec["check"]["tolerance"]


@pytest.mark.slow
def test_nothing_to_reproduce_and_dvc_reads_results(repo):
    assert "up to date" in _run(["dvc", "status"], repo)
    assert "dice_mean" in _run(["dvc", "metrics", "show"], repo)
    _run(["dvc", "plots", "show", "-o", "plots_html"], repo)
    assert (repo / "plots_html/index.html").is_file()


MODEL_FILES = [("train", "models/model.pt"), ("export", "models/model.onnx"), ("export", "models/model.ts")]


@pytest.mark.slow
def test_same_params_give_the_same_bytes_in_another_checkout(repo, tmp_path):
    # Another path on disk, as a colleague's clone or CI would have: training, evaluation and
    # export must give byte-identical model files and metrics, so dvc.lock hashes reproduce.
    other = tmp_path / "elsewhere"
    shutil.copytree(repo, other, symlinks=True)
    _run(["dvc", "repro", "--force", "--downstream", "train"], other)
    for stage, path in MODEL_FILES:
        assert _lock_md5(other, stage, path) == _lock_md5(repo, stage, path), path
    for path in sorted((repo / "metrics").rglob("*")):
        if path.is_file():
            assert path.read_bytes() == (other / path.relative_to(repo)).read_bytes(), path
    assert "up to date" in _run(["dvc", "status"], other)
