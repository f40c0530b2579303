"""A run killed with SIGKILL cannot clean up; the next run of the stage removes what it left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from brainseg.io import remove_abandoned

ROOT = Path(__file__).resolve().parents[1]
TINY = {"data": {"phantom": {"train": 8, "valid": 4, "test": 4, "image_size": 64}},
        "preprocess": {"image_size": 32}}
# Runs the stage script as usual (its folder first on sys.path, as `python stages/x.py` puts it), but
# SIGKILLs the process at the moment its staging folder is complete and about to be renamed into place:
# the worst moment, with every scratch folder full.
KILLED_AT_RENAME = ("import os, runpy, signal, sys; sys.path.insert(0, os.path.dirname(sys.argv[1])); "
                    "import own_src, brainseg.io; "
                    "brainseg.io.replace_dir = lambda *_: os.kill(os.getpid(), signal.SIGKILL); "
                    "runpy.run_path(sys.argv[1], run_name='__main__')")


def _stage(ws: Path, name: str, killed: bool = False) -> subprocess.CompletedProcess:
    script = str(ROOT / "stages" / f"{name}.py")
    command = [sys.executable, "-c", KILLED_AT_RENAME, script] if killed else [sys.executable, script]
    return subprocess.run(command, cwd=ws, capture_output=True, text=True,
                          env={**os.environ, "TMPDIR": str(ws / "tmp")})


def _leftovers(ws: Path) -> list[str]:
    return sorted(p.name for folder in (ws / "data", ws / "tmp") for p in folder.iterdir()
                  if ".tmp-" in p.name or ".old-" in p.name or p.name.startswith("brainseg-download-"))


def test_next_run_removes_what_a_killed_run_left(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY))
    (tmp_path / "tmp").mkdir()
    killed = _stage(tmp_path, "download", killed=True)
    assert killed.returncode == -signal.SIGKILL
    left = _leftovers(tmp_path)
    assert any(n.startswith(".raw.tmp-") for n in left) and any(n.startswith("brainseg-download-") for n in left)
    assert not (tmp_path / "data/raw").exists()

    assert _stage(tmp_path, "download").returncode == 0
    assert _leftovers(tmp_path) == []
    assert (tmp_path / "data/raw/train/_annotations.coco.json").is_file()

    assert _stage(tmp_path, "preprocess", killed=True).returncode == -signal.SIGKILL
    assert [n for n in _leftovers(tmp_path) if n.startswith(".processed.tmp-")]
    result = _stage(tmp_path, "preprocess")
    assert result.returncode == 0, result.stderr
    assert _leftovers(tmp_path) == [] and (tmp_path / "data/processed/images.npy").is_file()


def test_scratch_of_a_running_process_is_kept(tmp_path):
    mine = tmp_path / f".raw.tmp-{os.getpid()}-abc"
    gone = tmp_path / ".raw.tmp-4194999-abc"  # above Linux's largest pid: no such process
    other = tmp_path / ".raw.tmp-notapid"
    for folder in (mine, gone, other):
        folder.mkdir()
    assert remove_abandoned(tmp_path, ".raw.tmp-") == [gone]
    assert mine.is_dir() and other.is_dir() and not gone.exists()
