"""Inference latency per slice: PyTorch eager vs TorchScript vs ONNX Runtime, predict throughput,
and where brainseg-predict's time goes beyond the model (a per-step breakdown).

Uses the exported models in models/ (run `dvc repro` first). Prints figures, asserts nothing.

    python benchmarks/inference_latency.py [--models models/] [--batch 16] [--repeats 30]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import torch

from brainseg.config import PhantomConfig
from brainseg.data.phantom import render_slice
from brainseg.export import ProbabilityNet
from brainseg.model import load_checkpoint
from brainseg.inference import mask_at_size, merge_flipped
from brainseg.predict import OVERLAY_FORMATS, Predictor, overlay, predict, read_gray, write_image


def per_call_ms(fn, repeats: int) -> float:
    fn()  # warm-up: allocations, lazy initialisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def step_breakdown(files: list[Path], predictor: Predictor, batch: int, out: Path) -> dict[str, float]:
    """Milliseconds per slice of each step brainseg-predict takes, run one after another in this
    thread (predict overlaps them in threads; on 2 busy cores that hides little)."""
    totals = dict.fromkeys(["decode", "resize to model", "model", "TTA merge", "mask at full size",
                            "mask encode + write", "overlay draw", "overlay encode png", "overlay encode jpg"], 0.0)

    def timed(step, fn, *args):
        start = time.perf_counter()
        value = fn(*args)
        totals[step] += time.perf_counter() - start
        return value

    for first in range(0, len(files), batch):
        grays = [timed("decode", read_gray, path) for path in files[first:first + batch]]
        inputs = np.stack([timed("resize to model", predictor.preprocess, gray) for gray in grays])
        plain = timed("model", predictor.run_model, inputs)
        probs = plain
        if predictor.post.tta:
            mirrored = timed("model", predictor.run_model, inputs[:, :, ::-1])
            probs = timed("TTA merge", merge_flipped, plain, mirrored)
        for i, (gray, prob) in enumerate(zip(grays, probs)):
            mask = timed("mask at full size", mask_at_size, prob, gray.shape, predictor.post)
            timed("mask encode + write", write_image, out / f"{i}_mask.png", mask * np.uint8(255),
                  [cv2.IMWRITE_PNG_BILEVEL, 1])
            drawn = timed("overlay draw", overlay, gray, mask)
            timed("overlay encode png", cv2.imencode, ".png", drawn)
            timed("overlay encode jpg", cv2.imencode, ".jpg", drawn, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return {step: 1000 * seconds / len(files) for step, seconds in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"),
                        help="folder of an export stage's outputs (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    models = args.models

    size = json.loads((models / "model.json").read_text())["input"]["shape"][-1]
    eager = ProbabilityNet(load_checkpoint(models / "model.pt")[0]).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(models / "model.ts"))
    session = ort.InferenceSession(str(models / "model.onnx"), providers=["CPUExecutionProvider"])
    print(f"threads: torch {torch.get_num_threads()}, input {size}x{size}, median of {args.repeats} calls")

    results = {}
    for batch in (1, args.batch):
        x = np.random.default_rng(0).random((batch, 1, size, size), dtype=np.float32)
        xt = torch.from_numpy(x)
        with torch.inference_mode():
            runners = {"eager": lambda: eager(xt), "torchscript": lambda: scripted(xt),
                       "onnxruntime": lambda: session.run(None, {"image": x})}
            for name, fn in runners.items():
                results[name, batch] = per_call_ms(fn, args.repeats) / batch
        row = ", ".join(f"{name} {results[name, batch]:.1f}" for name in runners)
        print(f"batch {batch:3d}: ms per slice: {row}; onnxruntime vs eager {results['eager', batch] / results['onnxruntime', batch]:.2f}x")

    # End to end on phantom slices: decode, resize, infer, upsample, write mask (+ overlay) + report.
    # Two run lengths separate what a run pays once (loading the model, ONNX Runtime's first call)
    # from what each slice costs: time(n) = once + n * per_slice.
    model_ms = results["onnxruntime", args.batch]
    spec = json.loads((models / "model.json").read_text())
    passes = 2 if spec.get("postprocess", {}).get("tta") else 1
    with tempfile.TemporaryDirectory() as tmp:
        inputs = {n: Path(tmp) / f"in{n}" for n in (64, 256)}
        rng = np.random.default_rng(1)
        encoded = [cv2.imencode(".jpg", render_slice(rng, PhantomConfig())[0])[1].tobytes() for _ in range(64)]
        for n, folder in inputs.items():
            folder.mkdir()
            for i in range(n):
                (folder / f"slice{i:03d}.jpg").write_bytes(encoded[i % len(encoded)])
        print(f"\nbrainseg-predict on phantom JPEGs of 640x640, batch {args.batch}; model time {passes} x "
              f"{model_ms:.1f} ms per slice ({passes} pass(es): flip TTA)")
        for overlay_format in OVERLAY_FORMATS:
            seconds = {}
            for n, folder in inputs.items():
                runs = []
                for run in range(3):  # the fastest of three: the others were disturbed
                    start = time.perf_counter()
                    predict([str(folder)], Path(tmp) / f"out-{overlay_format}-{n}-{run}", models / "model.onnx",
                            batch_size=args.batch, overlay_format=overlay_format)
                    runs.append(time.perf_counter() - start)
                seconds[n] = min(runs)
            per_slice = 1000 * (seconds[256] - seconds[64]) / (256 - 64)
            once = 1000 * seconds[64] - 64 * per_slice
            overhead_64 = (1000 * seconds[64] / 64 - passes * model_ms) / (passes * model_ms)
            default = " (default)" if overlay_format == "none" else ""
            print(f"  --overlay {overlay_format}{default}: 64 slices {1000 * seconds[64] / 64:.1f} ms per slice, overhead "
                  f"{overhead_64:.0%} of model time; per further slice {per_slice:.1f} ms, overhead "
                  f"{(per_slice - passes * model_ms) / (passes * model_ms):.0%}; once per run {once:.0f} ms")

        files = sorted(inputs[64].iterdir())
        steps = step_breakdown(files, Predictor(models / "model.onnx"), args.batch, Path(tmp) / "none")
        model = steps.pop("model")
        print(f"\nper-step CPU time, one thread, ms per slice (model: {model:.1f} ms for {passes} pass(es)):")
        for step, ms in steps.items():
            print(f"  {step:20s} {ms:6.2f} ms  {ms / model:6.1%} of model time")
        default = sum(ms for step, ms in steps.items() if not step.startswith("overlay"))
        print(f"  default path (--overlay none): {default:.2f} ms beyond the model, {default / model:.1%} of model time")


if __name__ == "__main__":
    main()
