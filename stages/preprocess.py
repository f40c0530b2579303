"""Stage preprocess: decode, rasterise and resize every image once into data/processed/."""

import json
from pathlib import Path

from brainseg.cli import run
from brainseg.config import load_params
from brainseg.data.archive import atomic_write_text
from brainseg.data.cache import preprocess


def main() -> None:
    params = load_params()
    audit = preprocess(Path("data/raw"), Path("data/processed"), params.preprocess.image_size)
    atomic_write_text(Path("metrics/data.json"), json.dumps(audit, indent=2) + "\n")
    print(f"preprocess: {audit['images']} images at {params.preprocess.image_size}px, "
          f"{audit['tumor_free_fraction']:.1%} tumor-free, {audit['rectangle_fraction']:.1%} of polygons are boxes")


if __name__ == "__main__":
    run(main)
