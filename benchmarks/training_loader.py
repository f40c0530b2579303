"""Training-loader throughput with augmentation, next to the model's own training-step throughput.

Prints figures, asserts nothing. The loader reads memory-mapped arrays written by preprocess (a
full-size phantom, as in preprocess_throughput.py) and applies the params.yaml augmentation; the
training step is forward + backward + Adam on the params.yaml model. Whichever is slower bounds
training; the loader should never be it.

    python benchmarks/training_loader.py [--size 256] [--workers 0 1 2] [--batches 40] [--steps 5]

The training step is timed as train runs it by default (float32) and in the fastest CPU setting
(bf16 autocast + channels_last); benchmarks/training_step.py compares every setting.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from brainseg.config import load_params
from brainseg.data.preprocess import preprocess
from brainseg.data.dataset import SliceDataset, build_augmentation
from preprocess_throughput import phantom_root
from training_step import step_throughput


def loader_throughput(dataset: SliceDataset, batch_size: int, workers: int, batches: int) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0,
                        generator=torch.Generator().manual_seed(0))
    iterator = iter(loader)
    next(iterator)  # worker start-up is paid once per run, not per batch
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    params = load_params()
    batch_size = params.train.batch_size
    torch.set_num_threads(os.cpu_count() or 1)

    with tempfile.TemporaryDirectory(prefix="brainseg-bench-") as scratch:
        processed = Path(scratch) / "processed"
        preprocess(phantom_root(), processed, args.size)
        images = np.load(processed / "images.npy", mmap_mode="r")
        masks = np.load(processed / "masks.npy", mmap_mode="r")
        print(f"{len(images)} phantom slices at {args.size}x{args.size}, batch {batch_size}, {os.cpu_count()} cores")
        augment_all = replace(params.train.augment, elastic=0.5, blur=0.3)
        for label, augment in (("params.yaml augmentation", params.train.augment),
                               ("plus elastic (p 0.5) and blur (p 0.3)", augment_all)):
            dataset = SliceDataset(images, masks, build_augmentation(augment), seed=0)
            figures = ", ".join(f"{workers} workers {loader_throughput(dataset, batch_size, workers, args.batches):,.0f}"
                                for workers in args.workers)
            print(f"loader, {label}: {figures} images/s")
    for label, fast in (("float32", False), ("bf16 autocast, channels_last", True)):
        figure, _ = step_throughput(params, args.size, batch_size, args.steps, channels_last=fast, bf16=fast)
        print(f"training step ({params.model.architecture} {params.model.encoder}, CPU, {label}): {figure:,.1f} images/s")


if __name__ == "__main__":
    main()
