"""Named parameter profiles (`configs/*.yaml`) run as DVC experiments, with a record of each run.

A profile lists only the keys it changes in params.yaml, so the committed pipeline stays on the
phantom and a profile run is an ordinary experiment: `dvc exp show` and `dvc metrics diff` compare
it like any other. `brainseg-exp configs/kaggle-cpu.yaml` validates params.yaml + profile with the
config loader before anything runs, then calls `dvc exp run -S key=value ...`; `--record FILE`
appends the command, code commit, params, hardware, wall time and metrics of the run to FILE.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from brainseg.cli import run
from brainseg.config import ConfigError, Params, parse_params, read_yaml
from brainseg.io import atomic_write_text
from brainseg.metrics import bootstrap_means

# Text Hydra's grammar reads back as the same string when unquoted: names and relative/absolute paths.
PLAIN_STRING = re.compile(r"(?:[A-Za-z_]|\.{1,2}/|/)[A-Za-z0-9_./-]*")
HYDRA_KEYWORDS = {"true", "false", "null", "nan", "inf"}


def read_profile(path: Path, _extended_by: tuple[Path, ...] = ()) -> dict:
    """The params.yaml keys a profile changes. `extends: OTHER.yaml` (a file beside it) starts from the
    changes of another profile, so that a variant lists only what it does differently and a change to the
    recipe it builds on is made in one place."""
    profile = read_yaml(path, "profile not found; the shipped ones are in configs/")
    if not isinstance(profile, dict) or not profile:
        raise ConfigError(f"{path}: a profile is a mapping of the params.yaml keys it changes")
    parent = profile.pop("extends", None)
    if parent is None:
        return profile
    if not isinstance(parent, str) or not parent:
        raise ConfigError(f"{path}: extends takes the file name of another profile beside it, e.g. extends: kaggle-cpu.yaml")
    parent_path = path.parent / parent
    chain = (*_extended_by, path.resolve())
    if parent_path.resolve() in chain:
        raise ConfigError(f"{path}: extends {parent}, which leads back to {path.name}; one of them must stand alone")
    if not parent_path.is_file():
        raise ConfigError(f"{path}: extends {parent}, which is not a file in {path.parent}/")
    return merge(read_profile(parent_path, chain), profile)


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


def overrides(base: dict, changes: dict, sets: list[str] = ()) -> list[str]:
    """`-S` arguments that turn `base` into merge(base, changes), then `sets` (the user's own `-S`, which
    replace the profile's value of the same key rather than repeat it); keys new to params.yaml get `+`."""
    existing = flatten(base)
    own = {s.split("=", 1)[0].lstrip("+") for s in sets}
    return [f"{'' if key in existing else '+'}{key}={hydra_value(value)}"
            for key, value in flatten(changes).items() if key not in own] + list(sets)


def as_dvc_applies(base: dict, sets: list[str]) -> dict:
    """`base` as `dvc exp run -S ...` leaves params.yaml: DVC's own override code (Hydra's grammar) on a copy,
    so what is validated here is exactly what the stages will read."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(yaml.safe_dump(base, sort_keys=False))
        try:
            apply_overrides(path, sets)
        except InvalidArgumentError as err:  # its own text is generic; Hydra's, the cause, names the override
            raise ConfigError("; ".join(line for line in str(err.__cause__ or err).splitlines() if line)) from None
        return yaml.safe_load(path.read_text())


def check_can_train(params: Params) -> None:
    """What training on this machine would refuse, found before the download and preprocessing that
    come first: bf16 on a CPU that only emulates it (brainseg.train.amp_dtype, which names the fix)."""
    if params.train.amp != "bf16" or params.train.device == "cuda":
        return
    from brainseg.distributed import resolve_device  # torch: imported only when bf16 is asked for
    from brainseg.train import amp_dtype

    amp_dtype("bf16", resolve_device(params.train.device))


def changes_for(profile: dict, local: str | None, must_exist: bool = True, reference: str | None = None) -> dict:
    """The profile, switched to the `local` source at `local` (and the reference set to the local one at
    `reference`) when given."""
    for option, path in (("--local", local), ("--reference", reference)):
        if must_exist and path is not None and not Path(path).expanduser().exists():
            raise ConfigError(f"{path}: no such file or folder; {option} takes a dataset zip or its extracted folder")
    if local is not None:
        profile = merge(profile, {"data": {"source": "local", "local_path": local}})
    if reference is not None:
        profile = merge(profile, {"reference": {"source": "local", "local_path": reference}})
    return profile


def exp_command(name: str, sets: list[str], extra: list[str]) -> list[str]:
    return ["dvc", "exp", "run", "-n", name, *[a for s in sets for a in ("-S", s)], *extra]


def _git(*args: str, check: bool = True) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=check).stdout.strip()


def _cpu_model() -> str:
    """The processor's model name: hosts of one machine type can differ here, and CPU training with them."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _hardware() -> dict:
    import torch  # noqa: PLC0415 - only a recorded run needs it

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"cpu_cores": os.cpu_count(), "cpu": _cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads(), "gpus": gpus, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__}


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def experiment_ref(baseline: str, name: str) -> str:
    """The git ref where `dvc exp run -n name` keeps its commit: also for --temp runs, which leave the
    workspace as it was."""
    return f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"


def read_text_at(rev: str, path: str) -> str | None:
    """The file `path` as committed at git revision `rev`; None where it is not there."""
    shown = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    return shown.stdout if shown.returncode == 0 else None


def read_json_at(rev: str, path: str) -> Any:
    """The JSON file `path` as committed at git revision `rev`; None where it is not there."""
    text = read_text_at(rev, path)
    return None if text is None else json.loads(text)


def resolve_run(name: str) -> str:
    """A git revision, or the name of an experiment (`dvc exp run -n NAME`) -> its commit."""
    commit = _git("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}", check=False)
    if commit:
        return commit
    refs = [line.split() for line in _git("for-each-ref", "--format=%(objectname) %(refname)", "refs/exps",
                                          check=False).splitlines()]
    matches = sorted({sha for sha, ref in refs if ref.rsplit("/", 1)[-1] == name and "/exec/" not in ref})
    if len(matches) != 1:
        raise ConfigError(f"{name}: " + ("no such git revision or experiment; `dvc exp list --all-commits` lists "
                                         "them" if not matches else f"names {len(matches)} experiments; give a commit"))
    return matches[0]


def _recorded_per_image(records: Path, run_name: str) -> str:
    """The plots/per_image.csv a run record in `records` keeps (`run_record`'s per_image_csv)."""
    matches = [r for r in _read_json(records) or [] if r.get("run") == run_name]
    if not matches:
        raise ConfigError(f"{run_name}: no run of that name in {records}")
    if not matches[0].get("per_image_csv"):
        raise ConfigError(f"{run_name}: its record in {records} predates per-image scores in records; compare it "
                          "by experiment name or commit in a repository that holds its experiment")
    return matches[0]["per_image_csv"]


def _per_image(run_name: str, column: str, records: Path | None = None) -> pd.Series:
    """One run's per-image scores by file: plots/per_image.csv at its commit, or as kept in its record."""
    if records is not None:
        text = _recorded_per_image(records, run_name)
    else:
        text = read_text_at(resolve_run(run_name), "plots/per_image.csv")
        if text is None:
            raise ConfigError(f"{run_name}: no plots/per_image.csv at that commit (not an evaluated run)")
    table = pd.read_csv(io.StringIO(text))
    if column not in table:
        raise ConfigError(f"{run_name}: plots/per_image.csv has no column {column!r}")
    return table.set_index("file")[column]


def _same_images(a: pd.Series, b: pd.Series, name_a: str, name_b: str) -> None:
    if set(a.index) != set(b.index):
        raise ConfigError(f"{name_a} and {name_b} were tested on different images "
                          f"({len(set(a.index) ^ set(b.index))} not in both); a paired comparison needs the same")


def paired_comparison(run_a: str, run_b: str, column: str = "dice", seed: int = 0, records: Path | None = None) -> dict:
    """Per-image scores of two runs on the same test images (plots/per_image.csv at each run's commit,
    or kept in their records in `records`, which outlive the experiments' git refs):
    the mean difference b - a with its paired bootstrap 95% interval, and the share of resamples in
    which b is not better (a one-sided bootstrap p-value).

    Either side may name several runs separated by commas (e.g. the seeds of one recipe): each image's
    score is then their mean, which averages out much of the training noise a single pair carries."""
    sides = []
    for side in (run_a, run_b):
        names = [name for name in side.split(",") if name]
        scores = [_per_image(name, column, records) for name in names]
        for name, other in zip(names[1:], scores[1:]):
            _same_images(scores[0], other, names[0], name)
        sides.append(sum(score.loc[scores[0].index] for score in scores) / len(scores))
    a, b = sides
    _same_images(a, b, run_a, run_b)
    difference = (b - a.loc[b.index]).to_numpy()
    means = bootstrap_means(difference, seed)
    return {"images": len(difference), "column": column, "mean_a": float(a.mean()), "mean_b": float(b.mean()),
            "difference": float(difference.mean()), "ci95": [float(q) for q in np.quantile(means, [0.025, 0.975])],
            "p_b_not_better": float((means <= 0).mean())}


def run_record(name: str, profile: Path, command: list[str], dvc_command: list[str], wall_s: float, commit: str,
               dirty: bool) -> dict:
    """What a reader needs to trust and repeat the run, read from the experiment's own commit.

    `command` and `dvc_command` are the portable forms (no local paths): see `main`.
    """
    ref = experiment_ref(commit, name)
    params = yaml.safe_load(_git("show", f"{ref}:params.yaml"))
    archives = {}
    for section, manifest_path in (("data", "data/download.json"), ("reference", "data/reference.json")):
        if params.get(section, {}).get("source") == "local":
            # The file name and its hash identify the data; the path on this machine would only leak it.
            manifest = read_json_at(ref, manifest_path) or {}
            archives[section] = {"file": Path(params[section]["local_path"]).name,
                                 "sha256": manifest.get("archive_sha256")}
            params[section]["local_path"] = archives[section]["file"]
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
        "params": params,
        "data_archive": archives.get("data"),
        "reference_archive": archives.get("reference"),
        "data": read_json_at(ref, "metrics/data.json"),
        "train": read_json_at(ref, "metrics/train/metrics.json"),
        "test": read_json_at(ref, "metrics/test.json"),
        "test_details": read_json_at(ref, "metrics/test_details.json"),
        # Kept so that later paired comparisons (`--compare A B --records FILE`) need no experiment refs.
        "per_image_csv": read_text_at(ref, "plots/per_image.csv"),
    }


def portable_argv(argv: list[str]) -> list[str]:
    """`argv` for a record others read: --local and --reference cut to the archive's file name (its SHA-256 is recorded
    beside it), --record to its file name unless it is a path inside the repository."""
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        value = Path(out[i + 1])
        if arg in ("--local", "--reference") or (arg == "--record" and (value.is_absolute() or ".." in value.parts)):
            out[i + 1] = value.name
    return out


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
    "HD95 median (px)": ("hd95_px_median", ".1f"), "Dice vs reference": ("reference.dice_mean", ".3f"),
}


def _hardware_text(hardware: dict) -> str:
    return ", ".join(hardware["gpus"]) or f"{hardware['cpu_cores']} CPU cores"


def summary_table(runs: list[dict]) -> str:
    """Markdown: one row per recorded run, then mean ± sample SD over runs that differ only in seed.

    A record with a `superseded` reason (code since changed what the same params do) keeps its row,
    marked, and stays out of the spread rows."""
    header = ["run", "seed", "image size", "best epoch", "hardware", "wall time", *SUMMARY_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in runs:
        name = f"`{r['run']}`" + (" (superseded)" if r.get("superseded") else "")
        cells = [name, str(r["params"]["seed"]), str(r["params"]["preprocess"]["image_size"]),
                 f"{r['train']['best_epoch']} of {r['params']['train']['epochs']}", _hardware_text(r["hardware"]),
                 f"{r['wall_time_s'] / 60:.0f} min"]
        test = flatten(r["test"])
        cells += [format(test[key], fmt) if test.get(key) is not None else "—"
                  for key, fmt in SUMMARY_COLUMNS.values()]
        lines.append("| " + " | ".join(cells) + " |")
    groups: dict[str, list[dict]] = {}
    for r in (r for r in runs if not r.get("superseded")):
        all_but_seed = json.dumps({k: v for k, v in r["params"].items() if k != "seed"}, sort_keys=True)
        groups.setdefault(all_but_seed, []).append(r)
    for group in groups.values():
        if len(group) < 2:
            continue
        names = ", ".join(f"`{r['run']}`" for r in group)
        cells = [f"mean ± SD of {names}"] + [""] * (len(header) - len(SUMMARY_COLUMNS) - 1)
        for key, fmt in SUMMARY_COLUMNS.values():
            values = np.array([flatten(r["test"]).get(key) for r in group], dtype=float)  # None -> nan
            cells.append("—" if np.isnan(values).any() else
                         f"{format(values.mean(), fmt)} ± {format(values.std(ddof=1), fmt)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="brainseg-exp", description=__doc__.split("\n\n")[0],
        epilog="Arguments after `--` go to `dvc exp run` unchanged (e.g. -- --queue).")
    parser.add_argument("profile", type=Path, nargs="?",
                        help="a YAML file of params.yaml keys to change, e.g. configs/kaggle-cpu.yaml")
    parser.add_argument("--local", metavar="PATH", help="use the local source: the Kaggle zip or its extracted folder")
    parser.add_argument("--reference", metavar="PATH",
                        help="score the test images against this reference set too: a dataset zip or folder")
    parser.add_argument("-n", "--name", help="experiment name (default: the profile's file name)")
    parser.add_argument("-S", "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="one more override, after the profile's (repeatable)")
    parser.add_argument("--record", type=Path, metavar="FILE", help="append the run's record to this JSON file")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the dvc command only")
    parser.add_argument("--summarize", type=Path, metavar="FILE", help="print a Markdown table of the runs in FILE")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"),
                        help="paired bootstrap of per-image test scores of two runs (experiment names or commits; "
                             "A1,A2 averages each image over several runs, e.g. seeds)")
    parser.add_argument("--column", default="dice",
                        help="with --compare: the plots/per_image.csv column (default dice; ref_dice: vs reference)")
    parser.add_argument("--records", type=Path, metavar="FILE",
                        help="with --compare: take A and B from the run records in FILE (as --record writes them)")
    argv = sys.argv[1:] if argv is None else argv
    # Only what follows `--` goes to dvc, so a mistyped option fails here instead of reaching it.
    split = argv.index("--") if "--" in argv else len(argv)
    args, extra = parser.parse_args(argv[:split]), argv[split + 1:]
    if args.summarize:
        print(summary_table(_read_json(args.summarize) or []), end="")
        return
    if args.compare:
        c = paired_comparison(*args.compare, column=args.column, records=args.records)
        print(f"{c['images']} test images, per-image {c['column']}: {args.compare[0]} {c['mean_a']:.4f}, "
              f"{args.compare[1]} {c['mean_b']:.4f}; difference {c['difference']:+.4f} "
              f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}] (paired bootstrap 95%), "
              f"share of resamples where {args.compare[1]} is not better: {c['p_b_not_better']:.4f}")
        return
    if args.profile is None:
        parser.error("give a profile (e.g. configs/kaggle-cpu.yaml) or --summarize FILE")

    base = read_yaml(Path("params.yaml"), "file not found; run from the repository root")
    profile = read_profile(args.profile)
    changes = changes_for(profile, args.local, reference=args.reference)
    if (args.local and flatten(changes).get("reference.source") == "kaggle"
            and not any(s.startswith("reference.source=") for s in args.sets)):
        raise ConfigError(f"{args.profile} also fetches a reference set from Kaggle; with --local, pass --reference "
                          "PATH (its zip or folder) too, or -S reference.source=none to go without it")
    sets = overrides(base, changes, args.sets)
    try:
        params = parse_params(as_dvc_applies(base, sets))
    except ConfigError as err:
        given = f"{args.profile} with -S {' -S '.join(args.sets)}" if args.sets else f"{args.profile}"
        raise ConfigError(f"{given}: {err}") from None
    name = args.name or args.profile.stem
    command = exp_command(name, sets, extra)
    print(shlex.join(command), flush=True)
    if args.record and "--queue" in extra:
        raise ConfigError("--record cannot record a queued run: it runs later, under `dvc queue start`. "
                          "Run it without --queue (--temp is fine) to record it.")
    if args.dry_run:  # the command may be meant for another machine: this one's abilities are not checked
        return
    check_can_train(params)

    commit, dirty = _git("rev-parse", "HEAD"), bool(_git("status", "--porcelain", "--untracked-files=no"))
    start = time.perf_counter()
    result = subprocess.run(command)
    if result.returncode != 0:
        sys.exit(result.returncode)
    if args.record:
        # The same command with the archive's file name for its path: what a reader can repeat.
        portable = changes_for(profile, Path(args.local).name if args.local else None, must_exist=False,
                               reference=Path(args.reference).name if args.reference else None)
        record = run_record(name, args.profile, ["brainseg-exp", *portable_argv(argv)],
                            exp_command(name, overrides(base, portable, args.sets), extra),
                            time.perf_counter() - start, commit, dirty)
        append_record(args.record, record)
        test = record["test"] or {}
        print(f"{name}: test dice {test.get('dice_mean')} (per-image mean) in {record['wall_time_s'] / 60:.1f} min "
              f"-> {args.record}")


def entry_point() -> None:
    run(main)


if __name__ == "__main__":
    entry_point()
