"""A DVC remote on a real S3-compatible server (moto, on localhost): push, fresh clone, pull, repro."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from local_server import free_port, wait_until_serving
from tiny_repo import copy_repo, run

BUCKET = "brainseg-dvc"
# moto accepts any credentials; DVC reads them from the environment, never from committed config.
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3_endpoint():
    pytest.importorskip("moto.server", reason="moto[server] is in requirements.txt")
    pytest.importorskip("dvc_s3", reason="dvc-s3 is in requirements.txt")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(endpoint, server, timeout=30)
        import boto3

        boto3.client("s3", endpoint_url=endpoint, **{k.lower(): v for k, v in S3_ENV.items()
                                                      if k != "AWS_DEFAULT_REGION"},
                     region_name=S3_ENV["AWS_DEFAULT_REGION"]).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


def _clone(origin: Path, to: Path) -> Path:
    run(["git", "clone", "-q", str(origin), str(to)], to.parent)
    return to


@pytest.mark.slow
def test_push_clone_pull_and_repro_from_the_remote(pipeline_repo, s3_endpoint, tmp_path):
    origin = copy_repo(pipeline_repo, tmp_path / "origin")
    # The remote's name, URL and endpoint are project config (committed); credentials are not.
    run(["dvc", "remote", "add", "-d", "storage", f"s3://{BUCKET}/cache"], origin)
    run(["dvc", "remote", "modify", "storage", "endpointurl", s3_endpoint], origin)
    run(["git", "commit", "-qam", "add the S3 remote"], origin)
    assert "testing" not in (origin / ".dvc/config").read_text()
    pushed = run(["dvc", "push"], origin, env=S3_ENV)
    assert "pushed" in pushed.stdout

    fresh = _clone(origin, tmp_path / "fresh")
    assert not (fresh / "models/model.pt").exists()
    run(["dvc", "pull"], fresh, env=S3_ENV)
    assert (fresh / "models/model.pt").read_bytes() == (origin / "models/model.pt").read_bytes()
    assert "up to date" in run(["dvc", "status"], fresh).stdout

    # CI's shortcut: take every stage's outputs from the remote instead of recomputing them.
    ci = _clone(origin, tmp_path / "ci")
    repro = run(["dvc", "repro", "--pull", "--allow-missing"], ci, env=S3_ENV)
    assert "Running stage" not in repro.stdout, repro.stdout
    assert "Stage 'download' didn't change, skipping" in repro.stdout
