"""Reproduction check: rerun the whole pipeline and compare with the metrics committed in git.

    python -m brainseg.reproduction [--rev HEAD] [--exact] [--compare-only]

Every JSON file under metrics/ that dvc.yaml declares (metrics files and plain outputs) is read from
git at `--rev` and from the working tree after `dvc repro --force`, and each number is judged by the
first rule in RULES whose pattern matches `file:key`:

- exact: data facts and counts, which do not depend on floating-point kernels;
- absolute: quality scores in [0, 1] (Dice, IoU, precision, recall, rates) may move by the rule's limit;
- relative: pixel distances and losses may move by the rule's fraction of the committed value;
- reported: choices tuned on data (threshold, TTA, component size, epochs) are printed, not gated.

CPU training is byte-identical on one host, but another host of the same machine type picks other
oneDNN kernels (cache sizes, instruction set, thread count), and the run drifts from the first epoch.
The limits are a few times the drift measured under such conditions (README: "What reproduces").
`--exact` demands identical numbers everywhere, for a check on the host that made the results.
Exit code 0: reproduced; 1: differences beyond the rules (listed); 2: could not run.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from brainseg.profiles import flatten, read_json_at


@dataclass(frozen=True)
class Rule:
    kind: str  # exact | absolute | relative | reported
    limit: float = 0.0

    def allows(self, committed: float, reproduced: float) -> bool:
        if self.kind == "reported":
            return True
        drift = abs(reproduced - committed)
        if self.kind == "absolute":
            return drift <= self.limit
        if self.kind == "relative":
            return drift <= self.limit * abs(committed)
        return drift == 0

    def __str__(self) -> str:
        return {"absolute": f"±{self.limit:g}", "relative": f"±{self.limit:.0%}"}.get(self.kind, self.kind)


# Limits are about 2.5-3x the largest drift measured for the group on one host under another thread count,
# instruction set or host (benchmarks/reproduction_drift.py; README: "What reproduces").
EXACT, REPORTED = Rule("exact"), Rule("reported")
SCORE = Rule("absolute", 0.05)       # test Dice, IoU, box agreement, the interval: largest drift seen 0.021
TRADE_OFF = Rule("absolute", 0.08)   # precision, recall: move against each other with the tuned threshold; 0.025
VALIDATION = Rule("absolute", 0.12)  # validation Dice, one epoch's or the tuning's: 0.043
SLICE_RATE = Rule("absolute", 0.12)  # rates over few items: one of the 18 tumor-free slices is 0.056
DISTANCE = Rule("relative", 0.60)    # HD95 in pixels, dominated by a few far-off slices: 23%
LOSS = Rule("relative", 0.25)        # end-of-training losses: 8%

# First match wins; patterns are fnmatch patterns over "file:flattened.key".
RULES: list[tuple[str, Rule]] = [
    ("metrics/data.json:*", EXACT),                      # the data is generated and decoded bit for bit
    ("*images", EXACT), ("*tumors", EXACT),              # test-set counts
    ("*threshold", REPORTED), ("*:tta", REPORTED), ("*min_component_px", REPORTED), ("*max_components", REPORTED),
    ("*best_epoch", REPORTED), ("metrics/train/metrics.json:step", REPORTED),
    ("metrics/train/metrics.json:lr", REPORTED),         # the schedule's value where training ended
    ("*hd95_px_*", DISTANCE),
    ("*loss", LOSS),
    ("*tumor_free_fpr", SLICE_RATE), ("*tumor_sensitivity", SLICE_RATE), ("*localisation_hit_rate", SLICE_RATE),
    ("*val_dice_mean", VALIDATION), ("metrics/train/metrics.json:*dice", VALIDATION),
    ("*precision*", TRADE_OFF), ("*recall*", TRADE_OFF),
    ("*dice*", SCORE), ("*iou*", SCORE),
]


def rule_for(file: str, key: str) -> tuple[Rule, bool]:
    """The rule for `key` of `file`, and whether a pattern matched (unmatched keys are held exact)."""
    for pattern, rule in RULES:
        if fnmatch.fnmatchcase(f"{file}:{key}", pattern):
            return rule, True
    return EXACT, False


def compared_files(dvc_yaml: Path) -> list[str]:
    """The JSON files under metrics/ that the stages declare (metrics and plain outputs), in stage order."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    paths = []
    for stage in stages.values():
        for entry in stage.get("outs", []) + stage.get("metrics", []):
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            if path.startswith("metrics/") and path.endswith(".json") and path not in paths:
                paths.append(path)
    return paths


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def compare(file: str, committed: dict, reproduced: dict, exact: bool = False) -> tuple[list[str], list[str], int]:
    """(failures, drifts within the rules, identical count) for one metrics document."""
    old, new = flatten(committed), flatten(reproduced)
    failures = [f"{key}: committed, but not reproduced" for key in sorted(old.keys() - new.keys())]
    failures += [f"{key}: reproduced, but not committed" for key in sorted(new.keys() - old.keys())]
    drifts, identical = [], 0
    for key in sorted(old.keys() & new.keys()):
        a, b = old[key], new[key]
        if a == b or (_is_number(a) and _is_number(b) and math.isnan(a) and math.isnan(b)):
            identical += 1
            continue
        rule = EXACT if exact else rule_for(file, key)[0]
        if _is_number(a) and _is_number(b):
            line = f"{key}: committed {a!r}, reproduced {b!r} (diff {b - a:+.3g}; rule {rule})"
            (drifts if rule.allows(a, b) else failures).append(line)
        else:
            line = f"{key}: committed {a!r}, reproduced {b!r} (rule {rule})"
            (drifts if rule is REPORTED else failures).append(line)
    return failures, drifts, identical


def check(rev: str, exact: bool, reproduce: bool) -> int:
    files = compared_files(Path("dvc.yaml"))
    committed = {path: read_json_at(rev, path) for path in files}
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
    failures = drifts = identical = 0
    for path in files:
        failed, drifted, same = compare(path, committed[path], json.loads(Path(path).read_text()), exact)
        failures, drifts, identical = failures + len(failed), drifts + len(drifted), identical + same
        for line in drifted:
            print(f"reproduction: within rules: {path}: {line}")
        for line in failed:
            print(f"reproduction: DIFFERS: {path}: {line}")
    mode = "exactly" if exact else "by the per-key rules"
    verdict = "differ from" if failures else "match"
    print(f"reproduction: {len(files)} metrics files {verdict} {rev} {mode}: {identical} values identical, "
          f"{drifts} within the rules, {failures} beyond them")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m brainseg.reproduction", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", default="HEAD", help="git revision holding the committed metrics (default: HEAD)")
    parser.add_argument("--exact", action="store_true",
                        help="every value must be identical (the host that made the results)")
    parser.add_argument("--compare-only", action="store_true",
                        help="compare the working tree's metrics without rerunning the pipeline")
    args = parser.parse_args(argv)
    return check(args.rev, args.exact, reproduce=not args.compare_only)


if __name__ == "__main__":
    sys.exit(main())
