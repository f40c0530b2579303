"""Stage train: fit the U-Net, keep the best epoch in models/model.pt, log to metrics/train/.

models/checkpoints/ holds the resumable state while training runs (train.resume: auto).
"""

from pathlib import Path

import own_src  # noqa: F401 - this repository's src/ first: the code dvc.lock hashes is the code that runs
from brainseg.cli import run
from brainseg.config import load_params
from brainseg.train import train


def main() -> None:
    train(load_params(), Path("data/processed"), Path("data/splits"), Path("models/model.pt"), Path("metrics/train"),
          Path("models/checkpoints"))


if __name__ == "__main__":
    run(main)
