"""What a training resolution costs before any learning: the Dice a perfect model would reach (prints, asserts nothing).

Each truth mask is brought to the training size the way preprocess does it (area resampling, half
coverage) and back to its original size the way evaluate scores predictions (bilinear, >= 0.5), then
scored against itself at the original size. The gap below 1 is lost to resolution alone; a trained
model loses more on top, mostly on small tumors.

    python benchmarks/resolution_ceiling.py DATASET [--split-file configs/splits/X.csv --subset test]
                                            [--sizes 96 128 160 192 256 320]

DATASET: a dataset zip or folder in any layout data/raw accepts. Measured on the 215 test slices of the
figshare outlines (configs/splits/figshare-kaggle.csv): per-image Dice 0.967 at 128 px, 0.981 at 256 px.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from brainseg.data.archive import safe_extract_zip
from brainseg.data.preprocess import resize_mask, sample_mask
from brainseg.data.layout import find_dataset_root, read_layout
from brainseg.data.index import names_index
from brainseg.data.split import read_split_file
from brainseg.evaluate import original_size_table


def truth_masks(root: Path, split_file: Path | None, subset: str) -> list[np.ndarray]:
    samples, _ = read_layout(find_dataset_root(root))
    if split_file is not None:
        found = names_index([s.name for s in samples])
        samples = [samples[found[name][0]] for name, s in read_split_file(split_file) if s == subset]
    return [sample_mask(s, s.height, s.width) for s in tqdm(samples, desc="masks", unit="img")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--split-file", type=Path)
    parser.add_argument("--subset", default="test")
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 128, 160, 192, 256, 320])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.dataset
        if root.is_file():
            safe_extract_zip(root, Path(scratch), 8 << 30)
            root = Path(scratch)
        truths = truth_masks(root, args.split_file, args.subset)
    print(f"{len(truths)} masks; tumor share of the slice: median {np.median([t.mean() for t in truths]):.4f}")
    print("size  per-image Dice  10th percentile  worst")
    for size in args.sizes:
        table = original_size_table([resize_mask(t, size).astype(np.float32) for t in truths], truths)
        print(f"{size:4d}  {table.dice.mean():14.4f}  {np.percentile(table.dice, 10):15.4f}  {table.dice.min():.4f}")


if __name__ == "__main__":
    main()
