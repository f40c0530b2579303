"""Every stage script and CLI answers a sample of user mistakes with exit code 2 and one message, no traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {"data": {"phantom": {"train": 8, "valid": 4, "test": 4, "image_size": 64}}, "preprocess": {"image_size": 32}}


def _script(name: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / f"stages/{name}.py")], cwd=cwd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """Outputs of the data stages of a tiny phantom run: what train, evaluate and export start from."""
    ws = tmp_path_factory.mktemp("prepared")
    (ws / "params.yaml").write_text(yaml.safe_dump(TINY))
    for stage in ("download", "reference", "preprocess", "split"):
        assert _script(stage, ws).returncode == 0
    return ws


# stage, params changes, a file or folder to create first (relative path -> None for a folder), expected message
CASES = {
    "download-missing-local-zip": ("download", {"data": {"source": "local", "local_path": "nope.zip"}}, {},
                                   "data.local_path nope.zip does not exist"),
    "reference-missing-local-folder": ("reference", {"reference": {"source": "local", "local_path": "masks/"}}, {},
                                       "reference.local_path masks does not exist"),
    "preprocess-raw-without-dataset": ("preprocess", {}, {"data/raw/notes.txt": "hello"},
                                       "data/raw: no supported dataset layout found"),
    "split-missing-file": ("split", {"split": {"strategy": "file", "file": "configs/splits/mine.csv"}}, {},
                           "configs/splits/mine.csv"),
    "train-missing-encoder-weights": ("train", {"model": {"encoder_weights": "weights/r18.pth"}}, {},
                                      "model.encoder_weights: weights/r18.pth does not exist"),
    "train-out-of-order": ("train", {}, {"remove": "data/processed"}, "data/processed"),
    "evaluate-before-train": ("evaluate", {}, {}, "models/model.pt does not exist: it is written by an earlier stage"),
    "export-before-train": ("export", {}, {}, "does not exist: it is written by an earlier stage"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_stage_user_errors_exit_2_with_one_message(prepared, tmp_path, case):
    stage, changes, files, message = CASES[case]
    ws = tmp_path / "ws"
    shutil.copytree(prepared, ws)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    for section, values in changes.items():
        params.setdefault(section, {}).update(values)
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    for path, content in files.items():
        if path == "remove":
            shutil.rmtree(ws / content)
            continue
        shutil.rmtree(ws / Path(path).parent, ignore_errors=True)
        (ws / path).parent.mkdir(parents=True)
        (ws / path).write_text(content)
    result = _script(stage, ws)
    assert result.returncode == 2, result.stdout[-500:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr and message in result.stderr, result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == \
        [result.stderr.strip().splitlines()[-1]], "one error message, last"


@pytest.mark.parametrize("module, args, message", [
    ("brainseg.profiles", ["configs/nope.yaml"], "configs/nope.yaml: profile not found"),
    ("brainseg.profiles", ["configs/kaggle-cpu.yaml", "--local", "nowhere.zip", "--dry-run"], "nowhere.zip"),
    ("brainseg.predict", ["x.png", "--out", "out", "--model", "none.onnx"], "model not found: none.onnx"),
], ids=["exp-unknown-profile", "exp-missing-local", "predict-missing-model"])
def test_cli_user_errors_exit_2_with_one_message(tmp_path, module, args, message):
    # brainseg-exp runs in the repository (its profiles and params.yaml); --dry-run and errors change nothing.
    cwd = ROOT if module == "brainseg.profiles" else tmp_path
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert message in result.stderr
