"""The train stage as users run it: determinism, resume after a real kill, and two-process DDP on CPU."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from brainseg.config import ConfigError, load_params
from brainseg.model import initial_model
from brainseg.profiles import merge
from brainseg.train import cpu_has_bf16

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 6
TINY = {
    "data": {"phantom": {"train": 48, "valid": 16, "test": 8, "image_size": 128}},
    "preprocess": {"image_size": 64},
    "train": {"epochs": EPOCHS, "batch_size": 8, "patience": EPOCHS},
}
STATE = Path("models/checkpoints/last.pt")
TINY_AUGMENT = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["augment"]


def _stage(name: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "stages" / f"{name}.py")], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """params.yaml and data/ for a tiny run, produced by the real download/preprocess/split stages."""
    base = tmp_path_factory.mktemp("train-base")
    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    (base / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (base / "weights").mkdir()
    for stage in ("download", "preprocess", "split"):
        result = _stage(stage, base)
        assert result.returncode == 0, result.stderr[-2000:]
    return base


def _workspace(prepared: Path, tmp_path: Path, name: str, **train) -> Path:
    ws = tmp_path / name
    shutil.copytree(prepared, ws)
    if train:
        params = yaml.safe_load((ws / "params.yaml").read_text())
        params["train"].update(train)
        (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return ws


def _train(ws: Path) -> str:
    result = _stage("train", ws)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def _outputs(ws: Path) -> dict[str, bytes]:
    files = [ws / "models/model.pt", *sorted((ws / "metrics/train").rglob("*"))]
    return {str(p.relative_to(ws)): p.read_bytes() for p in files if p.is_file()}


def _losses(ws: Path, name: str) -> list[float]:
    lines = (ws / f"metrics/train/plots/metrics/{name}.tsv").read_text().splitlines()[1:]
    return [float(line.split("\t")[1]) for line in lines]


@pytest.fixture(scope="module")
def reference(prepared, tmp_path_factory) -> Path:
    ws = _workspace(prepared, tmp_path_factory.mktemp("reference"), "run")
    _train(ws)
    return ws


@pytest.mark.slow
def test_same_params_give_byte_identical_model_and_metrics(prepared, reference, tmp_path):
    again = _workspace(prepared, tmp_path, "again")
    _train(again)
    assert _outputs(again) == _outputs(reference)
    assert len(_losses(reference, "train/loss")) == EPOCHS
    assert not (again / STATE).exists(), "a finished run must leave no state to resume"


@pytest.mark.slow
def test_training_starts_from_the_network_evaluate_uses_as_untrained_baseline(prepared, tmp_path):
    # Steps of 1e-12 leave the weights where they started (batch-norm statistics do move: buffers
    # are not compared), so the checkpoint shows which network training began from.
    ws = _workspace(prepared, tmp_path, "still", epochs=1, lr=1e-12, warmup_epochs=0)
    _train(ws)
    params = load_params(ws / "params.yaml")
    trained = torch.load(ws / "models/model.pt", map_location="cpu", weights_only=True)["state_dict"]
    initial = initial_model(params.model, params.seed)
    for name, weight in initial.named_parameters():
        torch.testing.assert_close(trained[name], weight.detach(), rtol=0, atol=1e-9)
    other = dict(initial_model(params.model, params.seed + 1).named_parameters())
    assert not all(torch.equal(other[name], weight) for name, weight in initial.named_parameters())


# train refuses bf16 on CPUs that would emulate it (about 10x slower than float32).
NATIVE_BF16 = cpu_has_bf16()


@pytest.mark.slow
@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no bf16 instructions: train refuses bf16 here")
def test_bf16_on_cpu_is_reproducible_and_really_bf16(prepared, reference, tmp_path):
    first, second = (_workspace(prepared, tmp_path, name, amp="bf16", channels_last=True) for name in ("a", "b"))
    _train(first)
    _train(second)
    assert _outputs(first) == _outputs(second)
    # Rounded activations change the losses: the run did not quietly train in float32.
    assert _losses(first, "train/loss") != _losses(reference, "train/loss")


@pytest.mark.slow
@pytest.mark.parametrize("train", [{}, {"ema_decay": 0.9}], ids=["plain", "weight-average"])
def test_killed_run_resumes_to_the_same_result(prepared, reference, tmp_path, train):
    if train:  # the uninterrupted run with the same settings
        reference = _workspace(prepared, tmp_path, "uninterrupted", **train)
        _train(reference)
    ws = _workspace(prepared, tmp_path, "killed", **train)
    process = subprocess.Popen([sys.executable, str(ROOT / "stages/train.py")], cwd=ws,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved_epoch, deadline = 0, time.monotonic() + 300
    try:
        while saved_epoch < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            if (ws / STATE).is_file():
                saved = torch.load(ws / STATE, map_location="cpu", weights_only=True, mmap=True)
                saved_epoch = saved["progress"]["epoch"]
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, "training finished before it could be killed"
    state = torch.load(ws / STATE, map_location="cpu", weights_only=True)
    epoch = state["progress"]["epoch"]
    assert 2 <= epoch < EPOCHS

    # DVC deletes a stage's outputs before rerunning it; the state file is not one of them.
    shutil.rmtree(ws / "metrics")
    (ws / "models/model.pt").unlink(missing_ok=True)
    out = _train(ws)
    assert f"resume: continuing after epoch {epoch}/{EPOCHS}" in out
    assert _outputs(ws) == _outputs(reference)


@pytest.mark.slow
def test_changed_params_start_afresh(prepared, tmp_path):
    ws = _workspace(prepared, tmp_path, "changed", epochs=2)
    # A leftover state saved under other settings is not resumed.
    (ws / STATE).parent.mkdir(parents=True)
    torch.save({"fingerprint": "other settings", "epoch": 1}, ws / STATE)
    out = _train(ws)
    assert "saved with other params" in out and "resume: continuing" not in out


@pytest.mark.slow
def test_two_processes_with_gloo_match_one(prepared, reference, tmp_path):
    ws = _workspace(prepared, tmp_path, "ddp", devices=2, device="cpu")
    out = _train(ws)
    assert "--nproc-per-node=2" in out
    assert out.count("trained ") == 1, "only rank 0 reports and writes"
    assert [p.name for p in (ws / "models").iterdir()] == ["model.pt"]
    train_loss = _losses(ws, "train/loss")
    assert len(train_loss) == EPOCHS and train_loss[-1] < 0.9 * train_loss[0]
    # Same global batches and initial weights; what differs is batch-norm statistics (per process
    # on 4 slices instead of 8) and dropout draws. Stated tolerance: 3% per epoch on the training
    # loss, 5% on the final validation loss.
    for ddp, single in zip(train_loss, _losses(reference, "train/loss")):
        assert ddp == pytest.approx(single, rel=0.03)
    assert _losses(ws, "val/loss")[-1] == pytest.approx(_losses(reference, "val/loss")[-1], rel=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("options", [
    {"optimizer": "sgd", "lr": 0.01, "scheduler": "onecycle", "focal_weight": 1.0, "grad_clip": 1.0,
     "channels_last": True, "amp": "bf16", "augment": {**TINY_AUGMENT, "elastic": 0.5, "blur": 0.5}},
    {"optimizer": "adamw", "weight_decay": 0.01, "scheduler": "plateau", "plateau_patience": 1, "num_workers": 2,
     "patch_size": 32, "foreground_patches": 0.5, "ema_decay": 0.99},
], ids=["sgd-onecycle-focal-clip-channels_last-amp", "adamw-plateau-workers-patches-average"])
def test_training_options_run_end_to_end(prepared, tmp_path, options):
    if not NATIVE_BF16:  # the other options still run end to end, in float32
        options = {**options, "amp": "none"}
    ws = _workspace(prepared, tmp_path, "options", epochs=2, **options)
    out = _train(ws)
    assert "is ignored on cpu" not in out  # bf16 autocast runs on CPU too
    checkpoint = torch.load(ws / "models/model.pt", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values() if t.is_floating_point())
    assert len(_losses(ws, "train/loss")) == 2


def test_bf16_on_a_cpu_without_bf16_instructions_is_refused_with_the_fix(tmp_path, monkeypatch, capsys):
    import brainseg.train as train

    (tmp_path / "with").write_text("flags\t\t: fpu sse avx512f avx512_bf16\n")
    (tmp_path / "arm").write_text("Features\t: fp asimd sve bf16 i8mm\n")
    (tmp_path / "without").write_text("flags\t\t: fpu sse avx2\n")
    assert train.cpu_has_bf16(tmp_path / "with") and train.cpu_has_bf16(tmp_path / "arm")
    assert not train.cpu_has_bf16(tmp_path / "without")
    monkeypatch.setattr(train, "cpu_has_bf16", lambda: False)
    with pytest.raises(ConfigError, match=r"train.amp: bf16 .* Set train.amp: none"):
        train.amp_dtype("bf16", torch.device("cpu"))
    assert train.amp_dtype("none", torch.device("cpu")) is None
    assert train.amp_dtype("fp16", torch.device("cpu")) is None
    assert "is ignored on cpu" in capsys.readouterr().out
    monkeypatch.setattr(train, "cpu_has_bf16", lambda: True)
    assert train.amp_dtype("bf16", torch.device("cpu")) == torch.bfloat16
