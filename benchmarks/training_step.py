"""The training step in each CPU setting, side by side in one run, as ratios to float32.

Prints figures, asserts nothing. A step is forward + backward + Adam on the params.yaml model (or
`--decoder` widths) at `--size`, on random slices; every setting is timed in the same process, so
the ratios hold even when the absolute figures move between runs (about +-15% here).

    python benchmarks/training_step.py [--size 128] [--steps 8] [--compile] [--val-slices 429 --train-slices 1502]

Settings: float32; train.channels_last; train.amp: bf16; both; both at other batch sizes; both on
one thread (what each of two concurrent runs gets); with --compile, torch.compile (its one-off
compile time is printed beside the gain: it is paid once per run). Then the validation pass that
train runs each epoch (float32 forward on the validation slices) as a share of an epoch.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import torch

from brainseg.config import load_params
from brainseg.losses import SegmentationLoss
from brainseg.model import build_model


def _model(params, channels_last: bool):
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return build_model(params.model).to(memory_format=memory_format), memory_format


def step_throughput(params, size: int, batch_size: int, steps: int, channels_last: bool = False,
                    bf16: bool = False, compiled: bool = False) -> tuple[float, float]:
    """(images/s of the training step, seconds before the first timed step: allocation, compilation)."""
    torch.manual_seed(0)
    model, memory_format = _model(params, channels_last)
    step_model = torch.compile(model) if compiled else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = SegmentationLoss(1.0, 1.0)
    images = torch.rand(batch_size, 1, size, size).contiguous(memory_format=memory_format)
    masks = (torch.rand(batch_size, 1, size, size) > 0.9).float()
    model.train()
    started = time.perf_counter()
    for step in range(steps + 2):
        if step == 2:  # the first steps allocate (and compile); time the rest
            warmup, started = time.perf_counter() - started, time.perf_counter()
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # as train.amp: bf16 does
            logits = step_model(images)
        criterion(logits, masks).backward()
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - started), warmup


@torch.no_grad()
def validation_throughput(params, size: int, channels_last: bool, batch_size: int = 32, batches: int = 4) -> float:
    """images/s of train's validation pass: float32 forward in eval mode, batches of 32."""
    model, memory_format = _model(params, channels_last)
    model.eval()
    images = torch.rand(batch_size, 1, size, size).contiguous(memory_format=memory_format)
    model(images)
    started = time.perf_counter()
    for _ in range(batches):
        model(images)
    return batches * batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--decoder", type=int, nargs=5, metavar="C", help="model.decoder_channels to time instead")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (a minute or more to compile)")
    parser.add_argument("--train-slices", type=int, default=1502, help="for the validation share (default: Kaggle)")
    parser.add_argument("--val-slices", type=int, default=429)
    args = parser.parse_args()
    params = load_params()
    if args.decoder:
        params = replace(params, model=replace(params.model, decoder_channels=args.decoder))
    batch = params.train.batch_size
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    print(f"training step: {params.model.architecture} {params.model.encoder}, decoder "
          f"{list(params.model.decoder_channels)}, {args.size}x{args.size}, {threads} threads, mean of "
          f"{args.steps} steps after 2 warm-up steps")

    settings = [("float32", {}),
                ("float32, channels_last", {"channels_last": True}),
                ("bf16", {"bf16": True}),
                ("bf16, channels_last", {"channels_last": True, "bf16": True}),
                (f"bf16, channels_last, batch {batch // 2}", {"channels_last": True, "bf16": True, "batch_size": batch // 2}),
                (f"bf16, channels_last, batch {batch * 2}", {"channels_last": True, "bf16": True, "batch_size": batch * 2}),
                ("bf16, channels_last, 1 thread", {"channels_last": True, "bf16": True, "threads": 1})]
    if args.compile:
        settings.append(("bf16, channels_last, torch.compile", {"channels_last": True, "bf16": True, "compiled": True}))
    print("| setting | images/s | vs float32 | warm-up s |\n|---|---|---|---|")
    base = None
    for label, options in settings:
        torch.set_num_threads(options.pop("threads", threads))
        figure, warmup = step_throughput(params, args.size, options.pop("batch_size", batch), args.steps, **options)
        torch.set_num_threads(threads)
        base = base or figure
        print(f"| {label} | {figure:.1f} | {figure / base:.2f}x | {warmup:.1f} |")

    train_rate, _ = step_throughput(params, args.size, batch, args.steps, channels_last=True, bf16=True)
    val_rate = validation_throughput(params, args.size, channels_last=True)
    train_s, val_s = args.train_slices / train_rate, args.val_slices / val_rate
    print(f"\nepoch of {args.train_slices} training slices (bf16, channels_last): {train_s:.0f} s of steps; "
          f"validation of {args.val_slices} slices (float32 forward, channels_last): {val_s:.0f} s, "
          f"{val_s / (train_s + val_s):.0%} of the epoch")


if __name__ == "__main__":
    main()
