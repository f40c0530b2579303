"""Damaged and hostile zips, and folders holding links, through the download stage: a clear error (exit 2)
naming the archive and member (or the link), and data/raw exactly as it was."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
IMAGE = cv2.imencode(".png", np.full((8, 8), 90, np.uint8))[1].tobytes()
MASK = cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes()


def _pairs(extra: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """An images/ + masks/ dataset of two slices, plus `extra` members."""
    return {"images/1.png": IMAGE, "masks/1.png": MASK, "images/2.png": IMAGE, "masks/2.png": MASK, **(extra or {})}


def _write(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _patch(path: Path, member: str, change) -> Path:
    """Apply `change(bytearray, local_header_offset, data_offset)` to the raw bytes of one member."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26: info.header_offset + 30])
    change(raw, info, info.header_offset + 30 + name_len + extra_len)
    path.write_bytes(bytes(raw))
    return path


def _flip_data_byte(raw, info, data):
    raw[data + info.compress_size // 2] ^= 0xFF


def _set_flag_and_method(flag: int = 0, method: int | None = None):
    """Set general-purpose flag bits and/or the compression method in both of the member's headers."""
    def change(raw, info, data):
        for header, flag_at, method_at in ((info.header_offset, 6, 8), (_central_entry(raw, info), 8, 10)):
            flags = struct.unpack("<H", raw[header + flag_at: header + flag_at + 2])[0] | flag
            raw[header + flag_at: header + flag_at + 2] = struct.pack("<H", flags)
            if method is not None:
                raw[header + method_at: header + method_at + 2] = struct.pack("<H", method)
    return change


def _central_entry(raw: bytearray, info: zipfile.ZipInfo) -> int:
    """Offset of `info`'s central-directory record."""
    start = 0
    while (start := raw.find(b"PK\x01\x02", start)) >= 0:
        name_len = struct.unpack("<H", raw[start + 28: start + 30])[0]
        if raw[start + 46: start + 46 + name_len] == info.filename.encode():
            return start
        start += 4
    raise AssertionError(info.filename)


def _shrink_declared_size(raw, info, data):
    """The headers say 4 bytes fewer than the member inflates to."""
    for header, size_at in ((info.header_offset, 22), (_central_entry(raw, info), 24)):
        raw[header + size_at: header + size_at + 4] = struct.pack("<I", info.file_size - 4)


def _stored(members):
    return lambda path: _write(path, members)


def _deflated(members):
    return lambda path: _write(path, members, zipfile.ZIP_DEFLATED)


def _duplicate(path: Path) -> Path:
    _write(path, _pairs())
    with zipfile.ZipFile(path, "a") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("masks/1.png", IMAGE)
    return path


TEXT = {"notes.txt": b"tumor " * 4000}
CASES = {  # name: (write the zip, what the error must say)
    "crc": (lambda p: _patch(_write(p, _pairs()), "images/2.png", _flip_data_byte), r"images/2\.png.*corrupt"),
    "deflate": (lambda p: _patch(_write(p, _pairs(TEXT), zipfile.ZIP_DEFLATED), "notes.txt", _flip_data_byte),
                r"notes\.txt.*corrupt"),
    "size-above-header": (lambda p: _patch(_write(p, _pairs(TEXT), zipfile.ZIP_DEFLATED), "notes.txt",
                                           _shrink_declared_size), r"notes\.txt.*corrupt"),
    "encrypted": (lambda p: _patch(_write(p, _pairs()), "masks/1.png", _set_flag_and_method(flag=0x1)),
                  r"masks/1\.png.*encrypted"),
    "unsupported-compression": (lambda p: _patch(_write(p, _pairs()), "masks/1.png", _set_flag_and_method(method=98)),
                                r"masks/1\.png.*compression method 98"),
    "file-folder-clash": (_stored(_pairs({"images/3.png": IMAGE, "images/3.png/x.png": IMAGE})),
                          r"images/3\.png.*both a file and a folder"),
    "duplicate-member": (_duplicate, r"masks/1\.png.*twice"),
    "long-name": (_stored(_pairs({"images/" + "n" * 300 + ".png": IMAGE})), r"images/nnnn.*longer than 255 bytes"),
    "ratio": (_deflated(_pairs({"zeros.bin": b"\0" * 3_000_000})), r"zeros\.bin.*compression ratio"),
}


def _download(ws: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "stages/download.py")], cwd=ws, capture_output=True, text=True)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("archives")
    _write(ws / "good.zip", _pairs())
    (ws / "params.yaml").write_text(yaml.safe_dump({"data": {"source": "local", "local_path": "good.zip"}}))
    result = _download(ws)
    assert result.returncode == 0, result.stderr
    return ws


@pytest.mark.parametrize("case", sorted(CASES))
def test_damaged_archive_is_named_and_data_raw_is_untouched(workspace, case):
    make, message = CASES[case]
    make(workspace / f"{case}.zip")
    before = _snapshot(workspace / "data")
    (workspace / "params.yaml").write_text(yaml.safe_dump({"data": {"source": "local", "local_path": f"{case}.zip"}}))
    result = _download(workspace)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"{case}.zip" in result.stderr and re.search(message, result.stderr), result.stderr
    assert _snapshot(workspace / "data") == before
    assert not [p for p in (workspace / "data").iterdir() if p.name.startswith(".")]


def test_a_member_named_like_the_extraction_folder_is_ordinary(workspace):
    _write(workspace / "named.zip", _pairs({"extracted/readme.txt": b"x", "extracted.txt": b"y"}))
    (workspace / "params.yaml").write_text(yaml.safe_dump({"data": {"source": "local", "local_path": "named.zip"}}))
    result = _download(workspace)
    assert result.returncode == 0, result.stderr
    assert (workspace / "data/raw/extracted/readme.txt").read_bytes() == b"x"
    assert sorted(p.name for p in (workspace / "data/raw").iterdir()) == ["extracted", "extracted.txt", "images",
                                                                          "masks"]
    os.remove(workspace / "named.zip")


@pytest.mark.parametrize("link", ["system-file", "dangling", "loop"])
def test_links_in_a_dataset_folder_are_refused(workspace, tmp_path, link):
    folder = tmp_path / "dataset"
    for name, data in _pairs().items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    target = {"system-file": "/etc/hostname", "dangling": str(tmp_path / "gone.png"), "loop": str(folder)}[link]
    (folder / "images" / "3.png").symlink_to(target)
    before = _snapshot(workspace / "data")
    (workspace / "params.yaml").write_text(yaml.safe_dump({"data": {"source": "local", "local_path": str(folder)}}))
    result = _download(workspace)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"data.local_path {folder} holds symbolic links (images/3.png)" in result.stderr
    assert _snapshot(workspace / "data") == before


def test_a_zip_without_a_dataset_names_the_zip_not_a_scratch_folder(workspace):
    _write(workspace / "photos.zip", {"holiday/beach.png": IMAGE})
    (workspace / "params.yaml").write_text(yaml.safe_dump({"data": {"source": "local", "local_path": "photos.zip"}}))
    result = _download(workspace)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "photos.zip (inside the zip): no supported dataset layout found" in result.stderr
    assert ".tmp-" not in result.stderr and ".extracted-" not in result.stderr
