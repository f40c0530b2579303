"""Built-in synthetic MRI phantom shaped exactly like the Kaggle/Roboflow COCO export.

The real dataset (pkdarabi/brain-tumor-image-dataset-semantic-segmentation) is a zip
with ``train/``, ``valid/`` and ``test/`` folders of 640x640 RGB JPEGs plus one
``_annotations.coco.json`` each.  The phantom reproduces that layout so the rest of the
pipeline cannot tell the two apart, while rendering axial T1 contrast-enhanced-like
slices whose tumours are hard for an intensity threshold but learnable for a CNN.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import statistics
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from brainseg.config import PhantomConfig
from brainseg.data.layout import COCO_FILE, SPLIT_NAMES
from brainseg.io import atomic_output

CATEGORIES = [
    {"id": 0, "name": "Tumor", "supercategory": "none"},
    {"id": 1, "name": "0", "supercategory": "Tumor"},
    {"id": 2, "name": "1", "supercategory": "Tumor"},
]
# Tumour size bounds as a fraction of the brain area (sampled log-uniformly).
MIN_AREA_FRACTION = 0.01
MAX_AREA_FRACTION = 0.30

_DATE = "2023-08-19T04:37:54+00:00"
_ZIP_DATE = (2023, 8, 19, 4, 37, 54)
_JPEG_QUALITY = 90
# Source numbers are an affine scramble of the index modulo this prime, so they stay
# unique within a split for any count below it (config.MAX_PHANTOM_SLICES) and do not depend on it.
_SOURCE_MODULUS = 10007
# Anatomy is smooth, so it is rendered at most at this size and upsampled (speed).
_WORK_SIZE = 320
# Acquisition matrix as a fraction of the export size: 256 of 640, a common MRI matrix.
_ACQUISITION_FRACTION = 0.4

# Nominal T1-CE intensities (before bias field, gain and noise).
_SCALP, _SKULL, _CSF, _GM, _WM, _VESSEL = 0.90, 0.07, 0.13, 0.45, 0.62, 0.92


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in units of the image size (read-only, cached)."""
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth zero-mean random field (std ~0.7): low-res noise upsampled bicubically, which is fast."""
    low = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)


@functools.lru_cache(maxsize=1)
def _normal_table() -> np.ndarray:
    """Standard-normal quantiles at 2**16 evenly spaced probabilities."""
    inv_cdf = statistics.NormalDist().inv_cdf
    return np.array([inv_cdf((i + 0.5) / 65536) for i in range(65536)], dtype=np.float32)


def _fast_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """~4x faster than rng.standard_normal for full-frame noise: inverse-CDF table lookup."""
    return np.take(_normal_table(), rng.integers(0, 65536, size=shape, dtype=np.uint16))


def _smoothstep(edge_width: float, signed_distance: np.ndarray) -> np.ndarray:
    """Soft 0..1 transition; positive signed distance means inside."""
    return np.clip(signed_distance / edge_width + 0.5, 0.0, 1.0)


def _soft(mask: np.ndarray, sigma_px: float) -> np.ndarray:
    return cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma_px)


def _star_mask(
    rng: np.random.Generator, size: int, cy: float, cx: float, radius: float, roughness: float
) -> np.ndarray:
    """Boolean mask of an irregular blob: a radius perturbed by random low harmonics."""
    ks = np.arange(2, 7)
    amps = rng.uniform(0.0, roughness, ks.size) / ks**0.7
    phases = rng.uniform(0.0, 2 * np.pi, ks.size)
    r_max = radius * (1.0 + amps.sum())
    y0, y1 = max(int(cy - r_max) - 1, 0), min(int(cy + r_max) + 2, size)
    x0, x1 = max(int(cx - r_max) - 1, 0), min(int(cx + r_max) + 2, size)
    mask = np.zeros((size, size), dtype=bool)
    if y0 >= y1 or x0 >= x1:
        return mask
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
    theta = np.arctan2(dy, dx)
    boundary = radius * (1.0 + sum(a * np.cos(k * theta + p) for k, a, p in zip(ks, amps, phases)))
    mask[y0:y1, x0:x1] = np.hypot(dy, dx) <= np.maximum(boundary, 0.3 * radius)
    return mask


def _bbox_slice(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return (
        slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, h)),
        slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, w)),
    )


def _render_anatomy(rng: np.random.Generator, size: int, d: float) -> tuple[np.ndarray, np.ndarray]:
    """Tumour-free head at `size`: (intensity float32, soft brain mask)."""
    px = size / 640.0  # pixel-scale factor so features look the same at any resolution
    yy, xx = _grid(size)

    # Head geometry: rotated, slightly lumpy ellipse in normalised head coords (u, v).
    cx, cy = 0.5 + rng.normal(0, 0.02), 0.5 + rng.uniform(-0.03, 0.03)
    a = rng.uniform(0.29, 0.36)
    b = min(a * rng.uniform(1.08, 1.30), 0.45)
    rot = math.radians(rng.uniform(-12, 12))
    c, s = math.cos(rot), math.sin(rot)
    u = ((xx - cx) * c + (yy - cy) * s) / a
    v = (-(xx - cx) * s + (yy - cy) * c) / b
    r = np.sqrt(u * u + v * v) * (1.0 + 0.02 * _smooth_field(rng, size, 6))

    r_brain = rng.uniform(0.84, 0.88)
    r_skull_in = r_brain + rng.uniform(0.01, 0.025)
    r_skull_out = r_skull_in + rng.uniform(0.03, 0.05)
    edge = 1.5 / (a * 640)  # ~1.5 px soft edges at 640, in r units
    head = _smoothstep(edge, 1.0 - r)
    skull = _smoothstep(edge, r_skull_out - r)
    inner = _smoothstep(edge, r_skull_in - r)
    brain_soft = _smoothstep(edge, r_brain - r)

    # Parenchyma: white-matter core inside a grey-matter ribbon whose depth wanders like gyri.
    depth = 0.10 + 0.07 * _smooth_field(rng, size, 20) + 0.05 * _smooth_field(rng, size, 44)
    wm = _smoothstep(0.025, r_brain - np.maximum(depth, 0.025) - r)
    tissue = _GM + (_WM - _GM) * wm
    tissue *= 1.0 + (0.04 + 0.08 * d) * _smooth_field(rng, size, 56) + 0.05 * _smooth_field(rng, size, 10)

    # Sulci: thin dark lines at zero-crossings of a band-pass field, only within the cortex;
    # plus the interhemispheric fissure in front of and behind the ventricles.
    sulci = (np.abs(_smooth_field(rng, size, 36)) < 0.09) & (r > r_brain - depth * 1.1)
    fissure = (np.abs(u) < 0.012) & (np.abs(v) > rng.uniform(0.35, 0.55))
    csf = _soft(sulci | fissure, 0.8 * px)

    # Lateral ventricles: a ")(" butterfly pair of bent ellipses whose size varies per slice.
    vscale = rng.uniform(0.4, 1.4)
    spread = rng.uniform(0.05, 0.09) + 0.03 * vscale
    vy = rng.uniform(-0.12, 0.04)
    va, vb = 0.055 * vscale, rng.uniform(0.16, 0.28) * math.sqrt(vscale)
    bend = rng.uniform(0.8, 2.5)
    plexus = np.zeros_like(tissue)
    for side in (-1.0, 1.0):
        tilt = math.radians(side * rng.uniform(-5, 20))
        du, dv = u - side * spread, v - vy
        pu = du * math.cos(tilt) - dv * math.sin(tilt)
        pv = du * math.sin(tilt) + dv * math.cos(tilt)
        pu = pu - side * bend * pv * pv  # ends curve outwards
        vent = _smoothstep(0.15, 1.0 - np.sqrt((pu / va) ** 2 + (pv / vb) ** 2))
        csf = np.maximum(csf, vent)
        if rng.random() < 0.7:  # choroid plexus: enhancing blob in the ventricle's posterior part
            pr = va * rng.uniform(0.5, 0.9)
            plexus = np.maximum(plexus, _smoothstep(0.2, 1.0 - np.hypot(pu, pv - vb * rng.uniform(0.4, 0.8)) / pr))
        # Deep grey nuclei lateral to the ventricle: a darker non-tumour blob.
        nuc = 0.6 * _smoothstep(0.3, 1.0 - np.hypot((du - side * 0.17) / 0.08, (dv - 0.08) / 0.14))
        tissue = tissue * (1 - nuc) + _GM * nuc
    img = tissue * (1 - csf) + _CSF * csf

    # Bright distractors (they enhance on T1-CE): cortical vessels, dural sinus, choroid plexus.
    vessels = np.zeros((size, size), dtype=np.float32)
    for _ in range(rng.integers(2, 7)):
        pts = [np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.7, 0.7)])]
        heading = rng.uniform(0, 2 * np.pi)
        for _ in range(rng.integers(2, 6)):
            heading += rng.normal(0, 0.6)
            pts.append(pts[-1] + 0.05 * np.array([math.cos(heading), math.sin(heading)]))
        uv = np.array(pts)
        pix = np.stack([cx + a * uv[:, 0] * c - b * uv[:, 1] * s, cy + a * uv[:, 0] * s + b * uv[:, 1] * c], axis=1)
        thick = max(1, round(rng.uniform(1.5, 3.5) * px))
        cv2.polylines(vessels, [np.round(pix * size).astype(np.int32)], False, 1.0, thick, cv2.LINE_AA)
    sinus_v = float(rng.choice([-1.0, 1.0])) * (r_brain - 0.03)
    sinus = _smoothstep(0.3, 1.0 - np.hypot(u / 0.035, (v - sinus_v) / 0.05))
    bright = np.maximum(np.maximum(vessels * rng.uniform(0.6, 1.0), sinus), plexus) * brain_soft
    img = img * (1 - bright) + _VESSEL * bright

    # Head layers: bright scalp fat, dark cortical bone, thin CSF rim around the brain.
    scalp = _SCALP * (1.0 + 0.1 * _smooth_field(rng, size, 24))
    img = brain_soft * img + (inner - brain_soft) * _CSF + (skull - inner) * _SKULL + (head - skull) * scalp
    return img, brain_soft


def _n_tumors(rng: np.random.Generator, spec: PhantomConfig) -> int:
    u = rng.random()
    if u < spec.tumor_free_fraction:
        return 0
    return 2 if u < spec.tumor_free_fraction + spec.two_tumor_fraction else 1


def _place_tumors(rng: np.random.Generator, brain: np.ndarray, n: int) -> list[np.ndarray]:
    """Sample n non-overlapping irregular lesions fully inside the (eroded) brain."""
    size = brain.shape[0]
    brain_area = float(brain.sum())
    margin = max(2, size // 160)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    allowed = cv2.erode(brain.astype(np.uint8), kernel).astype(bool)
    masks: list[np.ndarray] = []
    for attempt in range(400):
        if len(masks) == n:
            break
        # Shrink the upper size bound when placement keeps failing (big lesions, two tumours).
        upper = max(0.9 * MAX_AREA_FRACTION * 0.97 ** (attempt // 2), MIN_AREA_FRACTION * 1.5)
        frac = math.exp(rng.uniform(math.log(MIN_AREA_FRACTION * 1.15), math.log(upper)))
        cy, cx = rng.uniform(0, size, 2)
        while not allowed[int(cy), int(cx)]:  # rejection-sample a centre inside the brain
            cy, cx = rng.uniform(0, size, 2)
        mask = _star_mask(rng, size, cy, cx, math.sqrt(frac * brain_area / math.pi), 0.35)
        if not MIN_AREA_FRACTION <= mask.sum() / brain_area <= MAX_AREA_FRACTION:
            continue
        if np.any(mask & ~allowed):
            continue
        grown = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
        if any(np.any(grown & m) for m in masks):
            continue
        masks.append(mask)
    return masks


def _paint_tumor(
    rng: np.random.Generator, img: np.ndarray, brain_soft: np.ndarray, mask: np.ndarray, d: float
) -> None:
    """Composite one lesion (and maybe its unlabelled edema halo) into `img` in place."""
    size = img.shape[0]
    px = size / 640.0
    box = _bbox_slice(mask, 0)
    ys, xs = np.nonzero(mask[box])
    ty, tx = float(ys.mean()) + box[0].start + 0.5, float(xs.mean()) + box[1].start + 0.5
    radius = math.sqrt(ys.size / math.pi)
    if rng.random() < 0.55:  # vasogenic edema: T1-hypointense halo, not part of the label
        halo = _star_mask(rng, size, ty, tx, radius * rng.uniform(1.3, 1.9), roughness=0.4)
        box = _bbox_slice(halo, int(9 * px) + 2)
        img[box] *= 1.0 - rng.uniform(0.12, 0.25) * _soft(halo[box], 3 * px) * brain_soft[box]
    box = _bbox_slice(mask, int(4 * px) + 2)
    texture = 1.0 + (0.04 + 0.06 * d) * _smooth_field(rng, size, 40)[box]
    contrast = 1.0 - 0.6 * d  # higher difficulty: lesions closer to white matter
    kind = rng.choice(3, p=[0.45, 0.30, 0.25])
    if kind == 0:  # enhancing rim around a dark necrotic core
        lesion = np.full(texture.shape, _WM + contrast * rng.uniform(0.24, 0.38), dtype=np.float32)
        core = _star_mask(rng, size, ty, tx, radius * rng.uniform(0.45, 0.75), roughness=0.3) & mask
        core_soft = _soft(core[box], 1.5 * px)
        lesion = lesion * (1 - core_soft) + rng.uniform(0.15, 0.35) * core_soft
    elif kind == 1:  # homogeneously enhancing
        lesion = np.full(texture.shape, _WM + contrast * rng.uniform(0.18, 0.34), dtype=np.float32)
    else:  # only mildly brighter than white matter
        lesion = np.full(texture.shape, _WM + contrast * rng.uniform(0.12, 0.20), dtype=np.float32)
    alpha = _soft(mask[box], 0.7 * px)
    img[box] = img[box] * (1 - alpha) + lesion * texture * alpha


def render_slice(rng: np.random.Generator, spec: PhantomConfig) -> tuple[np.ndarray, np.ndarray]:
    """Return (image uint8 HxW, label uint8 HxW) where label is 0 background, k = tumor k (1 or 2)."""
    size, d = spec.image_size, spec.difficulty
    # Lesions and labels are made at full resolution so polygons match pixels exactly.
    work = min(size, _WORK_SIZE)
    anatomy, brain_soft = _render_anatomy(rng, work, d)
    if work != size:
        anatomy = cv2.resize(anatomy, (size, size), interpolation=cv2.INTER_LINEAR)
        brain_soft = cv2.resize(brain_soft, (size, size), interpolation=cv2.INTER_LINEAR)
    img = anatomy.astype(np.float32)

    label = np.zeros((size, size), dtype=np.uint8)
    for k, mask in enumerate(_place_tumors(rng, brain_soft > 0.5, _n_tumors(rng, spec)), start=1):
        label[mask] = k
        _paint_tumor(rng, img, brain_soft, mask, d)

    # Acquisition: smooth multiplicative bias field, Rician noise on the scanner's matrix, then the
    # upsampling to the export size that Roboflow applied (so the JPEGs are as smooth, and as
    # small, as the real ones: noise added at 640 px made files 3x larger and decoding 2x slower).
    bias = np.exp((0.05 + 0.35 * d) * rng.standard_normal((3, 3))).astype(np.float32)
    img *= cv2.resize(bias, (size, size), interpolation=cv2.INTER_CUBIC)
    matrix = max(64, round(size * _ACQUISITION_FRACTION))
    img = cv2.resize(img, (matrix, matrix), interpolation=cv2.INTER_AREA)
    sigma = 0.012 + 0.06 * d
    n1, n2 = sigma * _fast_normal(rng, (2, matrix, matrix))
    img = np.sqrt((img + n1) ** 2 + n2 * n2)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)
    # Display window with its floor above the air's noise, as exported slices have black air.
    floor = 2.0 * sigma
    img = (img - floor) * (255.0 * rng.uniform(0.8, 1.0) / (1.0 - floor))
    return np.clip(img, 0, 255).astype(np.uint8), label


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """Flat COCO polygons [x1, y1, x2, y2, ...] for every external contour piece of a mask.

    COCO coordinates are continuous (pixel c spans [c, c+1)). cv2 traces through the centres of
    boundary pixels, which would cut half a pixel off the outline; tracing a 2x upsampled mask
    puts the vertices a quarter pixel inside the outer pixel edges instead, so filling the
    polygons by pixel centre (brainseg.data.masks.rasterize_polygons) gives the mask back.
    """
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return []
    top, left = int(ys.min()), int(xs.min())
    crop = mask[top:ys.max() + 1, left:xs.max() + 1].astype(np.uint8)
    up = np.pad(crop.repeat(2, axis=0).repeat(2, axis=1), 1)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    offset = np.array([left, top], dtype=np.float64)
    return [np.round((c.reshape(-1, 2) - 1 + 0.5) / 2 + offset, 2).reshape(-1).tolist()
            for c in contours if len(c) >= 3]


def _encode_jpeg(image: np.ndarray) -> bytes:
    # Grayscale MRI saved as 3-channel RGB JPEG, like the Roboflow export.
    ok, buf = cv2.imencode(".jpg", cv2.merge([image, image, image]), [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _split_key(split: str) -> int:
    return zlib.crc32(split.encode())


def _source_numbers(seed: int, split: str, count: int) -> list[int]:
    """Unique-across-splits source ids that do not depend on the split's count."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _split_key(split), 1]))
    mult = int(rng.integers(1, _SOURCE_MODULUS))
    shift = int(rng.integers(0, _SOURCE_MODULUS))
    offset = SPLIT_NAMES.index(split)
    return [len(SPLIT_NAMES) * ((mult * i + shift) % _SOURCE_MODULUS) + offset + 1 for i in range(count)]


def _annotation(image_id: int, mask: np.ndarray, category_id: int) -> dict:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return {
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
        "area": int(mask.sum()),
        "segmentation": mask_to_polygons(mask),
        "iscrowd": 0,
    }


def _render_split(
    split: str, count: int, spec: PhantomConfig, seed: int, progress: tqdm
) -> dict[str, bytes]:
    key = _split_key(split)
    images, annotations, members = [], [], {}
    for index, source in enumerate(_source_numbers(seed, split, count)):
        # Independent stream per (seed, split, index): other splits never shift.
        rng = np.random.default_rng(np.random.SeedSequence([seed, key, 0, index]))
        image, label = render_slice(rng, spec)
        jpeg = _encode_jpeg(image)
        file_name = f"{source}_jpg.rf.{hashlib.md5(jpeg).hexdigest()}.jpg"
        members[f"{split}/{file_name}"] = jpeg
        images.append(
            {
                "id": index,
                "license": 1,
                "file_name": file_name,
                "height": spec.image_size,
                "width": spec.image_size,
                "date_captured": _DATE,
            }
        )
        for k in range(1, int(label.max()) + 1):
            annotations.append(_annotation(index, label == k, int(rng.integers(1, 3))))
        progress.update()
    # Shuffled so consumers must group by image_id, as with the real export.
    order = np.random.default_rng(np.random.SeedSequence([seed, key, 2])).permutation(len(annotations))
    annotations = [{"id": ann_id, **annotations[i]} for ann_id, i in enumerate(order)]
    coco = {
        "info": {
            "year": "2023",
            "version": "1",
            "description": "Synthetic brain MRI phantom in the layout of the Roboflow COCO export",
            "contributor": "brainseg",
            "url": "",
            "date_created": _DATE,
        },
        "licenses": [{"id": 1, "url": "https://creativecommons.org/licenses/by/4.0/", "name": "CC BY 4.0"}],
        "categories": CATEGORIES,
        "images": images,
        "annotations": annotations,
    }
    members[f"{split}/{COCO_FILE}"] = json.dumps(coco).encode()
    return members


def write_phantom_archive(path: Path, spec: PhantomConfig, seed: int) -> None:
    """Write the zip of spec.train/valid/test slices atomically, with a progress bar."""
    members: dict[str, bytes] = {}
    counts = {split: getattr(spec, split) for split in SPLIT_NAMES}
    with tqdm(total=sum(counts.values()), desc="phantom", unit="img") as progress:
        for split in SPLIT_NAMES:
            members.update(_render_split(split, counts[split], spec, seed, progress))

    with atomic_output(path) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            # JPEGs are already compressed; deflating them only costs time.
            info.compress_type = zipfile.ZIP_STORED if name.endswith(".jpg") else zipfile.ZIP_DEFLATED
            zf.writestr(info, members[name], compresslevel=6)
