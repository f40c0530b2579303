import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import MODEL_SIZE as SIZE

ROOT = Path(__file__).resolve().parents[1]


def _blob_image(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (height, width)).astype(np.uint8)
    cv2.circle(image, (width // 3, height // 2), min(height, width) // 5, 220, -1)
    return image


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    cv2.imwrite(str(folder / "slice.png"), _blob_image(100, 120, 0))
    cv2.imwrite(str(folder / "sub" / "slice.png"), _blob_image(70, 50, 1))  # same name, other folder
    cv2.imwrite(str(folder / "color.jpg"), cv2.cvtColor(_blob_image(90, 90, 2), cv2.COLOR_GRAY2BGR))
    cv2.imwrite(str(folder / "deep.tif"), _blob_image(80, 64, 3).astype(np.uint16) * 17)  # 16-bit, max ~3740
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "brainseg.predict", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def _expected_mask(model_path: Path, image_path: Path) -> np.ndarray:
    """The preprocessing contract, done by hand with onnxruntime."""
    import onnxruntime as ort

    image = cv2.imread(str(image_path), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
    if image.dtype != np.uint8:
        image = np.rint(image.astype(np.float32) * (255.0 / image.max())).astype(np.uint8)
    x = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)[None, None] / 255.0
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    prob = session.run(None, {"image": x})[0][0, 0]
    kept = np.where(prob >= 0.5, prob, 0)  # only the tumor pixels' probabilities are resized
    full = cv2.resize(kept, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.where(full >= 0.5, 255, 0).astype(np.uint8)


def test_mixed_folder(model_path, mixed_folder, tmp_path):
    out = tmp_path / "out"
    result = run_cli(str(mixed_folder), "--out", str(out), "--model", str(model_path), "--batch-size", "2",
                     "--overlay", "png")
    assert result.returncode == 1, result.stderr
    assert "corrupt.png" in result.stderr and "unreadable" in result.stderr
    assert "4 of 5 input(s) segmented, 1 failed" in result.stdout

    with open(out / "report.csv", newline="") as f:
        rows = {Path(row["file"]).relative_to(mixed_folder).as_posix(): row for row in csv.DictReader(f)}
    assert set(rows) == {"slice.png", "sub/slice.png", "color.jpg", "deep.tif", "corrupt.png"}  # .txt skipped
    assert rows["corrupt.png"]["status"] == "error" and rows["corrupt.png"]["error"]
    report = json.loads((out / "report.json").read_text())
    assert (report["ok"], report["failed"], report["postprocess"]["threshold"], report["size"]) == (4, 1, 0.5, SIZE)

    sizes = {"slice.png": (100, 120), "sub/slice.png": (70, 50), "color.jpg": (90, 90), "deep.tif": (80, 64)}
    stems = set()
    for name, (height, width) in sizes.items():
        row = rows[name]
        assert row["status"] == "ok" and (int(row["height"]), int(row["width"])) == (height, width)
        stems.add(row["output"])
        mask = cv2.imread(str(out / f"{row['output']}_mask.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (height, width) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        assert int(row["tumor_pixels"]) == int((mask > 0).sum())
        assert float(row["tumor_fraction"]) == pytest.approx((mask > 0).mean(), abs=1e-6)
        assert 0.0 <= float(row["max_probability"]) <= 1.0
        overlay = cv2.imread(str(out / f"{row['output']}_overlay.png"), cv2.IMREAD_UNCHANGED)
        assert overlay.shape == (height, width, 3)
        # masks equal what the documented preprocessing gives when done by hand (a few pixels of slack
        # for probabilities that sit exactly at the threshold)
        expected = _expected_mask(model_path, mixed_folder / name)
        assert int((expected != mask).sum()) <= 3
    assert 0 < sum(int(rows[name]["tumor_pixels"]) for name in sizes) < sum(h * w for h, w in sizes.values())
    assert len(stems) == 4  # sub/slice.png did not overwrite slice.png
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_overlay_outlines_mask_in_red():
    from brainseg.predict import overlay

    gray = np.full((40, 40), 100, np.uint8)
    mask = np.zeros((40, 40), np.uint8)
    mask[10:20, 10:20] = 1
    image = overlay(gray, mask)
    red = (image[:, :, 2] == 255) & (image[:, :, 1] == 0)
    assert red[10, 10:20].all() and not red[15, 15] and not red[30, 30]


def test_only_good_inputs_exit_zero(model_path, tmp_path):
    image = tmp_path / "one.png"
    cv2.imwrite(str(image), _blob_image(50, 60, 4))
    result = run_cli(str(image), "--out", str(tmp_path / "out"), "--model", str(model_path))
    assert result.returncode == 0, result.stderr
    # the default is the fast path: the mask and the reports, no overlay
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["one_mask.png", "report.csv", "report.json"]


def test_a_truncated_jpeg_is_reported_not_segmented(model_path, tmp_path):
    data = cv2.imencode(".jpg", _blob_image(60, 60, 6))[1].tobytes()
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 2])
    result = run_cli(str(tmp_path / "cut.jpg"), "--out", str(tmp_path / "out"), "--model", str(model_path))
    assert result.returncode == 1 and "cut.jpg" in result.stderr and "truncated" in result.stderr
    assert not (tmp_path / "out" / "cut_mask.png").exists()


def test_existing_files_are_not_overwritten_without_asking(model_path, tmp_path):
    image = tmp_path / "one.png"
    cv2.imwrite(str(image), _blob_image(50, 60, 4))
    out = tmp_path / "out"
    out.mkdir()
    truth = out / "one_mask.png"
    truth.write_bytes(b"a ground-truth mask")
    result = run_cli(str(image), "--out", str(out), "--model", str(model_path))
    assert result.returncode == 2 and "one_mask.png" in result.stderr and "--overwrite" in result.stderr
    assert truth.read_bytes() == b"a ground-truth mask" and sorted(p.name for p in out.iterdir()) == ["one_mask.png"]

    result = run_cli(str(image), "--out", str(out), "--model", str(model_path), "--overwrite")
    assert result.returncode == 0, result.stderr
    assert cv2.imread(str(truth), cv2.IMREAD_UNCHANGED).shape == (50, 60)


def test_an_output_folder_inside_the_input_folder_is_not_read_as_input(model_path, tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), _blob_image(50, 60, 5))
    for _ in range(2):
        result = run_cli(str(folder), "--out", str(folder / "masks"), "--model", str(model_path), "--overwrite")
        assert result.returncode == 0, result.stderr
    with open(folder / "masks" / "report.csv", newline="") as f:
        assert [Path(row["file"]).name for row in csv.DictReader(f)] == ["a.png"]
    assert sorted(p.name for p in (folder / "masks").iterdir()) == ["a_mask.png", "report.csv", "report.json"]


@pytest.mark.parametrize("fmt", ["png", "jpg", "none"])
def test_overlay_format_option(model_path, tmp_path, fmt):
    from brainseg import predict

    image = tmp_path / "one.png"
    cv2.imwrite(str(image), _blob_image(50, 60, 4))
    rows = predict.predict([str(image)], tmp_path / "out", model_path, overlay_format=fmt)
    assert rows[0].status == "ok"
    written = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.startswith("one"))
    assert written == (["one_mask.png"] if fmt == "none" else ["one_mask.png", f"one_overlay.{fmt}"])
    if fmt != "none":
        assert cv2.imread(str(tmp_path / "out" / f"one_overlay.{fmt}")).shape == (50, 60, 3)


def test_dicom_without_pydicom_is_reported(model_path, tmp_path, monkeypatch):
    from brainseg import predict

    monkeypatch.setitem(sys.modules, "pydicom", None)  # makes `import pydicom` fail even if installed
    (tmp_path / "scan.dcm").write_bytes(b"\0" * 200)
    rows = predict.predict([str(tmp_path / "scan.dcm")], tmp_path / "out", model_path)
    assert rows[0].status == "error" and "pip install pydicom" in rows[0].error


def test_real_mr_dicom_is_segmented_at_its_own_size(model_path, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    from brainseg import predict

    source = Path(get_testdata_file("MR_small.dcm"))  # a real 64x64 16-bit MR slice shipped with pydicom
    rows = predict.predict([str(source)], tmp_path / "out", model_path)
    assert rows[0].status == "ok", rows[0].error
    assert (rows[0].height, rows[0].width) == pydicom.dcmread(source).pixel_array.shape
    mask = cv2.imread(str(tmp_path / "out" / "MR_small_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (rows[0].height, rows[0].width) and set(np.unique(mask)) <= {0, 255}
    assert int((mask > 0).sum()) == rows[0].tumor_pixels


def test_dicom_monochrome1_is_inverted(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    from brainseg.predict import read_gray

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    pixels = ds.pixel_array.astype(np.int16)
    ds.PhotometricInterpretation = "MONOCHROME1"  # low values bright: the same slice, stored inverted
    ds.PixelData = (pixels.max() - pixels).astype(np.int16).tobytes()
    ds.save_as(tmp_path / "inverted.dcm")
    # Read back as displayed: bright where the original is bright (up to the intensity offset).
    restored = read_gray(tmp_path / "inverted.dcm").astype(float).ravel()
    original = read_gray(Path(get_testdata_file("MR_small.dcm"))).astype(float).ravel()
    assert np.corrcoef(restored, original)[0, 1] > 0.99


def test_missing_model_is_usage_error(tmp_path):
    image = tmp_path / "one.png"
    cv2.imwrite(str(image), _blob_image(50, 60, 5))
    result = run_cli(str(image), "--out", str(tmp_path / "out"), "--model", str(tmp_path / "nope.onnx"))
    assert result.returncode == 2
    assert "model not found" in result.stderr and "nope.onnx" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_link_and_its_target_get_a_row_each_and_a_tiff_stack_is_refused(model_path, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    cv2.imwrite(str(scans / "a.png"), _blob_image(50, 60, 4))
    (scans / "link.png").symlink_to(scans / "a.png")
    assert cv2.imwritemulti(str(scans / "stack.tif"), [_blob_image(40, 40, 1)] * 3)
    result = run_cli(str(scans), "--out", str(tmp_path / "out"), "--model", str(model_path))
    assert result.returncode == 1, result.stderr  # the stack failed
    assert "1 of 3 input(s) segmented, 1 failed, 1 duplicate name(s)" in result.stdout
    with open(tmp_path / "out" / "report.csv", newline="") as f:
        rows = {Path(row["file"]).name: row for row in csv.DictReader(f)}
    assert rows["a.png"]["status"] == "ok"
    assert rows["link.png"]["status"] == "duplicate" and rows["link.png"]["output"] == "a"
    assert rows["stack.tif"]["status"] == "error" and "multi-page TIFF" in rows["stack.tif"]["error"]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["duplicate"] == 1


def _copy_model(model_path: Path, folder: Path, **spec_changes) -> Path:
    folder.mkdir()
    (folder / "model.onnx").write_bytes(model_path.read_bytes())
    spec = json.loads(model_path.with_suffix(".json").read_text())
    for key, value in spec_changes.items():
        spec[key] = value
    (folder / "model.json").write_text(json.dumps(spec))
    return folder / "model.onnx"


# Each filter must change this model's masks to be exercised: its specks (at most 30 px beside a
# ~2,100 px blob) all fall under 40 px, and 4 px leaves some, which max_components 1 then drops.
@pytest.mark.parametrize("filters", [{"min_component_px": 40, "max_components": 0},
                                     {"min_component_px": 4, "max_components": 1}], ids=["min-size", "largest"])
def test_predict_writes_exactly_the_masks_evaluate_scores(model_path, tmp_path, filters):
    """With flip TTA and component filtering on, the masks brainseg-predict writes are the masks the
    evaluate stage scores, pixel for pixel, given the same model's probabilities."""
    from brainseg.evaluate import flip_tta_probs, original_size_table
    from brainseg.inference import PostProcess, resize_to_model, unit_range
    from brainseg.predict import Predictor

    post = {"threshold": 0.5, "tta": True, **filters}
    model = _copy_model(model_path, tmp_path / "model", postprocess=post)
    grays = [_blob_image(h, w, seed) for seed, (h, w) in enumerate([(100, 120), (64, 64), (90, 70), (130, 97)])]
    (tmp_path / "in").mkdir()
    for i, gray in enumerate(grays):
        cv2.imwrite(str(tmp_path / "in" / f"s{i}.png"), gray)
    result = run_cli(str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model", str(model), "--overlay", "none")
    assert result.returncode == 0, result.stderr
    written = [(cv2.imread(str(tmp_path / "out" / f"s{i}_mask.png"), cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint8)
               for i in range(len(grays))]

    # Evaluate's path: slices as the preprocess stage stores them, its TTA, its original-size scoring.
    # Scored against predict's own masks, a false positive or negative is a pixel where the two differ.
    small = np.stack([resize_to_model(gray, SIZE) for gray in grays])
    predictor = Predictor(model)
    probs_of = lambda images: predictor.run_model(unit_range(images))  # noqa: E731 - the same batch as the CLI's
    plain = probs_of(small)
    table = original_size_table(flip_tta_probs(probs_of, small, plain), written, PostProcess(**post))
    assert table[["fp", "fn"]].to_numpy().sum() == 0 and table["tp"].sum() > 0
    # Each setting changed the masks here, so the test exercised it.
    tta_probs = flip_tta_probs(probs_of, small, plain)
    unfiltered = {"min_component_px": 0} if filters["max_components"] == 0 else {"max_components": 0}
    for probs, changed in ((plain, {}), (tta_probs, unfiltered)):
        assert original_size_table(probs, written, PostProcess(**{**post, **changed}))[["fp", "fn"]].to_numpy().sum() > 0


def test_a_version_2_description_without_max_components_keeps_every_component(model_path, tmp_path):
    from brainseg.inference import PostProcess
    from brainseg.predict import Predictor

    post = {"threshold": 0.4, "tta": True, "min_component_px": 8}  # format 2 had no max_components
    predictor = Predictor(_copy_model(model_path, tmp_path / "model", format_version=2, postprocess=post))
    assert predictor.post == PostProcess(threshold=0.4, tta=True, min_component_px=8, max_components=0)


@pytest.mark.parametrize("spec_changes, message", [
    ({"input": {"name": "image", "shape": ["batch", 1, 2 * SIZE, 2 * SIZE]}},
     rf"says the input is {2 * SIZE} px, but .*model\.onnx takes \['batch', 1, {SIZE}, {SIZE}\]"),
    ({"postprocess": {"threshold": 5, "tta": False, "min_component_px": 0}},
     r"threshold must lie strictly between 0 and 1, got 5\.0"),
    ({"postprocess": {"threshold": 0.5}}, r"the post-processing lacks 'tta'"),
    ({"format_version": 1}, r"version 1 model description; this brainseg-predict reads versions 2, 3"),
], ids=["size-mismatch", "threshold", "incomplete-postprocess", "old-format"])
def test_a_model_description_that_cannot_hold_is_refused_before_any_work(model_path, tmp_path, spec_changes,
                                                                        message):
    model = _copy_model(model_path, tmp_path / "model", **spec_changes)
    cv2.imwrite(str(tmp_path / "one.png"), _blob_image(50, 60, 4))
    result = run_cli(str(tmp_path / "one.png"), "--out", str(tmp_path / "out"), "--model", str(model))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert re.search(message, result.stderr) and "model.json" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("out", ["afile", "afile/sub"])
def test_an_output_path_that_cannot_be_written_is_refused_before_any_work(model_path, tmp_path, out):
    (tmp_path / "afile").write_text("keep me")
    cv2.imwrite(str(tmp_path / "one.png"), _blob_image(50, 60, 4))
    result = run_cli(str(tmp_path / "one.png"), "--out", str(tmp_path / out), "--model", str(model_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert str(tmp_path / out) in result.stderr and "--out" in result.stderr
    assert "predict:" not in result.stdout  # no summary: nothing was processed
    assert (tmp_path / "afile").read_text() == "keep me"


def test_import_does_not_load_torch():
    code = ("import sys, brainseg.predict; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'pandas'}); print(bad)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_clean_venv_from_deploy_requirements(model_path, tmp_path):
    """requirements-deploy.txt alone is enough to run brainseg-predict (no torch in that venv)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    start = time.monotonic()
    install = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "-r",
                              "requirements-deploy.txt"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    if install.returncode != 0:
        pytest.skip(f"pip could not install requirements-deploy.txt (offline?): {install.stderr.strip()[-500:]}")
    print(f"pip install took {time.monotonic() - start:.0f} s")

    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), _blob_image(64, 80, 6))
    cv2.imwrite(str(images / "b.jpg"), _blob_image(30, 30, 7))
    from pydicom.data import get_testdata_file

    (images / "c.dcm").write_bytes(Path(get_testdata_file("MR_small.dcm")).read_bytes())
    # Run from outside the checkout so that only the venv's installed package can be imported.
    result = subprocess.run([str(bin_dir / "brainseg-predict"), str(images), "--out", str(tmp_path / "out"),
                             "--model", str(model_path)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "3 of 3 input(s) segmented" in result.stdout
    for name in ("a", "b", "c"):
        assert (tmp_path / "out" / f"{name}_mask.png").is_file(), name
    has_torch = subprocess.run([str(bin_dir / "python"), "-c", "import torch"], capture_output=True)
    assert has_torch.returncode != 0
