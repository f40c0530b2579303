"""Image decoding shared by preprocessing and inference (numpy and cv2 only: no torch, no pandas)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def to_uint8(image: np.ndarray) -> np.ndarray:
    """16-bit (or float) slices scaled by their own maximum.

    MRI intensities have no absolute unit (they depend on scanner, coil and protocol), and 16-bit
    exports often use only a few thousand levels: OpenCV's default 16->8 bit shift would leave such
    slices nearly black. Per-image max scaling keeps the full contrast of each slice.
    """
    if image.dtype == np.uint8:
        return image
    image = np.nan_to_num(image.astype(np.float32)).clip(min=0)
    peak = float(image.max())
    return np.zeros(image.shape, np.uint8) if peak == 0 else np.rint(image * (255.0 / peak)).astype(np.uint8)


# Image files by name, wherever files are searched (dataset layouts, brainseg-predict's folders).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
JPEG_SOI = b"\xff\xd8\xff"
_UNCODED_MARKERS = {0x01, *range(0xD0, 0xD8)}  # TEM and RST0-7: no length field


def jpeg_problem(data: bytes) -> str | None:
    """Why JPEG bytes are cut short or corrupt, or None when their markers run intact to end-of-image.

    libjpeg decodes such files "successfully", with only a warning on stderr, and fills what is
    missing with grey; a half-grey slice must not reach training or a report as if it were a scan.
    Walks the marker segments; in entropy-coded data an FF byte is only followed by 00 (a stuffed
    FF), D0-D7 (restart) or FF (fill), so anything else there is the next marker.
    """
    truncated = "the JPEG data ends before the end of the image (a truncated or partly copied file)"
    pos, size, in_scan = 2, len(data), False
    while True:
        if in_scan:
            pos = data.find(b"\xff", pos)
            if pos < 0 or pos + 1 >= size:
                return truncated
            if data[pos + 1] in (0x00, 0xFF) or 0xD0 <= data[pos + 1] <= 0xD7:
                pos += 1 if data[pos + 1] == 0xFF else 2
                continue
            in_scan = False
        if pos + 1 >= size:
            return truncated
        code = data[pos + 1]
        if data[pos] != 0xFF or code == 0xD8 or (code < 0xC0 and code != 0x01):
            return f"corrupt JPEG data (no valid marker at byte {pos})"
        if code == 0xFF:  # fill byte before a marker
            pos += 1
        elif code == 0xD9:  # end of image
            return None
        elif code in _UNCODED_MARKERS:
            pos += 2
        else:
            if pos + 4 > size:
                return truncated
            end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
            if end < pos + 4:
                return f"corrupt JPEG data (segment length below 2 at byte {pos})"
            if end > size:
                return truncated
            in_scan, pos = code == 0xDA, end


def tiff_pages(data: bytes) -> int:
    """Pages (image file directories) in TIFF bytes, counted up to 2; 0 when not a readable TIFF.

    OpenCV decodes the first page of a multi-page TIFF without a word: a stack of slices must not
    pass as its first slice.
    """
    order = {b"II": "little", b"MM": "big"}.get(data[:2])
    if order is None:
        return 0
    version = int.from_bytes(data[2:4], order)
    # Classic TIFF: 4-byte offsets, 2-byte entry counts, 12-byte entries; BigTIFF: 8, 8 and 20.
    offset_size, count_size, entry_size = {42: (4, 2, 12), 43: (8, 8, 20)}.get(version, (0, 0, 0))
    if not offset_size:
        return 0
    first = 4 if version == 42 else 8
    offset, pages = int.from_bytes(data[first:first + offset_size], order), 0
    while offset and pages < 2 and offset + count_size <= len(data):
        entries = int.from_bytes(data[offset:offset + count_size], order)
        next_at = offset + count_size + entries * entry_size
        pages += 1
        offset = int.from_bytes(data[next_at:next_at + offset_size], order) if next_at + offset_size <= len(data) else 0
    return pages


def read_grayscale(path: Path) -> np.ndarray | str:
    """Grayscale uint8 at full resolution, or why the file cannot be used.

    Always a full decode (then area resizing by the caller): the exported model's preprocessing
    contract is the same two steps, so training and inference see identical pixels (libjpeg's
    reduced-scale decode would be ~15% faster here but would not match).
    """
    try:
        data = Path(path).read_bytes()  # read once: checked, then decoded from memory
    except OSError as err:
        return f"cannot be read: {err.strerror}"
    problem = jpeg_problem(data) if data.startswith(JPEG_SOI) else None
    if problem:
        return problem
    if tiff_pages(data) > 1:
        return "a multi-page TIFF (a stack of images); save each slice as its own file"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
    return "unreadable or unsupported image file" if image is None else to_uint8(image)
