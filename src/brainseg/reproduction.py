"""Reproduction check: rerun the whole pipeline and compare with the metrics committed in git.

    python -m brainseg.reproduction [--rev HEAD] [--tolerance 0] [--compare-only]

Every metrics file that dvc.yaml declares is read from git at `--rev` and from the working tree
after `dvc repro --force`; each number may differ by at most `--tolerance` (absolute), anything
else (texts, booleans, keys) must match exactly. On the machine type that produced the committed
results, CPU runs are deterministic and the default tolerance 0 holds; on other CPUs floating-point
summation order can change training slightly, so CI on other hardware passes a tolerance.
Exit code 0: reproduced; 1: differences (listed); 2: could not run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import yaml


def metrics_files(dvc_yaml: Path) -> list[str]:
    """Paths of the metrics files that the pipeline's stages declare, in stage order."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    paths = []
    for stage in stages.values():
        for entry in stage.get("metrics", []):
            paths.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    return paths


def flatten(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        flat = {}
        for key, inner in value.items():
            flat.update(flatten(inner, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def differences(committed: dict, reproduced: dict, tolerance: float) -> list[str]:
    """Human-readable differences between two metrics documents (empty when they agree)."""
    old, new = flatten(committed), flatten(reproduced)
    found = [f"{key}: committed, but not reproduced" for key in sorted(old.keys() - new.keys())]
    found += [f"{key}: reproduced, but not committed" for key in sorted(new.keys() - old.keys())]
    for key in sorted(old.keys() & new.keys()):
        a, b = old[key], new[key]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
        if numbers and (abs(a - b) <= tolerance or (math.isnan(a) and math.isnan(b))):
            continue
        if not numbers and a == b:
            continue
        found.append(f"{key}: committed {a!r}, reproduced {b!r}" + (f" (|diff| {abs(a - b):.3g})" if numbers else ""))
    return found


def _git_show(rev: str, path: str) -> dict | None:
    result = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    return json.loads(result.stdout) if result.returncode == 0 else None


def check(rev: str, tolerance: float, reproduce: bool) -> int:
    files = metrics_files(Path("dvc.yaml"))
    committed = {path: _git_show(rev, path) for path in files}
    missing = [path for path, doc in committed.items() if doc is None]
    if missing:
        print(f"reproduction: {', '.join(missing)} not committed at {rev}; commit the pipeline's results first",
              file=sys.stderr)
        return 2
    if reproduce:
        print("reproduction: running dvc repro --force", flush=True)
        env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
        if subprocess.run(["dvc", "repro", "--force"], env=env).returncode != 0:
            print("reproduction: dvc repro failed", file=sys.stderr)
            return 2
    failures = 0
    for path in files:
        found = differences(committed[path], json.loads(Path(path).read_text()), tolerance)
        failures += len(found)
        for line in found:
            print(f"reproduction: {path}: {line}")
    verdict = "differ from" if failures else "match"
    print(f"reproduction: {len(files)} metrics files {verdict} {rev} (tolerance {tolerance:g}); "
          f"{failures} difference(s)")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m brainseg.reproduction", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", default="HEAD", help="git revision holding the committed metrics (default: HEAD)")
    parser.add_argument("--tolerance", type=float, default=float(os.environ.get("REPRO_TOLERANCE", 0)),
                        help="largest absolute difference allowed per number (default: $REPRO_TOLERANCE or 0)")
    parser.add_argument("--compare-only", action="store_true",
                        help="compare the working tree's metrics without rerunning the pipeline")
    args = parser.parse_args(argv)
    return check(args.rev, args.tolerance, reproduce=not args.compare_only)


if __name__ == "__main__":
    sys.exit(main())
