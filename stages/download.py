"""Stage download: fetch the configured data source into data/raw/ (Roboflow COCO layout)."""

from pathlib import Path

import own_src  # noqa: F401 - this repository's src/ first: the code dvc.lock hashes is the code that runs
from brainseg.cli import run
from brainseg.config import load_params
from brainseg.data.sources import download


def main() -> None:
    params = load_params()
    manifest = download(params.data, params.seed, Path("data/raw"), Path("data/download.json"))
    print(f"download: {manifest['files']} files from source '{manifest['source']}' -> data/raw")


if __name__ == "__main__":
    run(main)
