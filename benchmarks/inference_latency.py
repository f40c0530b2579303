"""Inference latency per slice: PyTorch eager vs TorchScript vs ONNX Runtime, and predict throughput.

Uses the exported models in models/ (run `dvc repro` first). Prints figures, asserts nothing.

    python benchmarks/inference_latency.py [--batch 16] [--repeats 30]
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
from brainseg.predict import OVERLAY_FORMATS, predict

MODELS = Path("models")


def per_call_ms(fn, repeats: int) -> float:
    fn()  # warm-up: allocations, lazy initialisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    size = json.loads((MODELS / "model.json").read_text())["input"]["shape"][-1]
    eager = ProbabilityNet(load_checkpoint(MODELS / "model.pt")[0]).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(MODELS / "model.ts"))
    session = ort.InferenceSession(str(MODELS / "model.onnx"), providers=["CPUExecutionProvider"])
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

    # End to end on phantom slices: decode, resize, infer, upsample, write mask + overlay + report.
    model_ms = results["onnxruntime", args.batch]
    spec = json.loads((MODELS / "model.json").read_text())
    passes = 2 if spec.get("postprocess", {}).get("tta") else 1
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "in"
        inputs.mkdir()
        rng = np.random.default_rng(1)
        for i in range(64):
            image, _ = render_slice(rng, PhantomConfig())
            cv2.imwrite(str(inputs / f"slice{i:03d}.jpg"), image)
        for overlay_format in OVERLAY_FORMATS:
            start = time.perf_counter()
            predict([str(inputs)], Path(tmp) / overlay_format, MODELS / "model.onnx", batch_size=args.batch,
                    overlay_format=overlay_format)
            per_slice = 1000 * (time.perf_counter() - start) / 64
            print(f"predict on 64 phantom JPEGs of 640x640, --overlay {overlay_format}: {1000 / per_slice:.1f} "
                  f"slices/s, {per_slice:.1f} ms per slice; model time {passes} x {model_ms:.1f} ms (TTA passes), "
                  f"overhead {(per_slice - passes * model_ms) / (passes * model_ms):.0%} of model time")

if __name__ == "__main__":
    main()
