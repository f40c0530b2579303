"""The PR workflow, the reproduction check and the PR report."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from brainseg.reproduction import DISTANCE, SCORE, RULES, compare, compared_files, rule_for
from brainseg.profiles import flatten
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


def _steps() -> dict[str, dict]:
    job = yaml.safe_load(WORKFLOW.read_text())["jobs"]["reproduce"]
    return {step.get("name", step.get("uses")): step for step in job["steps"]}


def test_workflow_reproduces_on_pull_requests_and_comments():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as true
    job = workflow["jobs"]["reproduce"]
    assert job["timeout-minutes"] <= 90
    assert "REPRO_TOLERANCE" not in WORKFLOW.read_text()  # the per-key rules decide, the same as in .ci/run
    steps = _steps()
    assert steps["actions/checkout@v4"]["with"]["fetch-depth"] == 0
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    for command in ("pip install -r requirements.txt", "python -m pytest -q", "python -m brainseg.reproduction",
                    "bash .ci/pr_report.sh", "cml comment"):
        assert command in runs, command


def test_workflow_installs_cpu_torch_at_the_pinned_versions(tmp_path):
    install = next(s["run"] for name, s in _steps().items() if name.startswith("Install"))
    assert "--index-url https://download.pytorch.org/whl/cpu" in install
    assert install.index("whl/cpu") < install.index("-r requirements.txt")  # CPU wheels first: pip keeps them
    # The pins come from requirements.txt itself: run the step's grep expressions on it.
    pins = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith("torch")]
    script = install.split("python -m pip install -r")[0].replace("python -m pip install", "echo")
    echoed = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert len(pins) == 2 and [a for a in echoed if a.startswith("torch")] == pins
    assert _steps()["iterative/setup-cml@v2"]["with"]["vega"] is False


def test_the_pr_comment_is_skipped_for_forks():
    comment = next(s for name, s in _steps().items() if name.startswith("Comment"))
    condition = comment["if"]
    assert "github.event.pull_request.head.repo.full_name == github.repository" in condition
    assert "failure()" in condition  # a failed reproduction still gets its report


def test_compared_files_are_the_declared_json_under_metrics():
    assert compared_files(ROOT / "dvc.yaml") == [
        "metrics/data.json", "metrics/train/metrics.json", "metrics/test_details.json", "metrics/test.json"]


def test_every_committed_metric_has_an_explicit_rule():
    # A new metric must be given a rule on purpose: unmatched keys would be held exact and fail on other hosts.
    for file in compared_files(ROOT / "dvc.yaml"):
        for key in flatten(json.loads((ROOT / file).read_text())):
            assert rule_for(file, key)[1], f"{file}:{key} has no rule in brainseg.reproduction.RULES"
    assert all(rule.kind in ("exact", "absolute", "relative", "reported") for _, rule in RULES)


def test_rules_pass_drift_within_limits_and_fail_beyond_them():
    committed = {"dice_mean": 0.8541, "hd95_px_mean": 15.0, "threshold": 0.35, "tta": True, "best_epoch": 23}
    test = "metrics/test.json"
    assert compare(test, committed, json.loads(json.dumps(committed))) == ([], [], 5)
    drifted = {"dice_mean": 0.8541 - SCORE.limit / 2, "hd95_px_mean": 15.0 * (1 + DISTANCE.limit / 2),
               "threshold": 0.4, "tta": False, "best_epoch": 20}
    failures, drifts, identical = compare(test, committed, drifted)
    assert failures == [] and len(drifts) == 5 and identical == 0
    # The same drift fails an exact check, naming the key and both values.
    failures, _, _ = compare(test, committed, drifted, exact=True)
    assert "dice_mean: committed 0.8541, reproduced 0.8291 (diff -0.025; rule exact)" in failures
    # Beyond the limits, and any change of a count or of the data, fails.
    beyond = {**committed, "dice_mean": 0.8541 + 2 * SCORE.limit, "hd95_px_mean": 15.0 * (1 + 2 * DISTANCE.limit)}
    assert [f.split(":")[0] for f in compare(test, committed, beyond)[0]] == ["dice_mean", "hd95_px_mean"]
    details = "metrics/test_details.json"
    assert compare(details, {"test_set": {"images": 120}}, {"test_set": {"images": 119}})[0] == [
        "test_set.images: committed 120, reproduced 119 (diff -1; rule exact)"]
    assert compare("metrics/data.json", {"tumor_area_fraction_p10": 0.004638},
                   {"tumor_area_fraction_p10": 0.004639})[0]
    assert compare(test, committed, {k: v for k, v in committed.items() if k != "tta"})[0] == [
        "tta: committed, but not reproduced"]


@pytest.fixture
def committed_copy(pipeline_repo, tmp_path) -> Path:
    return copy_repo(pipeline_repo, tmp_path / "clone")


@pytest.mark.slow
def test_reproduction_check_passes_an_honest_commit_and_fails_a_hand_edit(committed_copy):
    repo = committed_copy
    honest = run([sys.executable, "-m", "brainseg.reproduction", "--exact"], repo)
    assert "4 metrics files match HEAD exactly" in honest.stdout and "0 beyond them" in honest.stdout

    metrics_path = repo / "metrics/test.json"
    reproduced = metrics_path.read_text()
    edited = json.loads(reproduced)
    edited["dice_mean"] = round(edited["dice_mean"] + 0.001, 6)
    metrics_path.write_text(json.dumps(edited, indent=2))
    run(["git", "commit", "-qam", "better numbers, typed by hand"], repo)
    metrics_path.write_text(reproduced)  # what a rerun gives, as the honest run above showed
    compare_only = [sys.executable, "-m", "brainseg.reproduction", "--compare-only"]
    # A small edit passes the per-key rules (it is indistinguishable from drift) but not --exact.
    assert "within the rules" in run(compare_only, repo).stdout
    caught = run([*compare_only, "--exact"], repo, check=False)
    assert caught.returncode == 1
    assert "DIFFERS: metrics/test.json: dice_mean: committed" in caught.stdout

    edited["dice_mean"] = round(edited["dice_mean"] + 2 * SCORE.limit, 6)
    metrics_path.write_text(json.dumps(edited, indent=2))
    run(["git", "commit", "-qam", "much better numbers, typed by hand"], repo)
    metrics_path.write_text(reproduced)
    caught = run(compare_only, repo, check=False)
    assert caught.returncode == 1
    assert "DIFFERS: metrics/test.json: dice_mean: committed" in caught.stdout
    assert "1 beyond them" in caught.stdout


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
