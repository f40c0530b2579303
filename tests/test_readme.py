"""The README's architecture table names every module of the package, and nothing that is gone."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_architecture_table_names_every_module():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Architecture"):]
    section = section[:section.index("\n## ", 1)] if "\n## " in section[1:] else section
    named = set(re.findall(r"`([a-z_/]+\.py)`", section))
    package = ROOT / "src/brainseg"
    modules = {p.relative_to(package).as_posix() for p in package.rglob("*.py") if p.name != "__init__.py"}
    assert modules - named == set(), "modules the README's Architecture table does not describe"
    assert named - modules == set(), "the Architecture table names modules that do not exist"
