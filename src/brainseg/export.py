"""Export the best checkpoint to ONNX and TorchScript, with a JSON of what inference needs.

Both exported graphs take N x 1 x S x S float intensities in [0, 1] and return tumor
probabilities of the same shape; per-slice standardisation happens inside the graph.
The stage fails unless ONNX Runtime and TorchScript agree with eager PyTorch within tolerance.
"""

from __future__ import annotations

import hashlib
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from brainseg import __version__
from brainseg.config import ExportConfig
from brainseg.io import atomic_output, atomic_write_text, temp_sibling
from brainseg.errors import BrainsegError
from brainseg.inference import (MAX_COMPONENTS_MEANING, MIN_COMPONENT_MEANING, MODEL_FORMAT_VERSION, TTA_MEANING,
                                PostProcess)
from brainseg.model import load_checkpoint


class ExportError(BrainsegError, RuntimeError):
    pass


class ProbabilityNet(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(image))


def _graph_nodes(graph):
    """Every node of an ONNX graph, including those of subgraphs (If/Loop bodies)."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            subgraphs = [*attribute.graphs, *([attribute.g] if attribute.HasField("g") else [])]
            for subgraph in subgraphs:
                yield from _graph_nodes(subgraph)


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    import onnx

    with atomic_output(path, clear_abandoned=True) as tmp:
        torch.onnx.export(model, (example,), str(tmp), dynamo=True, external_data=False, opset_version=opset,
                          verbose=False, input_names=["image"], output_names=["probability"],
                          dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1, max=1024)}})
        # Node metadata holds Python stack traces with absolute source paths: without it, the same
        # weights give the same bytes in any checkout, so dvc.lock hashes reproduce.
        exported = onnx.load(str(tmp))
        written = {o.domain: o.version for o in exported.opset_import}.get("", None)
        if written != opset:  # the exporter falls back to its default opset when it cannot convert
            raise ExportError(f"export.opset is {opset}, but the ONNX exporter wrote opset {written}; choose an "
                              "opset it converts to (17 up to the newest onnxscript supports)")
        for graph in [exported.graph, *exported.functions]:
            for node in _graph_nodes(graph):
                del node.metadata_props[:]
                node.doc_string = ""
        onnx.save(exported, str(tmp))


def _export_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    traced = temp_sibling(path.with_suffix(".traced"), clear_abandoned=True)
    # TorchScript is deprecated upstream but is still what C++ (libtorch) deployments load.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.trace(model, example), str(traced))
    # Rewrite the archive without its *.debug_pkl records (source ranges with absolute paths),
    # for the same reason as the ONNX metadata; the loader treats debug records as optional. The
    # serialization id is a checksum that covered those records: recompute it over what is kept.
    try:
        with (atomic_output(path, clear_abandoned=True) as tmp, zipfile.ZipFile(traced) as source,
              zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as stripped):
            kept = [(info.filename, source.read(info.filename)) for info in source.infolist()
                    if not info.filename.endswith(".debug_pkl")]
            digest = hashlib.sha256(b"".join(name.encode() + data for name, data in kept
                                             if not name.endswith("/serialization_id")))
            for name, data in kept:
                if name.endswith("/serialization_id"):
                    data = str(int(digest.hexdigest(), 16) % 10**len(data)).zfill(len(data)).encode()
                stripped.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    finally:
        traced.unlink()


def _run_torchscript(path: Path, inputs: torch.Tensor) -> np.ndarray:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path))(inputs).numpy()


def _run_onnx(onnx_path: Path, inputs: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"image": inputs})
    return output


def disagreement(reference: np.ndarray, exported: np.ndarray, threshold: float) -> tuple[float, int]:
    """(max |probability difference|, pixels whose mask at `threshold` differs) of an exported graph's
    output against PyTorch's."""
    flips = np.count_nonzero((exported >= threshold) != (reference >= threshold))
    return float(np.abs(exported - reference).max()), int(flips)


def export(model_path: Path, out_dir: Path, cfg: ExportConfig, post: PostProcess, samples: np.ndarray) -> dict:
    """`samples`: uint8 N x S x S slices used for tracing and for the agreement check; `post`: the
    post-processing the evaluate stage chose, which model.json carries to every consumer."""
    model, ckpt = load_checkpoint(model_path)
    wrapped = ProbabilityNet(model).eval()
    size = int(ckpt["image_size"])
    inputs = torch.from_numpy(np.asarray(samples, dtype=np.float32)[:, None] / 255.0)
    with torch.no_grad():
        reference = wrapped(inputs).numpy()

    onnx_path, ts_path = out_dir / "model.onnx", out_dir / "model.ts"
    out_dir.mkdir(parents=True, exist_ok=True)
    _export_onnx(wrapped, inputs[:2], onnx_path, cfg.opset)
    _export_torchscript(wrapped, inputs[:2], ts_path)

    onnx_diff, onnx_flips = disagreement(reference, _run_onnx(onnx_path, inputs.numpy()), post.threshold)
    ts_diff, ts_flips = disagreement(reference, _run_torchscript(ts_path, inputs), post.threshold)
    if max(onnx_diff, ts_diff) > cfg.tolerance:
        # A long-trained model's sharp logits can move by float32 rounding alone (1.6e-3 seen at 256 px):
        # the mask count tells that apart from a broken graph, which differs by far more.
        raise ExportError(f"exported models disagree with PyTorch: max |diff| ONNX {onnx_diff:.2e}, "
                          f"TorchScript {ts_diff:.2e} > export.tolerance {cfg.tolerance:g}; their masks at threshold "
                          f"{post.threshold:g} differ in {onnx_flips} and {ts_flips} of {reference.size} pixels. "
                          "If that is rounding (few or no mask pixels), raise export.tolerance, e.g. "
                          "`dvc exp run -S export.tolerance=0.005`: only the export stage reruns")

    spec = {
        "format_version": MODEL_FORMAT_VERSION,
        "brainseg_version": __version__,  # not the installed metadata: a PYTHONPATH=src run has none
        "files": {"onnx": onnx_path.name, "torchscript": ts_path.name},
        "input": {
            "name": "image", "shape": ["batch", 1, size, size], "dtype": "float32",
            "preprocessing": "grayscale; resize to size x size with area interpolation; "
                             "scale intensities to [0, 1] (8-bit: divide by 255)",
            "normalisation": "per-slice standardisation (zero mean, unit variance) inside the model",
        },
        "output": {"name": "probability", "shape": ["batch", 1, size, size], "meaning": "tumor probability"},
        "postprocess": {
            **post.to_dict(),
            "meaning": "brainseg.inference.mask_at_size: with tta, " + TTA_MEANING + "; " + MIN_COMPONENT_MEANING
                       + "; " + MAX_COMPONENTS_MEANING
                       + "; resize the kept probabilities to the slice's size (bilinear); tumor where >= threshold",
        },
        "model": ckpt["model"],
        "best_epoch": ckpt["epoch"],
        "val_dice": round(float(ckpt["val_dice"]), 6),
        "check": {"samples": len(samples), "tolerance": cfg.tolerance,
                  "max_abs_diff_onnx": float(f"{onnx_diff:.3g}"), "max_abs_diff_torchscript": float(f"{ts_diff:.3g}")},
    }
    atomic_write_text(out_dir / "model.json", json.dumps(spec, indent=2) + "\n")
    print(f"exported {onnx_path} and {ts_path}; max |diff| vs PyTorch: ONNX {onnx_diff:.2e}, "
          f"TorchScript {ts_diff:.2e} (tolerance {cfg.tolerance:g})")
    return spec
