"""The PR workflow, the reproduction check and the PR report."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from brainseg.reproduction import differences, metrics_files
from tiny_repo import ROOT, copy_repo, run

WORKFLOW = ROOT / ".github/workflows/reproduce.yml"


def _schema_check(path: Path) -> subprocess.CompletedProcess:
    checker = shutil.which("check-jsonschema")
    if checker is None:
        pytest.skip("check-jsonschema is not installed (it is in requirements.txt)")
    return subprocess.run([checker, "--builtin-schema", "vendor.github-workflows", str(path)],
                          capture_output=True, text=True)


def test_workflow_is_valid_for_github(tmp_path):
    result = _schema_check(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    # The check can fail: a step with neither `uses` nor `run` is rejected.
    broken = yaml.safe_load(WORKFLOW.read_text())
    broken["jobs"]["reproduce"]["steps"].append({"name": "nothing to do"})
    (tmp_path / "broken.yml").write_text(yaml.safe_dump(broken))
    assert _schema_check(tmp_path / "broken.yml").returncode != 0


def test_workflow_reproduces_on_pull_requests_and_comments():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as true
    job = workflow["jobs"]["reproduce"]
    assert job["timeout-minutes"] <= 90
    float(job["env"]["REPRO_TOLERANCE"])
    steps = {step.get("name", step.get("uses")): step for step in job["steps"]}
    assert steps["actions/checkout@v4"]["with"]["fetch-depth"] == 0
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    for command in ("pip install -r requirements.txt", "python -m pytest -q", "python -m brainseg.reproduction",
                    "bash .ci/pr_report.sh", "cml comment"):
        assert command in runs, command


def test_metrics_files_are_the_declared_ones():
    assert metrics_files(ROOT / "dvc.yaml") == ["metrics/data.json", "metrics/train/metrics.json", "metrics/test.json"]


def test_differences_respect_the_tolerance_and_name_the_key():
    committed = {"dice_mean": 0.8541, "chosen": {"tta": True, "threshold": 0.3}, "n": 120}
    assert differences(committed, json.loads(json.dumps(committed)), 0.0) == []
    edited = {**committed, "dice_mean": 0.8641}
    assert differences(committed, edited, 0.005) == ["dice_mean: committed 0.8541, reproduced 0.8641 (|diff| 0.01)"]
    assert differences(committed, edited, 0.02) == []
    assert differences(committed, {**committed, "chosen": {"tta": False, "threshold": 0.3}}, 1.0) == [
        "chosen.tta: committed True, reproduced False"]
    assert differences(committed, {"dice_mean": 0.8541, "chosen": committed["chosen"]}, 0) == [
        "n: committed, but not reproduced"]


@pytest.fixture
def committed_copy(pipeline_repo, tmp_path) -> Path:
    return copy_repo(pipeline_repo, tmp_path / "clone")


@pytest.mark.slow
def test_reproduction_check_passes_an_honest_commit_and_fails_a_hand_edit(committed_copy):
    repo = committed_copy
    honest = run([sys.executable, "-m", "brainseg.reproduction"], repo)
    assert "3 metrics files match HEAD (tolerance 0); 0 difference(s)" in honest.stdout

    metrics_path = repo / "metrics/test.json"
    reproduced = metrics_path.read_text()
    edited = json.loads(reproduced)
    edited["dice_mean"] = round(edited["dice_mean"] + 0.001, 6)
    metrics_path.write_text(json.dumps(edited, indent=2))
    run(["git", "commit", "-qam", "better numbers, typed by hand"], repo)
    metrics_path.write_text(reproduced)  # what a rerun gives, as the honest run above showed
    caught = run([sys.executable, "-m", "brainseg.reproduction", "--compare-only"], repo, check=False)
    assert caught.returncode == 1
    assert "metrics/test.json: dice_mean: committed" in caught.stdout


@pytest.mark.slow
def test_pr_report_runs_locally(committed_copy):
    repo = committed_copy
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["evaluate"]["overlays_per_group"] = 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "commit", "-qam", "change a param"], repo)
    out = run(["bash", ".ci/pr_report.sh", "HEAD~1", "report.md"], repo)
    assert "report written to report.md" in out.stdout
    report = (repo / "report.md").read_text()
    assert "### Metrics" in report and "dice_mean" in report
    assert "evaluate.overlays_per_group" in report
    assert "![overlays](./plots/overlays.png)" in report
