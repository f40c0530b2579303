"""Imported first by every stage script: puts this repository's src/ ahead of any installed brainseg.

DVC hashes src/ as the stages' dependencies, so a stage must run that code. Without this, an editable
install of another clone, or a stale non-editable install, would be imported instead without a word, and
dvc.lock would record code that did not run. (Python puts stages/ first on sys.path, so this module is found.)
"""

import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))
