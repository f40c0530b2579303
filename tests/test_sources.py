import json
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

from brainseg.config import DataConfig, PhantomConfig
from brainseg.data.archive import UnsafeArchiveError, safe_extract_zip
from brainseg.io import staging_dir
from brainseg.data.sources import DataSourceError, download

SHARED_ZIP = Path(__file__).resolve().parents[2] / "shared/data/brain-tumor-image-dataset-semantic-segmentation.zip"


def _zip(path: Path, members: dict[str, bytes], mode: int | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


@pytest.mark.parametrize("name", ["/etc/passwd", "../escape.txt", "train/../../escape.txt", "C:/windows.txt"])
def test_refuses_paths_outside_target(tmp_path, name):
    archive = _zip(tmp_path / "a.zip", {"train/ok.txt": b"ok", name: b"x"})
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(UnsafeArchiveError, match="refusing member"):
        safe_extract_zip(archive, target, 10**6)
    assert list(target.iterdir()) == []  # checked before anything is written


def test_refuses_symlinks(tmp_path):
    archive = _zip(tmp_path / "a.zip", {"link": b"/etc/passwd"}, mode=stat.S_IFLNK | 0o777)
    (tmp_path / "out").mkdir()
    with pytest.raises(UnsafeArchiveError, match="link"):
        safe_extract_zip(archive, tmp_path / "out", 10**6)


def test_refuses_zip_bomb(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", b"\0" * 5_000_000)
    assert archive.stat().st_size < 50_000
    (tmp_path / "out").mkdir()
    with pytest.raises(UnsafeArchiveError, match="compression ratio bound of 100:1"):
        safe_extract_zip(archive, tmp_path / "out", 10**9)
    # Incompressible data pass the ratio bound but not the size bound.
    _zip(archive, {"noise.bin": np.random.default_rng(0).bytes(2_000_000)})
    with pytest.raises(UnsafeArchiveError, match="exceeds the bound"):
        safe_extract_zip(archive, tmp_path / "out", 1_000_000)
    assert list((tmp_path / "out").iterdir()) == []


def test_extracts_regular_members(tmp_path):
    archive = _zip(tmp_path / "a.zip", {"train/a.txt": b"a", "test/b.txt": b"bb"}, mode=stat.S_IFREG | 0o644)
    (tmp_path / "out").mkdir()
    assert safe_extract_zip(archive, tmp_path / "out", 10**6) == 2
    assert (tmp_path / "out/test/b.txt").read_bytes() == b"bb"


def test_not_a_zip_is_a_clear_error(tmp_path):
    bad = tmp_path / "truncated.zip"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UnsafeArchiveError, match="not a zip archive"):
        safe_extract_zip(bad, tmp_path, 10**6)


def test_staging_dir_keeps_old_content_on_failure(tmp_path):
    final = tmp_path / "raw"
    final.mkdir()
    (final / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staging_dir(final) as staging:
            (staging / "half.txt").write_text("new")
            raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]
    assert (final / "keep.txt").read_text() == "old"


def test_kaggle_without_credentials_fails_at_once(tmp_path, monkeypatch):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    raw = tmp_path / "data/raw"
    raw.mkdir(parents=True)
    (raw / "previous.txt").write_text("kept")
    with pytest.raises(DataSourceError) as err:
        download(DataConfig(source="kaggle"), 0, raw, tmp_path / "data/download.json")
    message = str(err.value)
    for hint in ("~/.kaggle/kaggle.json", "KAGGLE_USERNAME", "KAGGLE_KEY", "phantom", "local"):
        assert hint in message
    assert (raw / "previous.txt").read_text() == "kept"


def test_local_missing_path_names_it(tmp_path):
    with pytest.raises(DataSourceError, match="nowhere.zip"):
        download(DataConfig(source="local", local_path=str(tmp_path / "nowhere.zip")), 0,
                 tmp_path / "raw", tmp_path / "download.json")


def test_phantom_download_lands_in_kaggle_layout(tmp_path):
    cfg = DataConfig(phantom=PhantomConfig(train=3, valid=2, test=2, image_size=64))
    manifest = download(cfg, 7, tmp_path / "raw", tmp_path / "download.json")
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["test", "train", "valid"]
    assert manifest["files"] == 3 + 2 + 2 + 3
    assert len(manifest["archive_sha256"]) == 64
    assert json.loads((tmp_path / "download.json").read_text()) == manifest
    again = download(cfg, 7, tmp_path / "raw2", tmp_path / "download2.json")
    assert again["archive_sha256"] == manifest["archive_sha256"]


@pytest.mark.skipif(not SHARED_ZIP.is_file(), reason="the real Kaggle copy (../shared/data) is absent")
def test_real_kaggle_copy_through_local_source(tmp_path):
    manifest = download(DataConfig(source="local", local_path=str(SHARED_ZIP)), 0, tmp_path / "raw",
                        tmp_path / "download.json")
    assert manifest["archive_sha256"] == "871c8e94a066fb394eea1d96495f418d5cbe198f9b58adb009362f4d70d9fbaf"
    assert manifest["files"] == 2146 + 3
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["test", "train", "valid"]


def test_local_single_coco_json_layout_keeps_the_json(tmp_path):
    import cv2
    import numpy as np

    ds = tmp_path / "wrapper" / "ds"
    (ds / "images").mkdir(parents=True)
    cv2.imwrite(str(ds / "images/a.png"), np.zeros((8, 8), np.uint8))
    coco = {"images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 8}], "annotations": [],
            "categories": [{"id": 1, "name": "tumor", "supercategory": "none"}]}
    (ds / "annotations.json").write_text(json.dumps(coco))
    manifest = download(DataConfig(source="local", local_path=str(tmp_path / "wrapper")), 0,
                        tmp_path / "raw", tmp_path / "download.json")
    assert (tmp_path / "raw/annotations.json").is_file() and (tmp_path / "raw/images/a.png").is_file()
    assert manifest["files"] == 2
