"""Every stage in dvc.yaml depends on every project module its script imports, directly or not.

Otherwise `dvc repro` skips a stage whose code changed and its outputs go stale while `dvc status`
says all is well (e.g. evaluate used to import train.py and model.py without depending on them).
"""

from __future__ import annotations

import ast
import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tiny_repo import ROOT

PACKAGE_ROOT = ROOT / "src"

# Modules that cannot change what a stage writes, so need not rerun it when edited.
NOT_OUTPUT_BEARING = {
    "src/brainseg/__init__.py",       # package markers; brainseg's also holds __version__, which only export
    "src/brainseg/data/__init__.py",  # writes (model.json), so export alone depends on it
    "src/brainseg/cli.py",            # turns a BrainsegError into a message and exit code 2
    "src/brainseg/errors.py",         # the BrainsegError class itself
}


def _module_file(name: str) -> Path | None:
    """The source file of project module `name` (a package's __init__.py), or None outside the project."""
    path = PACKAGE_ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(source: Path) -> set[str]:
    """Dotted names of every module `source` imports, at any depth of its code (functions included)."""
    names = set()
    for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))  # parents run too
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # submodules imported by name
    return names


def project_imports(script: Path) -> set[str]:
    """Repository-relative paths of the project modules `script` imports, transitively."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for name in _imported_modules(todo.pop()):
            path = _module_file(name)
            if path is not None and path not in seen:
                seen.add(path)
                todo.append(path)
    return {p.relative_to(ROOT).as_posix() for p in seen}


def missing_deps(dvc_yaml: dict) -> dict[str, list[str]]:
    """Stage -> project modules its command's script imports that its deps do not cover."""
    missing = {}
    for name, stage in dvc_yaml["stages"].items():
        script = stage["cmd"].split()[1]  # "python stages/x.py"
        deps = [d.rstrip("/") for d in stage.get("deps", [])]
        covered = lambda path: any(path == d or path.startswith(d + "/") for d in deps)  # noqa: E731
        lacking = sorted(p for p in project_imports(ROOT / script) - NOT_OUTPUT_BEARING if not covered(p))
        if not covered(script):
            lacking.insert(0, script)
        if lacking:
            missing[name] = lacking
    return missing


def _dvc_yaml() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_every_stage_depends_on_the_modules_its_script_imports():
    assert missing_deps(_dvc_yaml()) == {}


def test_the_import_graph_is_transitive_and_sees_imports_inside_functions(tmp_path):
    evaluate = project_imports(ROOT / "stages/evaluate.py")
    # stages/evaluate.py -> evaluate.py -> data/preprocess.py -> imaging.py: two modules away from the script.
    assert {"src/brainseg/evaluate.py", "src/brainseg/data/preprocess.py", "src/brainseg/imaging.py"} <= evaluate
    assert "src/brainseg/train.py" not in evaluate  # the stage must not need the training loop
    script = tmp_path / "lazy.py"
    script.write_text("def main():\n    from brainseg.data import archive\n")
    assert {"src/brainseg/data/archive.py", "src/brainseg/errors.py"} <= project_imports(script)


def test_a_module_missing_from_a_stage_is_named():
    config = _dvc_yaml()
    broken = copy.deepcopy(config)
    broken["stages"]["evaluate"]["deps"].remove("src/brainseg/model.py")
    broken["stages"]["train"]["deps"].remove("stages/train.py")
    assert missing_deps(broken) == {"evaluate": ["src/brainseg/model.py"], "train": ["stages/train.py"]}
    # A folder dep covers the modules below it.
    folder = copy.deepcopy(config)
    deps = folder["stages"]["preprocess"]["deps"]
    deps[:] = [d for d in deps if not d.startswith("src/brainseg/data/")] + ["src/brainseg/data"]
    assert "preprocess" not in missing_deps(folder)


def _first_imports(script: Path) -> list[str]:
    """The modules `script`'s top-level import statements name, in order."""
    names = []
    for node in ast.parse(script.read_text()).body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module)
    return names


def test_every_stage_script_puts_its_own_src_first():
    for stage in _dvc_yaml()["stages"].values():
        imports = _first_imports(ROOT / stage["cmd"].split()[1])
        first_project = next(i for i, name in enumerate(imports) if name.split(".")[0] == "brainseg")
        assert "own_src" in imports[:first_project], stage["cmd"]


def test_a_stage_runs_the_code_beside_it_not_another_installed_copy(tmp_path):
    """Another clone's src/ on PYTHONPATH (as an editable install of it would be) must not be what runs."""
    for name in ("stages", "src"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    marker = tmp_path / "src/brainseg/__init__.py"
    marker.write_text(marker.read_text() + "\nprint('brainseg imported from', __file__)\n")
    result = subprocess.run([sys.executable, "stages/split.py"], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)})
    assert f"brainseg imported from {marker}" in result.stdout, result.stdout + result.stderr
