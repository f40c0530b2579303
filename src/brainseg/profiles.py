"""Named parameter profiles (`configs/*.yaml`) run as DVC experiments, with a record of each run.

A profile lists only the keys it changes in params.yaml, so the committed pipeline stays on the
phantom and a profile run is an ordinary experiment: `dvc exp show` and `dvc metrics diff` compare
it like any other. `brainseg-exp configs/kaggle-cpu.yaml` validates params.yaml + profile with the
config loader before anything runs, then calls `dvc exp run -S key=value ...`; `--record FILE`
appends the command, code commit, params, hardware, wall time and metrics of the run to FILE.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from brainseg.cli import run
from brainseg.config import ConfigError, parse_params, read_yaml
from brainseg.data.archive import atomic_write_text

# Text Hydra's grammar reads back as the same string when unquoted: names and relative/absolute paths.
PLAIN_STRING = re.compile(r"(?:[A-Za-z_]|\.{1,2}/|/)[A-Za-z0-9_./-]*")
HYDRA_KEYWORDS = {"true", "false", "null", "nan", "inf"}


def read_profile(path: Path) -> dict:
    profile = read_yaml(path, "profile not found; the shipped ones are in configs/")
    if not isinstance(profile, dict) or not profile:
        raise ConfigError(f"{path}: a profile is a mapping of the params.yaml keys it changes")
    return profile


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1e-4}} -> {"train.lr": 1e-4}; lists are values, not branches."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def merge(base: dict, changes: dict) -> dict:
    """A deep copy of `base` with the nested `changes` applied."""
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def hydra_value(value: Any) -> str:
    """`value` in the override grammar `dvc exp run -S` parses (Hydra's). Strings are quoted unless
    plainly a name or path, so that text like `1e-4`, `true` or `a b` stays the same string."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if PLAIN_STRING.fullmatch(value) and value.lower() not in HYDRA_KEYWORDS:
            return value
        # Hydra reads a backslash literally unless it precedes a quote: escape the quotes, and double
        # the backslashes just before a quote or before the closing quote.
        escaped = re.sub(r"(\\*)'", r"\1\1\\'", value)
        return "'" + re.sub(r"(\\+)$", r"\1\1", escaped) + "'"
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    raise ConfigError(f"cannot pass {value!r} ({type(value).__name__}) to dvc exp run -S")


def overrides(base: dict, changes: dict) -> list[str]:
    """`-S` arguments that turn `base` into merge(base, changes); keys new to params.yaml get `+`."""
    existing = flatten(base)
    return [f"{'' if key in existing else '+'}{key}={hydra_value(value)}" for key, value in flatten(changes).items()]


def changes_for(profile: dict, local: str | None) -> dict:
    """The profile, switched to the `local` source at `local` when given."""
    if local is None:
        return profile
    if not Path(local).expanduser().exists():
        raise ConfigError(f"{local}: no such file or folder; --local takes the Kaggle zip or its extracted folder")
    return merge(profile, {"data": {"source": "local", "local_path": local}})


def exp_command(name: str, sets: list[str], extra: list[str]) -> list[str]:
    return ["dvc", "exp", "run", "-n", name, *[a for s in sets for a in ("-S", s)], *extra]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()


def _hardware() -> dict:
    import torch  # noqa: PLC0415 - only a recorded run needs it

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"cpu_cores": os.cpu_count(), "gpus": gpus, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__}


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def run_record(name: str, profile: Path, command: list[str], dvc_command: list[str], wall_s: float, commit: str,
               dirty: bool) -> dict:
    """What a reader needs to trust and repeat the run: read from the workspace the run left."""
    return {
        "run": name,
        "profile": str(profile),
        "command": shlex.join(command),
        "dvc_command": shlex.join(dvc_command),
        "code_commit": commit,
        "uncommitted_changes": dirty,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_time_s": round(wall_s, 1),
        "hardware": _hardware(),
        "params": yaml.safe_load(Path("params.yaml").read_text()),
        "data": _read_json(Path("metrics/data.json")),
        "train": _read_json(Path("metrics/train/metrics.json")),
        "test": _read_json(Path("metrics/test.json")),
    }


def append_record(path: Path, record: dict) -> None:
    """Add `record` to the JSON list in `path`, replacing an earlier run of the same name."""
    runs = _read_json(path)
    runs = [] if runs is None else runs
    if not isinstance(runs, list):
        raise ConfigError(f"{path}: expected a JSON list of run records; give --record a new file")
    runs = [r for r in runs if r.get("run") != record["run"]] + [record]
    atomic_write_text(path, json.dumps(runs, indent=2) + "\n")


SUMMARY_COLUMNS = {  # header -> (key in metrics/test.json, format); all at the original image size
    "per-image Dice": ("dice_mean", ".3f"), "global Dice": ("dice_global", ".3f"), "box Dice": ("box_dice_mean", ".3f"),
    "localisation hits": ("localisation_hit_rate", ".3f"), "tumors found": ("tumor_sensitivity", ".3f"),
    "HD95 median (px)": ("hd95_px_median", ".1f"),
}


def _hardware_text(hardware: dict) -> str:
    return ", ".join(hardware["gpus"]) or f"{hardware['cpu_cores']} CPU cores"


def summary_table(runs: list[dict]) -> str:
    """Markdown: one row per recorded run, then mean ± sample SD over runs that differ only in seed."""
    header = ["run", "seed", "image size", "best epoch", "hardware", "wall time", *SUMMARY_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in runs:
        cells = [f"`{r['run']}`", str(r["params"]["seed"]), str(r["params"]["preprocess"]["image_size"]),
                 f"{r['train']['best_epoch']} of {r['params']['train']['epochs']}", _hardware_text(r["hardware"]),
                 f"{r['wall_time_s'] / 60:.0f} min"]
        cells += [format(r["test"][key], fmt) if r["test"][key] is not None else "—"
                  for key, fmt in SUMMARY_COLUMNS.values()]
        lines.append("| " + " | ".join(cells) + " |")
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(json.dumps({k: v for k, v in r["params"].items() if k != "seed"}, sort_keys=True), []).append(r)
    for group in groups.values():
        if len(group) < 2:
            continue
        names = ", ".join(f"`{r['run']}`" for r in group)
        cells = [f"mean ± SD of {names}"] + [""] * (len(header) - len(SUMMARY_COLUMNS) - 1)
        for key, fmt in SUMMARY_COLUMNS.values():
            values = np.array([r["test"][key] for r in group], dtype=float)
            cells.append(f"{format(values.mean(), fmt)} ± {format(values.std(ddof=1), fmt)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="brainseg-exp", description=__doc__.split("\n\n")[0],
        epilog="Arguments after `--` go to `dvc exp run` unchanged (e.g. -- --queue).")
    parser.add_argument("profile", type=Path, nargs="?",
                        help="a YAML file of params.yaml keys to change, e.g. configs/kaggle-cpu.yaml")
    parser.add_argument("--local", metavar="PATH", help="use the local source: the Kaggle zip or its extracted folder")
    parser.add_argument("-n", "--name", help="experiment name (default: the profile's file name)")
    parser.add_argument("-S", "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="one more override, after the profile's (repeatable)")
    parser.add_argument("--record", type=Path, metavar="FILE", help="append the run's record to this JSON file")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the dvc command only")
    parser.add_argument("--summarize", type=Path, metavar="FILE", help="print a Markdown table of the runs in FILE")
    argv = sys.argv[1:] if argv is None else argv
    # Only what follows `--` goes to dvc, so a mistyped option fails here instead of reaching it.
    split = argv.index("--") if "--" in argv else len(argv)
    args, extra = parser.parse_args(argv[:split]), argv[split + 1:]
    if args.summarize:
        print(summary_table(_read_json(args.summarize) or []), end="")
        return
    if args.profile is None:
        parser.error("give a profile (e.g. configs/kaggle-cpu.yaml) or --summarize FILE")

    base = read_yaml(Path("params.yaml"), "file not found; run from the repository root")
    changes = changes_for(read_profile(args.profile), args.local)
    try:
        parse_params(merge(base, changes))
    except ConfigError as err:
        raise ConfigError(f"{args.profile}: {err}") from None
    name = args.name or args.profile.stem
    command = exp_command(name, overrides(base, changes) + args.sets, extra)
    print(shlex.join(command), flush=True)
    if args.dry_run:
        return

    commit, dirty = _git("rev-parse", "HEAD"), bool(_git("status", "--porcelain", "--untracked-files=no"))
    start = time.perf_counter()
    result = subprocess.run(command)
    if result.returncode != 0:
        sys.exit(result.returncode)
    if args.record:
        record = run_record(name, args.profile, ["brainseg-exp", *argv],
                            command, time.perf_counter() - start, commit, dirty)
        append_record(args.record, record)
        test = record["test"] or {}
        print(f"{name}: test dice {test.get('dice_mean')} (per-image mean) in {record['wall_time_s'] / 60:.1f} min "
              f"-> {args.record}")


def entry_point() -> None:
    run(main)


if __name__ == "__main__":
    entry_point()
