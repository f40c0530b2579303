"""A temporary git + DVC copy of this repository with tiny params, for whole-pipeline tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import yaml

from brainseg.profiles import merge

ROOT = Path(__file__).resolve().parents[1]
COPIED = ["dvc.yaml", "params.yaml", "stages", "src", "pyproject.toml", ".dvcignore", ".gitignore", "weights", ".ci",
          "Makefile", "configs/splits", "configs/references"]
TINY = {
    "data": {"phantom": {"train": 24, "valid": 8, "test": 8, "image_size": 128}},
    "preprocess": {"image_size": 64},
    "train": {"epochs": 2, "batch_size": 8},
}
ENV = {"DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@t"}


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env={**os.environ, **ENV, **(env or {})}, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def lock_md5(repo: Path, stage: str, path: str) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(o["md5"] for o in lock["stages"][stage]["outs"] if o["path"] == path)


def make_tiny_repo(repo: Path) -> Path:
    """Copy the pipeline into `repo`, shrink params, `dvc repro`, and commit everything git tracks."""
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, repo / name)
    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], repo)
    run(["dvc", "init", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "tiny pipeline"], repo)  # dvclive needs a commit to exist
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "tiny results"], repo)
    return repo


def copy_repo(repo: Path, to: Path) -> Path:
    """A copy at another path, sharing nothing (its own DVC cache): as a colleague's clone would be."""
    shutil.copytree(repo, to, symlinks=True)
    return to


def boxes_instead_of_outlines(raw: Path, to: Path) -> Path:
    """A copy of the phantom's data/raw with each tumor polygon replaced by its bounding box, as the
    Kaggle dataset labels tumors."""
    shutil.copytree(raw, to)
    for coco in to.glob("*/_annotations.coco.json"):
        data = json.loads(coco.read_text())
        for ann in data["annotations"]:
            x, y, w, h = ann["bbox"]
            ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
        coco.write_text(json.dumps(data))
    return to
