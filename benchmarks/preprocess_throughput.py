"""Preprocess throughput on a full-size phantom, next to a per-item PIL loader (prints, asserts nothing).

The phantom matches the Kaggle dataset's shape: 2,146 JPEGs at 640x640, splits 1502/429/215.
It is generated once into a temp folder and reused by later runs. --root measures any folder in
the Kaggle layout instead (for example an extracted copy of the real download).

Two comparisons: one pass (preprocess vs the per-item loader decoding every image once), and a
training run of --epochs epochs, where preprocess runs once and each epoch reads the cached arrays
(SliceDataset, no augmentation) while the per-item loader decodes everything again.

    python benchmarks/preprocess_throughput.py [--sizes 128 256] [--repeats 2] [--epochs 24] [--root DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from brainseg.data.archive import safe_extract_zip
from brainseg.data.preprocess import preprocess
from brainseg.data.dataset import SliceDataset
from brainseg.config import PhantomConfig
from brainseg.data.phantom import write_phantom_archive

COUNTS = {"train": 1502, "valid": 429, "test": 215}
SPLITS = tuple(COUNTS)
SEED = 0


def phantom_root() -> Path:
    root = Path(tempfile.gettempdir()) / "brainseg-bench-phantom-2146-640"
    done = root / ".complete"
    if not done.is_file():
        root.mkdir(parents=True, exist_ok=True)
        archive = root / "phantom.zip"
        write_phantom_archive(archive, PhantomConfig(**COUNTS, image_size=640), SEED)
        extracted = root / "raw"
        extracted.mkdir(exist_ok=True)
        safe_extract_zip(archive, extracted, 2**32)
        archive.unlink()
        done.touch()
    return root / "raw"


class NotebookDataset:
    """The usual per-item loader: PIL open, draw polygons with ImageDraw, PIL resize, per __getitem__."""

    def __init__(self, root: Path, size: int):
        self.size = size
        self.items = []
        for split in SPLITS:
            coco = json.loads((root / split / "_annotations.coco.json").read_text())
            polygons: dict[int, list] = {}
            for ann in coco["annotations"]:
                polygons.setdefault(ann["image_id"], []).extend(ann["segmentation"])
            self.items += [(root / split / img["file_name"], polygons.get(img["id"], [])) for img in coco["images"]]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        path, polygons = self.items[i]
        image = Image.open(path).convert("L")
        mask = Image.new("L", image.size, 0)
        draw = ImageDraw.Draw(mask)
        for flat in polygons:
            if len(flat) >= 6:
                draw.polygon(list(zip(flat[::2], flat[1::2])), fill=1)
        image = image.resize((self.size, self.size), Image.BILINEAR)
        mask = mask.resize((self.size, self.size), Image.NEAREST)
        return np.asarray(image), np.asarray(mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per size; the best is reported")
    parser.add_argument("--epochs", type=int, default=24, help="epochs for the training-run comparison")
    parser.add_argument("--root", type=Path, help="a folder in the Kaggle layout (default: the phantom)")
    args = parser.parse_args()

    started = time.perf_counter()
    root = args.root or phantom_root()
    n = len(NotebookDataset(root, 128))
    print(f"{'data' if args.root else 'phantom'}: {n} images in {root} (ready after {time.perf_counter() - started:.1f}s)")
    print(f"cores: {os.cpu_count()}")
    with tempfile.TemporaryDirectory(prefix="brainseg-bench-") as scratch:
        for size in args.sizes:
            runs = []
            for _ in range(args.repeats):
                wall, cpu = time.perf_counter(), time.process_time()
                preprocess(root, Path(scratch) / f"processed-{size}", size)
                runs.append((time.perf_counter() - wall, time.process_time() - cpu))
            wall, cpu = min(runs)
            fast = n / wall

            dataset = NotebookDataset(root, size)
            slow_wall, slow_cpu = time.perf_counter(), time.process_time()
            for i in range(len(dataset)):
                dataset[i]
            slow_wall, slow_cpu = time.perf_counter() - slow_wall, time.process_time() - slow_cpu
            slow = n / slow_wall

            cached = SliceDataset(*(np.load(Path(scratch) / f"processed-{size}" / f"{name}.npy", mmap_mode="r")
                                    for name in ("images", "masks")))
            read_wall = time.perf_counter()
            for i in range(len(cached)):
                cached[i]
            read_wall = time.perf_counter() - read_wall
            run_cached = wall + args.epochs * read_wall
            run_per_item = args.epochs * slow_wall
            # CPU ms per image is less sensitive than wall time to other processes sharing the cores.
            print(f"size {size}: preprocess {fast:6.1f} img/s, {1000 * cpu / n:.2f} CPU ms/img "
                  f"(best of {args.repeats}: {wall:.2f}s)  |  per-item PIL loader {slow:6.1f} img/s, "
                  f"{1000 * slow_cpu / n:.2f} CPU ms/img  |  speed-up {fast / slow:.1f}x wall, "
                  f"{slow_cpu / cpu:.1f}x CPU")
            print(f"size {size}, {args.epochs} epochs: preprocess once + cached reads ({n / read_wall:,.0f} img/s) "
                  f"{run_cached:.1f}s  |  per-item loader {run_per_item:.1f}s  |  speed-up "
                  f"{run_per_item / run_cached:.0f}x")
    print(f"load average (1, 5, 15 min): {os.getloadavg()}; above {os.cpu_count()} means other processes "
          "competed for the cores and the wall figures are low")


if __name__ == "__main__":
    main()
