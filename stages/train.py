"""Stage train: fit the U-Net, keep the best checkpoint in models/model.pt, log to metrics/train/."""

from pathlib import Path

from brainseg.cli import run
from brainseg.config import load_params
from brainseg.train import train


def main() -> None:
    train(load_params(), Path("data/processed"), Path("data/splits"), Path("models/model.pt"), Path("metrics/train"))


if __name__ == "__main__":
    run(main)
