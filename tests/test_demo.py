"""brainseg-demo: its masks are brainseg-predict's, bad uploads get a message; and in a real browser
(headless Chromium through Selenium) where one is installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from local_server import free_port, wait_until_serving

from brainseg.demo import segment_upload
from brainseg.predict import Predictor

ROOT = Path(__file__).resolve().parents[1]
# The page's Python: Gradio pins an older Pillow than the pipeline's plots, so it may live in its own venv.
DEMO_PYTHON = os.environ.get("BRAINSEG_DEMO_PYTHON", sys.executable)


def _slice(path: Path, seed: int, shape=(100, 120)) -> Path:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, shape).astype(np.uint8)
    cv2.circle(image, (shape[1] // 3, shape[0] // 2), min(shape) // 5, 220, -1)
    cv2.imwrite(str(path), image)
    return path


def _predict_mask(model_path: Path, image: Path, out: Path) -> np.ndarray:
    result = subprocess.run([sys.executable, "-m", "brainseg.predict", str(image), "--out", str(out), "--model",
                             str(model_path), "--overlay", "none"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return cv2.imread(str(out / f"{image.stem}_mask.png"), cv2.IMREAD_GRAYSCALE)


def _with_postprocess(model_path: Path, folder: Path, **post) -> Path:
    """A copy of the test model whose description turns on TTA and component filtering."""
    folder.mkdir()
    shutil.copy(model_path, folder / "model.onnx")
    spec = json.loads(model_path.with_suffix(".json").read_text())
    spec["postprocess"] = {"threshold": 0.5, "tta": True, "min_component_px": 40, **post}
    (folder / "model.json").write_text(json.dumps(spec))
    return folder / "model.onnx"


def test_the_page_segments_as_brainseg_predict_does(model_path, tmp_path):
    model = _with_postprocess(model_path, tmp_path / "model")
    image = _slice(tmp_path / "slice.png", 0)
    result = segment_upload(Predictor(model), image, 0.5, tmp_path, "slice.png")
    page_mask = cv2.imread(str(result.mask_file), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(page_mask, _predict_mask(model, image, tmp_path / "predicted"))
    assert result.row[:3] == ["slice.png", "ok", int((page_mask > 0).sum())] and result.overlay.shape == (100, 120, 3)
    # The slider's threshold is used: a higher one gives a smaller mask.
    (tmp_path / "higher").mkdir()
    higher = segment_upload(Predictor(model), image, 0.8, tmp_path / "higher", "slice.png")
    assert higher.row[2] < result.row[2]


def test_uploads_of_one_name_keep_a_mask_each_and_oversized_ones_are_refused(model_path, tmp_path, monkeypatch):
    import brainseg.demo as demo

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = _slice(tmp_path / "a" / "scan.png", 1), _slice(tmp_path / "b" / "scan.png", 2)
    big = _slice(tmp_path / "big.png", 3, shape=(300, 300))
    monkeypatch.setattr(demo, "MAX_UPLOAD_MB", big.stat().st_size / 2**20 * 0.99)  # just below the big file
    results = demo.segment_uploads(Predictor(model_path), [first, second, big], 0.5, tmp_path)
    assert [r.mask_file.name if r.mask_file else None for r in results] == ["scan_mask.png", "scan-2_mask.png", None]
    assert results[2].row[1] == "error" and "larger than" in results[2].row[4]
    masks = [cv2.imread(str(r.mask_file), cv2.IMREAD_GRAYSCALE) for r in results[:2]]
    assert masks[0].shape == masks[1].shape and not np.array_equal(masks[0], masks[1])


def test_an_unreadable_upload_is_a_row_with_its_reason(model_path, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    result = segment_upload(Predictor(model_path), tmp_path / "broken.png", 0.5, tmp_path, "broken.png")
    assert result.row[:2] == ["broken.png", "error"] and result.row[4] and result.mask_file is None


def test_dicom_area_is_given_in_square_millimetres(model_path, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    source = Path(get_testdata_file("MR_small.dcm"))  # a real MR slice with PixelSpacing
    row_mm, col_mm = (float(v) for v in pydicom.dcmread(source).PixelSpacing)
    result = segment_upload(Predictor(model_path), source, 0.5, tmp_path, source.name)
    assert result.row[1] == "ok" and result.row[2] > 0
    assert result.row[3] == pytest.approx(result.row[2] * row_mm * col_mm, abs=0.05)


# --- in a real browser ---------------------------------------------------------------------------

def _browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401 - only whether it is there
    except ImportError:
        return "selenium is not installed (pip install -r requirements-demo.txt)"
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return "no chromium + chromedriver on PATH (Debian: apt-get install chromium chromium-driver)"
    if subprocess.run([DEMO_PYTHON, "-c", "import gradio"], capture_output=True).returncode != 0:
        return (f"{DEMO_PYTHON} cannot import gradio: pip install -r requirements-demo.txt, or point "
                "BRAINSEG_DEMO_PYTHON at a Python that has it")
    return None


@pytest.fixture(scope="module")
def page(model_path, tmp_path_factory):
    """The demo served on a free port, and a headless Chromium on it."""
    reason = _browser_missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    model = _with_postprocess(model_path, tmp_path_factory.mktemp("demo") / "model")
    port = free_port()
    server = subprocess.Popen([DEMO_PYTHON, "-m", "brainseg.demo", "--model", str(model.parent), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, server, timeout=120)
    except RuntimeError as err:
        server.kill()
        pytest.fail(f"{err}: {server.communicate()[0][-3000:]}")
    options = Options()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1600"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        yield driver, url, model
    finally:
        driver.quit()
        server.kill()
        server.wait()


def _upload_and_segment(driver, url: str, *files: Path) -> str:
    """Upload `files` through the page's file input, press Segment, return the status line."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, 120)
    upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#uploads input[type=file]"))
    upload.send_keys("\n".join(str(f) for f in files))
    # Listed once uploaded (the page breaks a name before its extension).
    wait.until(lambda d: all(f.stem in d.find_element(By.CSS_SELECTOR, "#uploads").text for f in files))
    wait.until(lambda d: _click(d.find_element(By.CSS_SELECTOR, "#segment")))
    return wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#status").text.strip() or None)


def _click(element) -> bool:
    """Click, or False while something (an upload's progress label) still lies over the element."""
    from selenium.common.exceptions import ElementClickInterceptedException

    try:
        element.click()
    except ElementClickInterceptedException:
        return False
    return True


def test_in_a_browser_the_offered_mask_is_brainseg_predicts(page, model_path, tmp_path):
    from selenium.webdriver.common.by import By

    driver, url, model = page
    image = _slice(tmp_path / "upload.png", 7, shape=(90, 110))
    assert _upload_and_segment(driver, url, image) == "1 segmented"
    assert "Research use only, not for diagnosis" in driver.page_source
    links = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "#masks a")
             if "upload_mask.png" in (a.get_attribute("href") or "")]
    assert links, driver.find_element(By.CSS_SELECTOR, "#masks").text
    offered = cv2.imdecode(np.frombuffer(urllib.request.urlopen(links[0]).read(), np.uint8), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(offered, _predict_mask(model, image, tmp_path / "predicted"))


def test_in_a_browser_a_corrupt_upload_gets_a_message_not_a_traceback(page, tmp_path):
    from selenium.webdriver.common.by import By

    driver, url, _ = page
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    good = _slice(tmp_path / "fine.png", 8)
    status = _upload_and_segment(driver, url, tmp_path / "corrupt.png", good)
    assert status == "1 segmented, 1 could not be read (see the table)"
    table = driver.find_element(By.CSS_SELECTOR, "#results").text
    assert "corrupt.png" in table and "error" in table and "Traceback" not in driver.page_source
