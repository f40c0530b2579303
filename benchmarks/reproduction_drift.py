"""How far the pipeline's metrics move when CPU kernels change, as they do on another host.

Prints figures, asserts nothing. In a clone of this checkout, runs the pipeline once as this host
computes it, then retrains (train, evaluate, export) under conditions that mimic other hosts of the
same machine type: another intra-op thread count, or oneDNN capped at a lower instruction set. For
each metric it prints this host's value, each run's difference from it (the metrics committed at
HEAD too: zero where this host made them) and the rule `python -m brainseg.reproduction` applies.
6-9 minutes per run on 2 idle cores (about 30 for all three conditions); run it alone.

    python benchmarks/reproduction_drift.py [--out /tmp/drift] [--conditions threads1 threads4 isa_avx2]
    python benchmarks/reproduction_drift.py --table-only --out /tmp/drift   # re-print from saved runs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from brainseg.profiles import flatten
from brainseg.reproduction import compared_files, rule_for

ROOT = Path(__file__).resolve().parents[1]
# name -> environment. Thread counts go through sitecustomize: torch caps OMP_NUM_THREADS at the core count.
CONDITIONS = {
    "threads1": {"DRIFT_TORCH_THREADS": "1"},
    "threads4": {"DRIFT_TORCH_THREADS": "4"},
    "isa_avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
}
SITECUSTOMIZE = """import os
if os.environ.get("DRIFT_TORCH_THREADS"):
    import torch
    torch.set_num_threads(int(os.environ["DRIFT_TORCH_THREADS"]))
"""


def _run(cmd: list[str], cwd: Path, env: dict, log: Path) -> None:
    with log.open("w") as out:
        if subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed; see {log}")


def _save(clone: Path, files: list[str], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copy2(clone / path, dest / path.replace("/", "__"))


def measure(out: Path, conditions: list[str]) -> None:
    clone = out / "clone"
    if clone.exists():
        shutil.rmtree(clone)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    site = out / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": f"{clone / 'src'}{os.pathsep}{site}"}
    files = compared_files(clone / "dvc.yaml")
    for name, cmd, extra in [("this_host", ["dvc", "repro", "--force"], {}),
                             *[(c, ["dvc", "repro", "--force", "--downstream", "train"], CONDITIONS[c])
                               for c in conditions]]:
        started = time.perf_counter()
        _run(cmd, clone, {**env, **extra}, out / f"{name}.log")
        _save(clone, files, out / name)
        print(f"{name}: {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    committed = out / "committed"
    committed.mkdir(exist_ok=True)
    for path in files:
        shown = subprocess.run(["git", "show", f"HEAD:{path}"], cwd=ROOT, capture_output=True, text=True, check=True)
        (committed / path.replace("/", "__")).write_text(shown.stdout)


def _load(folder: Path) -> dict[str, float]:
    values = {}
    for path in sorted(folder.glob("*.json")):
        file = path.name.replace("__", "/")
        for key, value in flatten(json.loads(path.read_text())).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values[f"{file}:{key}"] = value
    return values


def table(out: Path) -> str:
    """Markdown: per metric, the value on this host and each other run's difference from it."""
    base = _load(out / "this_host")
    others = [p for p in sorted(out.iterdir()) if p.is_dir() and p.name not in ("this_host", "clone", "site")]
    loaded = {p.name: _load(p) for p in others}
    header = ["metric", "this host", *[f"{name} − this host" for name in loaded], "rule"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, value in base.items():
        file, name = key.split(":", 1)
        if "baselines." in name or "training_size." in name:
            continue  # no training in them, or a repeat of the headline at another size
        rule, _ = rule_for(file, name)
        cells = [f"`{file.removeprefix('metrics/')}:{name}`", f"{value:.4g}"]
        cells += [f"{run[key] - value:+.4g}" if key in run else "—" for run in loaded.values()]
        lines.append("| " + " | ".join(cells + [str(rule)]) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/brainseg-drift"))
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    parser.add_argument("--table-only", action="store_true", help="print the table from an earlier --out")
    args = parser.parse_args()
    if not args.table_only:
        measure(args.out, args.conditions)
    print(table(args.out), end="")


if __name__ == "__main__":
    main()
