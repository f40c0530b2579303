"""Layout detection (COCO splits, one COCO file, image/mask pairs), COCO edge cases, bad files, audit."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from brainseg.data.preprocess import BadImageError, load_sample, preprocess
from brainseg.data.index import read_index
from brainseg.imaging import jpeg_problem, tiff_pages, to_uint8
from brainseg.data.layout import LayoutError, detect_layout, read_layout
from brainseg.data.masks import decode_rle, rle_counts
from brainseg.data.split import SplitError, predefined_split, random_group_split

CATEGORIES = [{"id": 0, "name": "Tumor", "supercategory": "none"},
              {"id": 1, "name": "0", "supercategory": "Tumor"}, {"id": 2, "name": "1", "supercategory": "Tumor"}]


def _box(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def write_coco(path: Path, image_dir: Path, images: dict[str, list[dict]], size=(40, 50), categories=CATEGORIES):
    """images: file name -> annotations (without ids); images are written as gray PNGs."""
    h, w = size
    entries, annotations = [], []
    for i, (name, anns) in enumerate(images.items()):
        (image_dir / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(image_dir / name), np.full((h, w), 50 + i, np.uint8))
        entries.append({"id": i, "file_name": name, "height": h, "width": w})
        annotations += [{"id": len(annotations) + k, "image_id": i, **a} for k, a in enumerate(anns)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": entries, "annotations": annotations, "categories": categories}))


def poly(*boxes, category=1):
    return {"category_id": category, "segmentation": [_box(*b) for b in boxes]}


def pixels(processed: Path) -> dict[str, int]:
    index = read_index(processed)
    return dict(zip(index.file, index.tumor_pixels))


def test_single_coco_file_with_image_folder_is_all_train(tmp_path):
    names = {f"p{i}/s{i}.png": [poly((0, 0, 4, 5))] for i in range(6)}
    write_coco(tmp_path / "ds/annotations/instances.json", tmp_path / "ds/images", names)
    assert detect_layout(tmp_path) == (tmp_path / "ds", "coco")
    audit = preprocess(tmp_path, tmp_path / "out", 32)
    index = read_index(tmp_path / "out")
    assert audit["images_train"] == 6 and set(index.split) == {"train"}
    assert set(pixels(tmp_path / "out").values()) == {20}
    with pytest.raises(SplitError, match="random"):
        predefined_split(index)
    assert sum(map(len, random_group_split(index, {"train": 0.5, "val": 0.25, "test": 0.25}, 0).values())) == 6


def test_coco_file_beside_its_images(tmp_path):
    write_coco(tmp_path / "labels.json", tmp_path, {"a.png": [poly((1, 1, 3, 3))], "b.png": []})
    samples, stats = read_layout(tmp_path)
    assert stats.layout == "coco" and [s.file for s in samples] == [tmp_path / "a.png", tmp_path / "b.png"]


def _pairs(tmp_path: Path, mask_value: int, mask_dtype=np.uint8, rgb=False) -> None:
    for patient in ("P1", "P2"):
        for k in range(2):
            image = (np.arange(30 * 40).reshape(30, 40) % 200).astype(np.uint8)
            mask = np.zeros((30, 40), mask_dtype)
            mask[5:15, 10:30] = mask_value  # 200 pixels
            if rgb:
                mask = np.dstack([np.zeros_like(mask), mask, np.zeros_like(mask)])
            for folder, array, ext in (("images", image, ".jpg"), ("masks", mask, ".png")):
                (tmp_path / folder / patient).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(tmp_path / folder / patient / f"{k}{ext}"), array)


@pytest.mark.parametrize("value,dtype,rgb", [(255, np.uint8, False), (1, np.uint8, False),
                                             (65535, np.uint16, False), (255, np.uint8, True)])
def test_images_and_masks_folders(tmp_path, value, dtype, rgb):
    _pairs(tmp_path, value, dtype, rgb)
    audit = preprocess(tmp_path, tmp_path / "out", 32)
    index = read_index(tmp_path / "out")
    assert list(index.file) == ["P1/0.jpg", "P1/1.jpg", "P2/0.jpg", "P2/1.jpg"]
    assert list(index.group) == ["P1", "P1", "P2", "P2"] and set(index.tumor_pixels) == {200}
    assert (index.height == 30).all() and (index.width == 40).all()
    assert audit["groups_duplicated"] == 2 and audit["groups_cross_split"] == 0


def test_lgg_style_mask_beside_image_with_16_bit_tiff(tmp_path):
    root = tmp_path / "kaggle_3m"
    for patient in ("TCGA_A", "TCGA_B"):
        (root / patient).mkdir(parents=True)
        image = np.zeros((32, 32), np.uint16)
        image[:, 16:] = 1000  # a 16-bit slice using only a few thousand levels
        mask = np.zeros((32, 32), np.uint8)
        mask[0:8, 0:4] = 255
        cv2.imwrite(str(root / patient / f"{patient}_1.tif"), image)
        cv2.imwrite(str(root / patient / f"{patient}_1_mask.tif"), mask)
    (root / "data.csv").write_text("x")
    preprocess(tmp_path, tmp_path / "out", 32)
    index = read_index(tmp_path / "out")
    assert list(index.group) == ["TCGA_A", "TCGA_B"] and set(index.tumor_pixels) == {32}
    images = np.load(tmp_path / "out/images.npy")
    assert images[0, 0, 0] == 0 and images[0, 0, 31] == 255  # scaled by the slice's own max


def test_flat_pairs_group_by_stem_and_missing_mask_is_named(tmp_path):
    for name in ("a", "b"):
        cv2.imwrite(str(tmp_path / f"{name}.png"), np.zeros((8, 8), np.uint8))
        cv2.imwrite(str(tmp_path / f"{name}_mask.png"), np.ones((8, 8), np.uint8))
    samples, _ = read_layout(tmp_path)
    assert [s.group for s in samples] == ["a", "b"] and samples[0].mask_file == tmp_path / "a_mask.png"
    cv2.imwrite(str(tmp_path / "c.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(LayoutError, match=r"1 image\(s\) have no mask.*c\.png"):
        read_layout(tmp_path)
    with pytest.raises(LayoutError, match="data.categories"):
        read_layout(tmp_path, ["0"])


def test_ambiguous_layout_lists_both(tmp_path):
    write_coco(tmp_path / "train/_annotations.coco.json", tmp_path / "train", {"a.png": []})
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(LayoutError, match="ambiguous.*coco-splits.*pairs"):
        detect_layout(tmp_path)


def test_to_uint8_scales_by_own_max():
    assert to_uint8(np.array([[0, 500, 1000]], np.uint16)).tolist() == [[0, 128, 255]]
    assert to_uint8(np.zeros((2, 2), np.uint16)).max() == 0


def test_rle_compressed_and_uncompressed_column_major(tmp_path):
    # 10 x 12 mask; runs go down columns. The string is these counts encoded as pycocotools does
    # (5-bit chunks + 48, deltas from the fourth count on: 20-35 = -15 -> "A", 50-20 = 30 -> "n0").
    counts = [5, 35, 3, 20, 7, 50]
    assert rle_counts("5S13A4n0") == counts
    mask = decode_rle(counts, 10, 12)
    assert mask.sum() == 105 and mask[:5, 0].sum() == 0 and mask[5:, 0].all() and mask[:, 1:4].all()
    assert mask[:3, 4].sum() == 0 and mask[3:, 4].all() and mask[:3, 6].all() and mask[3:, 6].sum() == 0

    rle = [{"category_id": 1, "iscrowd": 1, "segmentation": {"size": [10, 12], "counts": c}}
           for c in (counts, "5S13A4n0")]
    write_coco(tmp_path / "ds/train/_annotations.coco.json", tmp_path / "ds/train",
               {"list.png": rle[:1], "string.png": rle[1:], "both.png": [rle[0], poly((0, 0, 1, 10))]},
               size=(10, 12))
    for split in ("valid", "test"):
        write_coco(tmp_path / f"ds/{split}/_annotations.coco.json", tmp_path / f"ds/{split}", {})
    audit = preprocess(tmp_path / "ds", tmp_path / "out", 32)
    assert pixels(tmp_path / "out") == {"list.png": 105, "string.png": 105, "both.png": 110}
    assert audit["rle_annotations"] == 3 and audit["annotations"] == 4


def test_bad_rle_is_named(tmp_path):
    bad = {"category_id": 1, "segmentation": {"size": [10, 12], "counts": [5, 5]}}
    write_coco(tmp_path / "c.json", tmp_path, {"a.png": [bad]}, size=(10, 12))
    with pytest.raises(LayoutError, match="c.json.*sum to 10"):
        read_layout(tmp_path)


def test_polygon_outside_image_is_clipped_and_declared_size_mismatch_scales(tmp_path):
    write_coco(tmp_path / "c.json", tmp_path, {"a.png": [poly((-5, -5, 10, 10))], "b.png": [poly((40, 30, 60, 50))]})
    preprocess(tmp_path, tmp_path / "out", 32)
    assert pixels(tmp_path / "out") == {"a.png": 100, "b.png": 100}
    # The file declares twice the real size: coordinates are scaled to the pixels.
    coco = json.loads((tmp_path / "c.json").read_text())
    for img in coco["images"]:
        img["height"], img["width"] = 80, 100
    (tmp_path / "c.json").write_text(json.dumps(coco))
    preprocess(tmp_path, tmp_path / "out", 32)
    assert pixels(tmp_path / "out") == {"a.png": 25, "b.png": 100}


def test_category_selection(tmp_path):
    both = [poly((0, 0, 2, 2), category=1), poly((5, 5, 8, 8), category=2)]
    write_coco(tmp_path / "c.json", tmp_path, {"a.png": both})
    preprocess(tmp_path, tmp_path / "out", 32)
    assert pixels(tmp_path / "out") == {"a.png": 13}
    preprocess(tmp_path, tmp_path / "out", 32, categories=["1"])
    assert pixels(tmp_path / "out") == {"a.png": 9}
    with pytest.raises(LayoutError, match=r"\['glioma'\].*available: \['0', '1', 'Tumor'\]"):
        read_layout(tmp_path, ["glioma"])


def test_bad_images_error_names_all_or_skip_counts(tmp_path):
    write_coco(tmp_path / "c.json", tmp_path, {"ok.png": [], "broken.png": [], "gone.png": []})
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "gone.png").unlink()
    with pytest.raises(BadImageError,
                       match=r"broken\.png \(unreadable or unsupported image file\).*gone\.png \(missing\)"):
        preprocess(tmp_path, tmp_path / "out", 32)
    assert not (tmp_path / "out").exists()
    audit = preprocess(tmp_path, tmp_path / "out", 32, on_bad_image="skip")
    assert audit["images_skipped"] == 2 and audit["images"] == 1
    assert list(read_index(tmp_path / "out").file) == ["ok.png"]


def _ifd_chain(order: str, pages: int, big: bool = False) -> bytes:
    """TIFF bytes holding only a header and `pages` empty image file directories."""
    width, count, entry = (8, 8, 20) if big else (4, 2, 12)
    marker = b"II" if order == "little" else b"MM"
    header = marker + (43).to_bytes(2, order) + (8).to_bytes(2, order) + bytes(2) if big \
        else marker + (42).to_bytes(2, order)
    first = len(header) + width
    ifd = count + entry + width  # one entry each
    data = header + first.to_bytes(width, order)
    for k in range(pages):
        following = first + (k + 1) * ifd if k + 1 < pages else 0
        data += (1).to_bytes(count, order) + bytes(entry) + following.to_bytes(width, order)
    return data


@pytest.mark.parametrize("order", ["little", "big"])
@pytest.mark.parametrize("big", [False, True], ids=["classic", "bigtiff"])
def test_tiff_pages_follow_the_directory_chain(order, big):
    assert [tiff_pages(_ifd_chain(order, n, big)) for n in (1, 2, 3)] == [1, 2, 2]  # counted up to 2
    assert tiff_pages(_ifd_chain(order, 3, big)[:-30]) >= 1  # a cut chain stops, never raises
    assert tiff_pages(b"\x89PNG\r\n") == 0


def _jpeg(image: np.ndarray, *options: int) -> bytes:
    return cv2.imencode(".jpg", image, list(options))[1].tobytes()


def test_complete_jpegs_pass_in_every_encoding():
    image = np.random.default_rng(0).integers(0, 255, (64, 80), dtype=np.uint8)
    for options in ([], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], [cv2.IMWRITE_JPEG_RST_INTERVAL, 2],
                    [cv2.IMWRITE_JPEG_QUALITY, 100]):
        data = _jpeg(image, *options)
        assert jpeg_problem(data) is None, options
        assert jpeg_problem(data + b"\x00" * 7) is None  # padding after the end marker is harmless


def test_truncated_and_garbage_jpegs_are_named_and_never_half_grey(tmp_path):
    """libjpeg decodes these with a warning only and fills the rest with grey; preprocess must refuse them."""
    image = np.random.default_rng(1).integers(0, 255, (40, 50), dtype=np.uint8)
    data = _jpeg(image)
    for cut in (len(data) - 2, len(data) // 2, 200):
        assert "truncated" in jpeg_problem(data[:cut])
    garbage = data[:len(data) // 2] + np.random.default_rng(2).integers(0, 256, len(data) // 2, np.uint8).tobytes()
    assert jpeg_problem(garbage + b"\xff\xd9") is not None

    write_coco(tmp_path / "c.json", tmp_path, {"ok.jpg": [], "cut.jpg": []})
    (tmp_path / "ok.jpg").write_bytes(data)
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 2])
    assert cv2.imread(str(tmp_path / "cut.jpg"), cv2.IMREAD_GRAYSCALE) is not None  # what libjpeg alone lets through
    with pytest.raises(BadImageError, match=r"cut\.jpg \(the JPEG data ends before the end of the image"):
        preprocess(tmp_path, tmp_path / "out", 32)
    assert not (tmp_path / "out").exists()
    audit = preprocess(tmp_path, tmp_path / "out", 32, on_bad_image="skip")
    assert audit["images_skipped"] == 1 and list(read_index(tmp_path / "out").file) == ["ok.jpg"]


def test_audit_groups_area_and_plot(tmp_path):
    splits = {"train": {"1_jpg.rf.aa.jpg": [poly((0, 0, 10, 20))], "1_jpg.rf.bb.jpg": [], "2_jpg.rf.cc.jpg": []},
              "valid": {"1_jpg.rf.dd.jpg": [poly((0, 0, 20, 20))]}, "test": {"3_jpg.rf.ee.jpg": []}}
    for split, images in splits.items():
        write_coco(tmp_path / split / "_annotations.coco.json", tmp_path / split, images)
    audit = preprocess(tmp_path, tmp_path / "out", 32, plot_path=tmp_path / "plots/tumor_area.png")
    assert audit["groups"] == 3 and audit["groups_duplicated"] == 1 and audit["groups_cross_split"] == 1
    assert audit["tumor_free_fraction"] == 0.6 and audit["tumor_area_fraction_max"] == 0.2
    assert audit["rectangle_fraction"] == 1.0 and audit["polygon_vertices_median"] == 4.0
    assert all(isinstance(v, (int, float)) for v in audit.values())
    assert cv2.imread(str(tmp_path / "plots/tumor_area.png")) is not None


def test_image_is_full_decode_then_area_resize(tmp_path):
    # The exported model documents exactly this preprocessing; training must see the same pixels.
    yy, xx = np.mgrid[0:256, 0:256]
    image = (128 + 100 * np.sin(xx / 9.0) * np.cos(yy / 13.0)).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    write_coco(tmp_path / "c.json", tmp_path, {}, size=(256, 256))
    coco = json.loads((tmp_path / "c.json").read_text())
    coco["images"] = [{"id": 0, "file_name": "a.jpg", "height": 256, "width": 256}]
    (tmp_path / "c.json").write_text(json.dumps(coco))
    (sample,), _ = read_layout(tmp_path)
    decoded = cv2.imread(str(tmp_path / "a.jpg"), cv2.IMREAD_GRAYSCALE)
    for size in (32, 64, 160):
        expected = cv2.resize(decoded, (size, size), interpolation=cv2.INTER_AREA)
        assert np.array_equal(load_sample(sample, size)[0], expected)
