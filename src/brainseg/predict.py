"""Segment tumors in image files with the exported ONNX model.

    python -m brainseg.predict INPUT... --out DIR [--model models/model.onnx]

INPUT: image files or folders (searched recursively) of PNG/JPEG/TIFF/BMP, 8 or 16 bit, gray or
RGB, any size; DICOM too when pydicom is installed. For every input, DIR gets `<stem>_mask.png`
(0/255 at the original resolution), and with `--overlay png` or `--overlay jpg` also
`<stem>_overlay.<png|jpg>` (the image with the tumor outline in red; a PNG overlay costs more CPU
than the model at 128 px, a JPEG about a tenth of it); the run writes `report.csv` and `report.json`.
It refuses to replace files already in DIR unless `--overwrite` is given, and never reads DIR's files
as inputs when DIR lies inside an input folder.
Exit code 0: all inputs segmented;
1: some inputs failed (named on stderr and in the report); 2: usage error (e.g. missing model).

Deployment needs only numpy, opencv and onnxruntime (requirements-deploy.txt): this module must
not import torch, pandas or any brainseg module that does.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import tempfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from brainseg.io import atomic_write_bytes
from brainseg.errors import listing
from brainseg.imaging import IMAGE_SUFFIXES, read_grayscale, to_uint8
from brainseg.inference import (READABLE_FORMAT_VERSIONS, PostProcess, mask_at_size, merge_flipped, resize_to_model,
                                unit_range)

DICOM_SUFFIXES = {".dcm", ".dicom"}
OVERLAY_FORMATS = ("png", "jpg", "none")
REPORT_FIELDS = ["file", "output", "height", "width", "tumor_pixels", "tumor_fraction", "max_probability",
                 "status", "error"]


class UsageError(Exception):
    """Problems with the command line or the model: nothing can be processed (exit code 2)."""


class InputError(Exception):
    """One input cannot be used; the others are still processed (exit code 1)."""


@dataclass
class Item:
    path: Path
    stem: str


@dataclass
class Row:
    file: str
    output: str = ""
    height: int | None = None
    width: int | None = None
    tumor_pixels: int | None = None
    tumor_fraction: float | None = None
    max_probability: float | None = None
    status: str = "ok"
    error: str = ""


def _read_dicom(path: Path) -> np.ndarray:
    try:
        import pydicom
    except ImportError:
        raise InputError("DICOM is not supported without pydicom (pip install pydicom)") from None
    try:
        ds = pydicom.dcmread(str(path))
        pixels = ds.pixel_array
    except Exception as e:  # pydicom raises many types for broken files and missing codecs
        raise InputError(f"unreadable DICOM: {e}") from None
    if ds.get("SamplesPerPixel", 1) == 3:
        pixels = cv2.cvtColor(to_uint8(pixels), cv2.COLOR_RGB2GRAY)
    if pixels.ndim != 2:
        raise InputError(f"unsupported DICOM pixel data of shape {pixels.shape} (multi-frame?)")
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":  # MONOCHROME1: low values are bright
        pixels = pixels.max() - pixels.astype(np.float32)
    return to_uint8(pixels)


def read_gray(path: Path) -> np.ndarray:
    """uint8 grayscale at full resolution, decoded exactly as the training data was."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return _read_dicom(path)
    image = read_grayscale(path)
    if isinstance(image, str):
        raise InputError(image)
    return image


def collect_inputs(inputs: list[str], out_dir: Path | None = None) -> tuple[list[Item], list[Row], int]:
    """Files to process with unique output stems; rows for inputs that do not exist (status error) and
    for second names of one file (a link and its target: status duplicate, segmented once); how many
    files in folders were skipped as non-images. Files under `out_dir` found by searching a folder are
    left out: an earlier run's masks are not new scans."""
    paths: list[tuple[Path, Path]] = []  # (file, path relative to the input root, for the stem)
    missing: list[Row] = []
    skipped = 0
    outputs = out_dir.resolve() if out_dir is not None else None
    for arg in inputs:
        root = Path(arg)
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                rel = path.relative_to(root)
                # hidden files include macOS "._x.png" resource forks, which are not images
                if not path.is_file() or any(part.startswith(".") for part in rel.parts):
                    continue
                if outputs is not None and path.resolve().is_relative_to(outputs):
                    continue
                if path.suffix.lower() in {*IMAGE_SUFFIXES, *DICOM_SUFFIXES}:
                    paths.append((path, rel))
                else:
                    skipped += 1
        elif root.is_file():
            # Named explicitly: always attempted, whatever the suffix (OpenCV decodes by content).
            paths.append((root, Path(root.name)))
        else:
            missing.append(Row(file=arg, status="error", error="no such file or folder"))

    items, used, seen = [], set(), {}
    for path, rel in paths:
        first = seen.setdefault(path.resolve(), len(items))
        if first < len(items):
            missing.append(Row(file=str(path), output=items[first].stem, status="duplicate",
                               error=f"the same file as {items[first].path}, segmented once under that name"))
            continue
        # Folder structure goes into the stem so that a/x.png and b/x.png do not overwrite each other.
        base = "__".join(rel.with_suffix("").parts)
        stem, n = base, 1
        while stem.lower() in used:  # lower(): also safe on case-insensitive file systems
            n += 1
            stem = f"{base}-{n}"
        used.add(stem.lower())
        items.append(Item(path, stem))
    return items, missing, skipped


def write_image(path: Path, image: np.ndarray, options: list[int] | None = None) -> None:
    ok, encoded = cv2.imencode(path.suffix, image, options or [])
    if not ok:
        raise OSError(f"could not encode {path.name}")
    atomic_write_bytes(path, encoded.tobytes())


def overlay(gray: np.ndarray, mask: np.ndarray) -> np.ndarray:
    image = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    thickness = max(1, round(min(gray.shape) / 256))  # stays visible on large images
    cv2.drawContours(image, contours, -1, (0, 0, 255), thickness)
    return image


class Predictor:
    def __init__(self, model_path: Path):
        spec_path = model_path.with_suffix(".json")
        if not model_path.is_file():
            raise UsageError(f"model not found: {model_path} (run the pipeline's export stage, or pass --model)")
        if not spec_path.is_file():
            raise UsageError(f"model description not found: {spec_path} (written by the export stage beside the model)")
        try:
            spec = json.loads(spec_path.read_text())
            found = spec.get("format_version")
            if found not in READABLE_FORMAT_VERSIONS:
                raise UsageError(f"{spec_path} is a version {found} model description; this brainseg-predict reads "
                                 f"versions {', '.join(map(str, READABLE_FORMAT_VERSIONS))}: export the model again "
                                 "(dvc repro)")
            self.size = int(spec["input"]["shape"][-1])
            self.post = PostProcess.from_dict(spec["postprocess"])  # chosen on validation by evaluate
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise UsageError(f"{spec_path} is not a valid model description: {e}; export the model again") from None
        if self.size < 1:
            raise UsageError(f"{spec_path}: the input size {self.size} must be positive; export the model again")

        import onnxruntime as ort  # imported late so that --help and usage errors stay fast

        options = ort.SessionOptions()
        # Between calls ONNX Runtime's threads would otherwise spin-wait on the cores that the
        # decode and write threads need (benchmarks/inference_latency.py: overhead 37% -> 28%).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for invalid models
            raise UsageError(f"cannot load model {model_path}: {e}") from None
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        fixed = [d for d in model_input.shape[-2:] if isinstance(d, int)]
        if any(d != self.size for d in fixed):
            raise UsageError(f"{spec_path} says the input is {self.size} px, but {model_path} takes "
                             f"{model_input.shape}: the two files come from different exports; keep the pair "
                             "that the export stage wrote together")

    def preprocess(self, gray: np.ndarray) -> np.ndarray:
        return unit_range(resize_to_model(gray, self.size))

    def run_model(self, batch: np.ndarray) -> np.ndarray:
        (output,) = self.session.run(None, {self.input_name: np.ascontiguousarray(batch[:, None])})
        return output[:, 0]

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """N x S x S inputs in [0, 1] -> N x S x S probabilities, merged with the mirror images' when
        the evaluated post-processing uses flip TTA."""
        probs = self.run_model(batch)
        return merge_flipped(probs, self.run_model(batch[:, :, ::-1])) if self.post.tta else probs


def _decode(predictor: Predictor, item: Item) -> tuple[np.ndarray, np.ndarray] | Row:
    """(full-resolution gray, model input) for one file, or its error row."""
    try:
        gray = read_gray(item.path)
    except InputError as e:
        return _fail(item.path, str(e))
    except OSError as e:
        return _fail(item.path, f"cannot read: {e}")
    return gray, predictor.preprocess(gray)


def _segment(predictor: Predictor, item: Item, gray: np.ndarray, prob: np.ndarray, out_dir: Path,
             overlay_format: str) -> Row:
    height, width = gray.shape
    mask = mask_at_size(prob, (height, width), predictor.post)
    try:
        # 1-bit PNG: a third of the encoding time of 8-bit, and it still reads back as 0/255.
        write_image(out_dir / f"{item.stem}_mask.png", mask * np.uint8(255), [cv2.IMWRITE_PNG_BILEVEL, 1])
        if overlay_format != "none":
            write_image(out_dir / f"{item.stem}_overlay.{overlay_format}", overlay(gray, mask),
                         [cv2.IMWRITE_JPEG_QUALITY, 90] if overlay_format == "jpg" else [])
    except OSError as e:
        return _fail(item.path, f"cannot write outputs: {e}")
    tumor = int(mask.sum())
    return Row(file=str(item.path), output=item.stem, height=height, width=width, tumor_pixels=tumor,
               tumor_fraction=round(tumor / (height * width), 6), max_probability=round(float(prob.max()), 6))


def _progress(total: int):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="img", desc="predict", disable=None)  # None: only on a terminal


def _fail(path: Path | str, error: str) -> Row:
    print(f"brainseg-predict: {path}: {error}", file=sys.stderr)
    return Row(file=str(path), status="error", error=error)


REPORTS = ("report.csv", "report.json")


def output_names(items: list[Item], overlay_format: str) -> list[str]:
    """Every file a run writes into the output folder."""
    suffixes = ["_mask.png"] + ([f"_overlay.{overlay_format}"] if overlay_format != "none" else [])
    return [f"{item.stem}{suffix}" for item in items for suffix in suffixes] + list(REPORTS)


def predict(inputs: list[str], out_dir: Path, model_path: Path, batch_size: int = 16,
            overlay_format: str = "none", overwrite: bool = False) -> list[Row]:
    predictor = Predictor(model_path)
    items, rows, skipped = collect_inputs(inputs, out_dir)
    for row in rows:
        if row.status == "error":
            _fail(row.file, row.error)
        else:
            print(f"brainseg-predict: {row.file}: {row.error}", file=sys.stderr)
    if not items and not rows:
        raise UsageError(f"no images found in {' '.join(inputs)}")
    # Before any work: a mask of the same name may be someone's ground truth.
    existing = [name for name in output_names(items, overlay_format) if (out_dir / name).exists()]
    if existing and not overwrite:
        shown = listing(existing, 5)
        raise UsageError(f"{out_dir} already holds {shown}; choose an empty output folder, or pass "
                         "--overwrite to replace them")
    _check_writable(out_dir)
    if skipped:
        print(f"brainseg-predict: skipped {skipped} non-image file(s) in folders", file=sys.stderr)

    # A pipeline: while ONNX Runtime runs batch k (it releases the GIL), threads decode batch k+1
    # and write the outputs of earlier batches (OpenCV codecs release the GIL too).
    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    bar = _progress(len(items))
    with ThreadPoolExecutor(max(2, os.cpu_count() or 1)) as pool:
        def decode(batch):
            return [pool.submit(_decode, predictor, item) for item in batch]

        upcoming = decode(batches[0]) if batches else []
        writing: deque[list] = deque()
        for k, batch in enumerate(batches):
            decoded = [future.result() for future in upcoming]
            upcoming = decode(batches[k + 1]) if k + 1 < len(batches) else []
            ok = [(item, result) for item, result in zip(batch, decoded) if not isinstance(result, Row)]
            futures = [result for result in decoded if isinstance(result, Row)]
            if ok:
                probs = predictor.probabilities(np.stack([model_input for _, (_, model_input) in ok]))
                futures += [pool.submit(_segment, predictor, item, gray, prob, out_dir, overlay_format)
                            for (item, (gray, _)), prob in zip(ok, probs)]
            writing.append(futures)
            while len(writing) > 2:  # bounds the full-resolution images held in memory
                rows += _collect(writing.popleft())
            if bar is not None:
                bar.update(len(batch))
        while writing:
            rows += _collect(writing.popleft())
    if bar is not None:
        bar.close()

    _write_reports(rows, out_dir, model_path, predictor)
    return rows


def _check_writable(out_dir: Path) -> None:
    """Create the output folder and write a file in it, so that a bad --out fails before any work."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file, not a folder; choose a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out_dir).close()
    except OSError as e:
        raise UsageError(f"cannot write to the output folder {out_dir}: {e.strerror or e}; "
                         "choose another --out") from None


def _collect(results: list) -> list[Row]:
    return [r if isinstance(r, Row) else r.result() for r in results]


def _counts(rows: list[Row]) -> dict[str, int]:
    statuses = [row.status for row in rows]
    return {"ok": statuses.count("ok"), "failed": statuses.count("error"), "duplicate": statuses.count("duplicate")}


def _write_reports(rows: list[Row], out_dir: Path, model_path: Path, predictor: Predictor) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=REPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(row) for row in rows)
    atomic_write_bytes(out_dir / "report.csv", buffer.getvalue().encode())
    report = {"model": str(model_path), "size": predictor.size, "postprocess": predictor.post.to_dict(),
              "inputs": len(rows), **_counts(rows), "results": [asdict(r) for r in rows]}
    atomic_write_bytes(out_dir / "report.json", (json.dumps(report, indent=2) + "\n").encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="brainseg-predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (recursive)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--model", type=Path, default=Path("models/model.onnx"),
                        help="ONNX model; its .json description must lie beside it (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per inference call (default: %(default)s)")
    parser.add_argument("--overlay", choices=OVERLAY_FORMATS, default="none",
                        help="also write the image with the tumor outlined: png, jpg (faster), or none "
                             "(default: %(default)s, masks only)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files of the same names already in --out (default: refuse, naming them)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    try:
        rows = predict(args.inputs, args.out, args.model, args.batch_size, args.overlay, args.overwrite)
    except UsageError as e:
        print(f"brainseg-predict: error: {e}", file=sys.stderr)
        return 2
    counts = _counts(rows)
    duplicates = f", {counts['duplicate']} duplicate name(s)" if counts["duplicate"] else ""
    print(f"brainseg-predict: {counts['ok']} of {len(rows)} input(s) segmented, {counts['failed']} failed"
          f"{duplicates}; masks, overlays and report in {args.out}")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
