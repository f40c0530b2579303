"""Stage split: assign processed images to train / val / test lists in data/splits/."""

from pathlib import Path

import own_src  # noqa: F401 - this repository's src/ first: the code dvc.lock hashes is the code that runs
from brainseg.cli import run
from brainseg.config import load_params
from brainseg.data.index import read_index
from brainseg.data.split import file_split, predefined_split, random_group_split, write_split


def main() -> None:
    params = load_params()
    index = read_index(Path("data/processed"))
    cfg = params.split
    if cfg.strategy == "predefined":
        split = predefined_split(index)
    elif cfg.strategy == "file":
        split = file_split(index, Path(cfg.file), cfg.unlisted)
    else:
        split = random_group_split(index, {"train": cfg.train, "val": cfg.val, "test": cfg.test}, params.seed)
    write_split(split, Path("data/splits"))
    excluded = len(index) - sum(len(v) for v in split.values())
    print(f"split ({cfg.strategy}): " + ", ".join(f"{k} {len(v)}" for k, v in split.items())
          + (f", excluded {excluded}" if excluded else ""))


if __name__ == "__main__":
    run(main)
