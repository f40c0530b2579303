"""Stage reference: fetch the optional reference set (a second truth for the test images) into data/reference/."""

from pathlib import Path

import own_src  # noqa: F401 - this repository's src/ first: the code dvc.lock hashes is the code that runs
from brainseg.cli import run
from brainseg.config import load_params
from brainseg.data.sources import download_reference


def main() -> None:
    params = load_params()
    manifest = download_reference(params.reference, params.data, Path("data/reference"), Path("data/reference.json"))
    print(f"reference: {manifest.get('files', 0)} files from source '{manifest['source']}' -> data/reference")


if __name__ == "__main__":
    run(main)
