"""Parameter profiles: validated against the config loader, passed to `dvc exp run` exactly."""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from brainseg.config import ConfigError, parse_params
from brainseg.profiles import (SUMMARY_COLUMNS, append_record, as_dvc_applies, changes_for, flatten, hydra_value, main,
                               merge, overrides, paired_comparison, portable_argv, read_profile, summary_table)
from tiny_repo import copy_repo, run

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted((ROOT / "configs").glob("*.yaml"))
BASE = yaml.safe_load((ROOT / "params.yaml").read_text())


def test_profiles_are_shipped():
    assert {p.stem for p in PROFILES} >= {"kaggle-cpu", "kaggle-gpu"}


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_each_profile_gives_valid_params_through_dvc(profile):
    changes = read_profile(profile)
    expected = merge(BASE, changes)
    parse_params(expected)
    assert expected != BASE
    assert as_dvc_applies(BASE, overrides(BASE, changes)) == expected


def test_a_profile_extends_another_and_changes_only_what_it_lists(tmp_path):
    (tmp_path / "base.yaml").write_text("preprocess:\n  image_size: 128\ntrain:\n  epochs: 30\n  augment:\n"
                                        "    hflip: 0.5\n    rotate_deg: 10.0\n")
    (tmp_path / "mid.yaml").write_text("extends: base.yaml\ntrain:\n  augment:\n    rotate_deg: 0.0\n")
    (tmp_path / "leaf.yaml").write_text("extends: mid.yaml\ntrain:\n  epochs: 75\n")
    assert read_profile(tmp_path / "leaf.yaml") == {
        "preprocess": {"image_size": 128}, "train": {"epochs": 75, "augment": {"hflip": 0.5, "rotate_deg": 0.0}}}
    assert read_profile(tmp_path / "base.yaml")["train"]["epochs"] == 30  # the parent is not changed by its child


@pytest.mark.parametrize("extends, message", [
    ("elsewhere.yaml", r"leaf\.yaml: extends elsewhere\.yaml, which is not a file in"),
    ("leaf.yaml", r"leaf\.yaml: extends leaf\.yaml, which leads back to leaf\.yaml"),
    ("loop.yaml", r"loop\.yaml: extends leaf\.yaml, which leads back to loop\.yaml"),
    ("[a.yaml, b.yaml]", r"leaf\.yaml: extends takes the file name of another profile"),
])
def test_a_bad_extends_names_the_profile(tmp_path, extends, message):
    (tmp_path / "loop.yaml").write_text("extends: leaf.yaml\n")
    (tmp_path / "leaf.yaml").write_text(f"extends: {extends}\ntrain:\n  epochs: 75\n")
    with pytest.raises(ConfigError, match=message):
        read_profile(tmp_path / "leaf.yaml")


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_a_shipped_variant_does_not_repeat_the_profile_it_extends(profile):
    """Each value has one home: a variant that restates its parent's value would keep it after the parent changes."""
    own = yaml.safe_load(profile.read_text())
    if "extends" not in own:
        return
    inherited = flatten(read_profile(profile.parent / own.pop("extends")))
    assert {k: v for k, v in flatten(own).items() if inherited.get(k, object()) == v} == {}


def test_local_switches_source_and_survives_dvc_parsing(tmp_path):
    archive = tmp_path / "my data's copy (v2).zip"
    archive.write_bytes(b"")
    changes = changes_for(read_profile(ROOT / "configs" / "kaggle-cpu.yaml"), str(archive))
    applied = as_dvc_applies(BASE, overrides(BASE, changes))
    assert applied["data"]["source"] == "local"
    assert applied["data"]["local_path"] == str(archive)
    assert applied == merge(BASE, changes)


@pytest.mark.parametrize("value", [
    "1e-4", "true", "null", "42", "a b", "it's", "back\\slash", "ends\\", "mid\\'q", "C:\\data\\x.zip",
    "../rel/path.zip", "/abs/x-y_z.zip", "adamw", "", 0.0001, 3, False, None, [0, 4, 8], ["a", "b c"]])
def test_values_keep_their_type_through_dvc(value):
    base = {"k": "placeholder"}
    assert as_dvc_applies(base, [f"k={hydra_value(value)}"]) == {"k": value}


def test_keys_missing_from_params_yaml_are_added():
    base = {"train": {"lr": 0.001}}
    sets = overrides(base, {"train": {"lr": 0.01, "grad_clip": 1.0}})
    assert sets == ["train.lr=0.01", "+train.grad_clip=1.0"]
    assert as_dvc_applies(base, sets) == {"train": {"lr": 0.01, "grad_clip": 1.0}}


def test_bad_profile_is_refused_before_dvc_runs(tmp_path, capsys, monkeypatch):
    profile = tmp_path / "typo.yaml"
    profile.write_text("train:\n  epoch: 3\n")
    monkeypatch.chdir(ROOT)
    with pytest.raises(ConfigError, match=r"typo\.yaml: unknown key train\.epoch"):
        main([str(profile), "--dry-run"])
    profile.write_text("preprocess:\n  image_size: 100\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml: preprocess\.image_size must be a multiple of 32"):
        main([str(profile), "--dry-run"])
    with pytest.raises(ConfigError, match=r"nope\.yaml: profile not found"):
        main([str(tmp_path / "nope.yaml")])
    with pytest.raises(ConfigError, match=r"missing\.zip: no such file"):
        main([str(ROOT / "configs" / "kaggle-cpu.yaml"), "--local", str(tmp_path / "missing.zip")])
    assert capsys.readouterr().out == ""


def test_dry_run_prints_the_dvc_command(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    main(["configs/kaggle-cpu.yaml", "--dry-run", "-n", "mine", "-S", "seed=7", "--", "--queue"])
    assert capsys.readouterr().out.split() == [
        "dvc", "exp", "run", "-n", "mine", "-S", "data.source=kaggle", "-S", "preprocess.image_size=128",
        "-S", "train.epochs=30", "-S", "train.patience=10", "-S", "train.amp=bf16", "-S", "train.channels_last=true",
        "-S", "reference.source=kaggle",
        "-S", "reference.kaggle_dataset=nikhilroxtomar/brain-tumor-segmentation",
        "-S", "reference.mapping=configs/references/figshare-kaggle.csv", "-S", "seed=7", "--queue"]


def test_a_user_set_replaces_the_profile_value_instead_of_repeating_it(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    main(["configs/figshare-cpu.yaml", "--dry-run", "-S", "preprocess.image_size=192"])
    command = capsys.readouterr().out
    assert command.count("preprocess.image_size=") == 1 and command.rstrip().endswith("preprocess.image_size=192")


def test_local_data_with_a_kaggle_reference_asks_for_the_reference(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    archive = tmp_path / "boxes.zip"
    archive.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"pass --reference PATH .* or -S reference\.source=none"):
        main(["configs/kaggle-cpu.yaml", "--local", str(archive), "--dry-run"])
    main(["configs/kaggle-cpu.yaml", "--local", str(archive), "--reference", str(archive), "--dry-run"])
    command = capsys.readouterr().out
    assert "-S reference.source=local" in command and f"-S reference.local_path={archive}" in command
    main(["configs/kaggle-cpu.yaml", "--local", str(archive), "--dry-run", "-S", "reference.source=none"])


def test_user_sets_are_validated_as_dvc_applies_them(monkeypatch):
    changed = as_dvc_applies(BASE, ["train.lr=0.002", "+train.new_key=0.2", "model.decoder_channels=[64,32,16,8,4]"])
    assert changed["train"]["lr"] == 0.002 and changed["train"]["new_key"] == 0.2
    assert changed["model"]["decoder_channels"] == [64, 32, 16, 8, 4]
    assert changed["train"]["epochs"] == BASE["train"]["epochs"]
    monkeypatch.chdir(ROOT)
    with pytest.raises(ConfigError, match=r"kaggle-cpu\.yaml with -S train\.amp=fp8: train\.amp must be one of"):
        main(["configs/kaggle-cpu.yaml", "--dry-run", "-S", "train.amp=fp8"])
    with pytest.raises(ConfigError, match=r"kaggle-cpu\.yaml with -S seed: Error parsing override 'seed'"):
        main(["configs/kaggle-cpu.yaml", "--dry-run", "-S", "seed"])
    with pytest.raises(ConfigError, match=r"Could not append to config. An item is already at 'train\.lr'"):
        main(["configs/kaggle-cpu.yaml", "--dry-run", "-S", "+train.lr=0.002"])
    with pytest.raises(ConfigError, match=r"with -S \+train\.lrr=0\.002: unknown key train\.lrr"):
        main(["configs/kaggle-cpu.yaml", "--dry-run", "-S", "+train.lrr=0.002"])


def test_bf16_on_a_cpu_that_would_emulate_it_is_refused_before_dvc_runs(monkeypatch, capsys):
    import brainseg.train

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(brainseg.train, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    started = []

    def fake_run(command, **kwargs):  # git answers; dvc is only noted
        if command[0] == "dvc":
            started.append(command)
        return subprocess.CompletedProcess(command, 0, stdout="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    sets = ["-S", "reference.source=none"]
    with pytest.raises(ConfigError, match=r"train\.amp: bf16 needs a CPU with bf16 instructions.*-S train\.amp=none"):
        main(["configs/kaggle-cpu.yaml", *sets])
    assert not started
    main(["configs/kaggle-cpu.yaml", "--dry-run", *sets])  # a command for another machine is still printed
    main(["configs/kaggle-cpu.yaml", *sets, "-S", "train.amp=none", "-S", "train.channels_last=false"])
    assert len(started) == 1 and "train.amp=none" in started[0]


def test_options_go_to_dvc_only_after_the_separator(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit):
        main(["configs/kaggle-cpu.yaml", "--dry-run", "--recrod", "x.json"])
    assert "unrecognized arguments: --recrod" in capsys.readouterr().err


def test_records_replace_a_run_of_the_same_name(tmp_path):
    path = tmp_path / "runs.json"
    append_record(path, {"run": "a", "x": 1})
    append_record(path, {"run": "b", "x": 2})
    append_record(path, {"run": "a", "x": 3})
    assert json.loads(path.read_text()) == [{"run": "b", "x": 2}, {"run": "a", "x": 3}]
    path.write_text("{}")
    with pytest.raises(ConfigError, match="runs.json: expected a JSON list"):
        append_record(path, {"run": "c"})


@pytest.mark.slow
def test_profile_runs_as_an_experiment_and_is_recorded(pipeline_repo, tmp_path):
    repo = copy_repo(pipeline_repo, tmp_path / "repo")
    (repo / "configs").mkdir(exist_ok=True)  # configs/splits came with the copy
    # Only evaluate and export depend on these keys, so the experiment reruns in seconds.
    (repo / "configs" / "strict.yaml").write_text("evaluate:\n  tune_on_val: false\n  threshold: 0.7\n")
    record = tmp_path / "runs.json"
    result = run(["brainseg-exp", "configs/strict.yaml", "--record", str(record)], repo)
    assert "dvc exp run -n strict -S evaluate.tune_on_val=false -S evaluate.threshold=0.7" in result.stdout

    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["evaluate"]["threshold"] == 0.7 and params["evaluate"]["tune_on_val"] is False
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    names = [e.get("name") for rev in shown for e in (rev.get("experiments") or [])]
    assert "strict" in names
    # The short comparison the README documents: changed params and headline figures, not all of them.
    header = run(["make", "-s", "exp-show"], repo).stdout.splitlines()[1]
    for column in ("evaluate.threshold", "evaluate.tune_on_val", "dice_mean", "dice_global"):
        assert column in header, column
    for column in ("precision_mean", "recall_global", "dice_mean_ci95_low", "train.loss", "Created"):
        assert column not in header, column

    [entry] = json.loads(record.read_text())
    test_metrics = json.loads((repo / "metrics" / "test.json").read_text())
    assert entry["run"] == "strict" and entry["test"] == test_metrics and test_metrics["threshold"] == 0.7
    assert entry["params"] == params
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert entry["code_commit"] == head and entry["uncommitted_changes"] is False
    assert entry["command"] == "brainseg-exp configs/strict.yaml --record runs.json"  # not this machine's path
    assert entry["wall_time_s"] > 0 and entry["hardware"]["cpu_cores"] >= 1 and entry["hardware"]["cpu"]
    assert entry["data_archive"] is None  # the phantom: no archive to name
    assert entry["per_image_csv"] == (repo / "plots/per_image.csv").read_text()
    shutil.rmtree(repo)


@pytest.mark.slow
def test_a_temp_run_from_a_local_zip_is_recorded_without_local_paths(pipeline_repo, tmp_path):
    repo = copy_repo(pipeline_repo, tmp_path / "repo")
    (repo / "configs").mkdir(exist_ok=True)  # configs/splits came with the copy
    (repo / "configs" / "strict.yaml").write_text("evaluate:\n  tune_on_val: false\n  threshold: 0.7\n")
    archive = Path(shutil.make_archive(str(tmp_path / "private folder" / "phantom copy"), "zip", repo / "data/raw"))
    workspace_metrics = (repo / "metrics/test.json").read_text()
    record = tmp_path / "runs.json"
    run(["brainseg-exp", "configs/strict.yaml", "--local", str(archive), "--reference", str(archive),
         "--record", str(record), "--", "--temp"], repo)

    # --temp leaves the workspace alone: the record must hold the experiment's results, not the workspace's.
    assert (repo / "metrics/test.json").read_text() == workspace_metrics
    [entry] = json.loads(record.read_text())
    assert entry["test"]["threshold"] == 0.7 and json.loads(workspace_metrics)["threshold"] != 0.7
    assert entry["params"]["data"] == {**entry["params"]["data"], "source": "local", "local_path": "phantom copy.zip"}
    archive_id = {"file": "phantom copy.zip", "sha256": hashlib.sha256(archive.read_bytes()).hexdigest()}
    assert entry["data_archive"] == archive_id and entry["reference_archive"] == archive_id
    assert entry["params"]["reference"]["local_path"] == "phantom copy.zip"
    assert entry["test"]["reference"]["dice_mean"] == entry["test"]["dice_mean"]  # the labels as their own reference
    assert str(tmp_path) not in json.dumps(entry)  # neither the archive's folder nor the record's
    assert entry["command"] == ("brainseg-exp configs/strict.yaml --local 'phantom copy.zip' --reference "
                                "'phantom copy.zip' --record runs.json -- --temp")
    shutil.rmtree(repo)


def test_recorded_commands_keep_repository_paths_only():
    assert portable_argv(["cfg.yaml", "--local", "../data/x y.zip", "--record", "results/k.json", "-n", "a"]) == [
        "cfg.yaml", "--local", "x y.zip", "--record", "results/k.json", "-n", "a"]
    assert portable_argv(["--record", "/tmp/k.json"]) == ["--record", "k.json"]
    assert portable_argv(["--reference", "/data/outlines.zip"]) == ["--reference", "outlines.zip"]
    assert portable_argv(["--record", "../k.json"]) == ["--record", "k.json"]


def test_a_queued_run_is_not_recorded(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    with pytest.raises(ConfigError, match="cannot record a queued run"):
        main(["configs/kaggle-cpu.yaml", "--record", str(tmp_path / "r.json"), "--dry-run", "--", "--queue"])


def _record(name: str, seed: int, dice: float, epochs: int = 30, reference: float | None = None) -> dict:
    params = merge(BASE, {"seed": seed, "train": {"epochs": epochs}})
    test = {key: 0.5 for key, _ in SUMMARY_COLUMNS.values() if "." not in key}
    test |= {"dice_mean": dice, "hd95_px_median": None}
    if reference is not None:
        test["reference"] = {"dice_mean": reference}
    return {"run": name, "params": params, "train": {"best_epoch": 7}, "wall_time_s": 125.0,
            "hardware": {"gpus": [], "cpu_cores": 2}, "test": test}


def test_summary_rows_and_seed_spread():
    runs = [_record("a", 42, 0.70), _record("b", 1, 0.80), _record("c", 2, 0.75), _record("longer", 42, 0.9, epochs=40)]
    lines = summary_table(runs).splitlines()
    assert len(lines) == 2 + 4 + 1  # header, rule, one row per run, one spread row (a, b, c differ only in seed)
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[:7] == ["`a`", "42", "128", "7 of 30", "2 CPU cores", "2 min", "0.700"]
    assert cells[-2:] == ["—", "—"]  # no HD95, no reference set
    spread = [c.strip() for c in lines[-1].strip("|").split("|")]
    assert spread[0] == "mean ± SD of `a`, `b`, `c`"
    assert spread[6] == "0.750 ± 0.050"  # sample SD of 0.70, 0.80, 0.75


def test_summary_shows_the_reference_score_where_runs_have_one():
    lines = summary_table([_record("a", 42, 0.7, reference=0.5), _record("b", 1, 0.8, reference=0.6)]).splitlines()
    assert lines[0].split("|")[-2].strip() == "Dice vs reference"
    assert [row.split("|")[-2].strip() for row in lines[2:]] == ["0.500", "0.600", "0.550 ± 0.071"]


def test_a_superseded_run_keeps_its_row_but_leaves_the_seed_spread():
    old = _record("old", 42, 0.5) | {"superseded": "the code then chose epochs differently"}
    lines = summary_table([old, _record("a", 42, 0.7), _record("b", 1, 0.8)]).splitlines()
    assert lines[2].startswith("| `old` (superseded) | 42 |")
    assert lines[-1].startswith("| mean ± SD of `a`, `b` |") and "0.750 ± 0.071" in lines[-1]



@pytest.mark.parametrize("page", ["kaggle", "outlines"])
def test_committed_results_page_shows_the_committed_records(capsys, page):
    records = ROOT / "results" / f"{page}.json"
    main(["--summarize", str(records)])
    table = capsys.readouterr().out
    assert table.count("\n") >= 3
    assert table in (ROOT / "results" / f"{page}.md").read_text()


def _strings(value):
    if isinstance(value, dict):
        for inner in value.values():
            yield from _strings(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _strings(inner)
    elif isinstance(value, str):
        yield value


def test_committed_records_carry_no_local_paths():
    for path in (ROOT / "results").glob("*.json"):
        for record in json.loads(path.read_text()):
            for text in _strings(record):
                for word in text.replace("=", " ").split():
                    assert not word.startswith(("/", "~", "../")), f"{path.name}: {record['run']}: {text}"


def test_compare_pairs_per_image_scores_of_two_runs_by_file(tmp_path, monkeypatch, capsys):
    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("config", "user.email", "t@example.org")
    git("config", "user.name", "t")
    (tmp_path / "plots").mkdir()
    rng = np.random.default_rng(0)
    base = rng.uniform(0.4, 0.9, 50)
    commits = {}
    for name, dice in (("before", base), ("after", base + 0.05 + rng.normal(0, 0.01, 50))):
        rows = [f"{i}.png,{d:.6f},{d / 2:.6f}" for i, d in enumerate(dice)]
        order = 1 if name == "before" else -1  # pairs are made by file, not by row position
        (tmp_path / "plots/per_image.csv").write_text("file,dice,ref_dice\n" + "\n".join(rows[::order]) + "\n")
        git("add", "-A")
        git("commit", "-qm", name)
        commits[name] = git("rev-parse", "HEAD")
    git("update-ref", "refs/exps/ab/cdef/after-run", commits["after"])  # where dvc keeps `exp run -n after-run`
    monkeypatch.chdir(tmp_path)

    result = paired_comparison(commits["before"], "after-run")
    assert result["images"] == 50 and result["difference"] == pytest.approx(0.05, abs=0.005)
    assert result["ci95"][0] > 0.04 and result["p_b_not_better"] == 0.0
    assert paired_comparison(commits["before"], "after-run", column="ref_dice")["difference"] == \
        pytest.approx(0.025, abs=0.003)
    main(["--compare", "after-run", commits["before"]])
    assert "50 test images, per-image dice" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="no-such-run: no such git revision or experiment"):
        paired_comparison("no-such-run", "after-run")
    with pytest.raises(ConfigError, match="no column 'hd95'"):
        paired_comparison(commits["before"], "after-run", column="hd95")
    # Several runs a side (seeds): each image's score is their mean.
    pooled = paired_comparison(commits["before"], f"after-run,{commits['before']}")
    assert pooled["difference"] == pytest.approx(result["difference"] / 2, abs=1e-9)
    assert pooled["mean_b"] == pytest.approx((result["mean_a"] + result["mean_b"]) / 2, abs=1e-9)


def test_compare_takes_per_image_scores_from_records_without_git(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no repository here: the records alone must do
    rng = np.random.default_rng(1)
    base = rng.uniform(0.4, 0.9, 40)
    records = tmp_path / "runs.json"
    for name, dice in (("before", base), ("after", base - 0.03 + rng.normal(0, 0.01, 40))):
        rows = [f"{i}.png,{d:.6f},{d / 2:.6f}" for i, d in enumerate(dice)]
        append_record(records, {"run": name, "per_image_csv": "file,dice,ref_dice\n" + "\n".join(rows) + "\n"})
    append_record(records, {"run": "old"})  # recorded before records kept per-image scores

    result = paired_comparison("before", "after", records=records)
    assert result["images"] == 40 and result["difference"] == pytest.approx(-0.03, abs=0.005)
    assert result["ci95"][1] < 0 and result["p_b_not_better"] == 1.0
    main(["--compare", "before", "after", "--records", str(records), "--column", "ref_dice"])
    assert "40 test images, per-image ref_dice" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="old: its record in .*runs.json predates per-image scores"):
        paired_comparison("old", "after", records=records)
    with pytest.raises(ConfigError, match="missing: no run of that name in .*runs.json"):
        paired_comparison("missing", "after", records=records)
