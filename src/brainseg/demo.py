"""brainseg-demo: a local web page that segments uploaded MRI slices with the exported model.

    brainseg-demo --model models/ [--port 7860]

Upload slices (PNG, JPEG, TIFF, BMP; DICOM when pydicom is installed), see each with the tumor
outlined and its mask, move the threshold, read the tumor area (in mm^2 for DICOM with a pixel
spacing) and download the masks. Gradio on ONNX Runtime, no torch: `pip install -r
requirements-demo.txt`. Masks come from the same inference contract as brainseg-predict's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from brainseg.inference import mask_at_size
from brainseg.predict import DICOM_SUFFIXES, InputError, Predictor, UsageError, overlay, read_gray, write_image

NOTICE = ("**Research use only, not for diagnosis.** This model has not been validated for clinical use; "
          "its masks must not inform any decision about a patient.")
MAX_UPLOAD_MB = 50  # per file; Gradio refuses larger uploads with a message in the page
MAX_PIXELS = 50_000_000  # a decoded slice beyond this is refused (a decompression bomb, not an MRI slice)
RESULT_COLUMNS = ["file", "status", "tumor pixels", "tumor area (mm²)", "message"]
EXAMPLE_SLICES = 3


@dataclass
class Segmented:
    """One upload's outcome: a table row, and for a success the overlay (RGB) and the mask file."""
    row: list
    overlay: np.ndarray | None = None
    mask_file: Path | None = None


def pixel_area_mm2(path: Path) -> float | None:
    """Area of one pixel from a DICOM file's PixelSpacing (mm x mm), or None."""
    if path.suffix.lower() not in DICOM_SUFFIXES:
        return None
    try:
        import pydicom

        row_mm, col_mm = (float(v) for v in pydicom.dcmread(str(path), stop_before_pixels=True).PixelSpacing)
    except Exception:  # no pydicom, no PixelSpacing, or an unreadable header: the area stays in pixels
        return None
    return row_mm * col_mm


def segment_upload(predictor: Predictor, path: Path, threshold: float, out_dir: Path, name: str,
                   stem: str | None = None) -> Segmented:
    """Segment one uploaded file as brainseg-predict would at `threshold`; errors become a row, not an
    exception. The mask is written as `<stem>_mask.png` (default: the upload's own stem)."""
    try:
        gray = read_gray(path)
        if gray.size > MAX_PIXELS:
            raise InputError(f"{gray.shape[1]}x{gray.shape[0]} pixels is more than this page accepts "
                             f"({MAX_PIXELS:,}); use brainseg-predict")
    except (InputError, OSError) as err:
        return Segmented([name, "error", None, None, str(err)])
    prob = predictor.probabilities(predictor.preprocess(gray)[None])[0]
    post = replace(predictor.post, threshold=threshold)
    mask = mask_at_size(prob, gray.shape, post)
    mask_file = out_dir / f"{stem or Path(name).stem}_mask.png"
    try:  # as brainseg-predict writes it: a 1-bit PNG, renamed into place
        write_image(mask_file, mask * np.uint8(255), [cv2.IMWRITE_PNG_BILEVEL, 1])
    except OSError as err:
        return Segmented([name, "error", None, None, f"cannot write the mask: {err}"])
    tumor = int(mask.sum())
    area = pixel_area_mm2(path)
    row = [name, "ok", tumor, round(tumor * area, 1) if area is not None else None, ""]
    return Segmented(row, cv2.cvtColor(overlay(gray, mask), cv2.COLOR_BGR2RGB), mask_file)


def segment_uploads(predictor: Predictor, paths: list[Path], threshold: float, out_dir: Path) -> list[Segmented]:
    """One page submission: every upload segmented or refused, each mask under its own name."""
    results, stems = [], set()
    for path in paths:
        if path.stat().st_size > MAX_UPLOAD_MB * 2**20:
            results.append(Segmented([path.name, "error", None, None, f"larger than {MAX_UPLOAD_MB} MB"]))
            continue
        stem, n = path.stem, 1
        while stem.lower() in stems:  # two uploads of one name (from different folders) keep both masks
            n += 1
            stem = f"{path.stem}-{n}"
        stems.add(stem.lower())
        results.append(segment_upload(predictor, path, threshold, out_dir, path.name, stem))
    return results


def write_examples(folder: Path, seed: int = 0) -> list[Path]:
    """A few phantom slices (synthetic, no patient data) for the page's examples."""
    from brainseg.config import PhantomConfig
    from brainseg.data.phantom import render_slice

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(EXAMPLE_SLICES):
        image, _ = render_slice(np.random.default_rng(np.random.SeedSequence([seed, i])), PhantomConfig(image_size=512))
        paths.append(folder / f"phantom-{i + 1}.png")
        cv2.imwrite(str(paths[-1]), image)
    return paths


def build_app(predictor: Predictor, work_dir: Path):
    import gradio as gr

    examples = write_examples(work_dir / "examples")

    def run(uploads, threshold):
        if not uploads:
            return [], None, [], [], "Upload one or more slices first."
        out_dir = Path(tempfile.mkdtemp(dir=work_dir, prefix="masks-"))
        paths = [Path(upload if isinstance(upload, str) else upload.name) for upload in uploads]
        results = segment_uploads(predictor, paths, float(threshold), out_dir)
        done = [r for r in results if r.overlay is not None]
        failed = len(results) - len(done)
        summary = f"{len(done)} segmented" + (f", {failed} could not be read (see the table)" if failed else "")
        return ([(r.overlay, r.row[0]) for r in done], _mask_image(done[0]) if done else None,
                [r.row for r in results], [str(r.mask_file) for r in done], summary)

    with gr.Blocks(title="brainseg: brain tumor segmentation") as app:
        gr.Markdown("# Brain tumor segmentation in 2D MRI slices\n\n" + NOTICE)
        with gr.Row():
            with gr.Column():
                uploads = gr.File(label="MRI slices (PNG, JPEG, TIFF, BMP, DICOM)", file_count="multiple",
                                  type="filepath", elem_id="uploads")
                threshold = gr.Slider(0.01, 0.99, value=predictor.post.threshold, step=0.01, elem_id="threshold",
                                      label=f"threshold (tuned on validation: {predictor.post.threshold:g})")
                button = gr.Button("Segment", variant="primary", elem_id="segment")
                gr.Examples([[[str(p)]] for p in examples], inputs=[uploads], label="phantom examples")
            with gr.Column():
                status = gr.Markdown(elem_id="status")
                gallery = gr.Gallery(label="tumor outlined in red", elem_id="overlays", columns=2)
                mask_view = gr.Image(label="mask of the first slice", elem_id="mask", type="numpy")
                table = gr.Dataframe(headers=RESULT_COLUMNS, label="results", elem_id="results")
                masks = gr.File(label="masks (PNG, 0/255 at each slice's size)", file_count="multiple",
                                elem_id="masks")
        button.click(run, inputs=[uploads, threshold], outputs=[gallery, mask_view, table, masks, status])
    return app


def _mask_image(result: Segmented) -> np.ndarray:
    return cv2.imread(str(result.mask_file), cv2.IMREAD_GRAYSCALE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="brainseg-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models"),
                        help="the export stage's folder (or its model.onnx); default: models")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)
    model = args.model / "model.onnx" if args.model.is_dir() else args.model
    try:
        predictor = Predictor(model)
        import gradio  # noqa: F401 - fail here, with the install command, not inside the page
    except UsageError as err:
        print(f"brainseg-demo: {err}", file=sys.stderr)
        return 2
    except ImportError:
        print("brainseg-demo: the page needs Gradio: pip install -r requirements-demo.txt", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="brainseg-demo-") as work:
        app = build_app(predictor, Path(work))
        print(f"brainseg-demo: serving {model} on http://{args.host}:{args.port} (Ctrl+C to stop)", flush=True)
        app.launch(server_name=args.host, server_port=args.port, max_file_size=f"{MAX_UPLOAD_MB}mb",
                   allowed_paths=[work], show_error=False, quiet=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
