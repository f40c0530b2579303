import cv2
import numpy as np
import pytest

from brainseg.data.masks import grabcut_pseudo_mask, inscribed_ellipses, polygon_to_points, rasterize_polygons
from brainseg.data.preprocess import pseudo_mask_label_share
from brainseg.lesions import component_boxes


def box(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=float)


def test_integer_box_fills_exactly_its_pixels():
    mask = rasterize_polygons([box(10, 20, 30, 25)], 64, 64)
    ys, xs = np.nonzero(mask)
    assert mask.sum() == 20 * 5
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10, 29, 20, 24)


def test_fractional_box_uses_pixel_centres():
    # Centres 10.5..29.5 lie in [10.3, 30.2); rows with centre in [20.7, 25.1) are 21..24.
    mask = rasterize_polygons([box(10.3, 20.7, 30.2, 25.1)], 64, 64)
    ys, xs = np.nonzero(mask)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10, 29, 21, 24)


def test_polygon_outside_image_is_clipped():
    mask = rasterize_polygons([box(-10, -5, 30, 80)], 64, 64)
    assert mask.shape == (64, 64)
    assert mask.sum() == 30 * 64


def test_concave_polygon_even_odd():
    u = np.array([[0, 0], [10, 0], [10, 10], [7, 10], [7, 3], [3, 3], [3, 10], [0, 10]], dtype=float)
    mask = rasterize_polygons([u], 12, 12)
    assert mask.sum() == 100 - 4 * 7
    assert mask[5, 5] == 0 and mask[5, 1] == 1 and mask[1, 5] == 1


def test_circle_area_close_to_analytic():
    t = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    circle = np.stack([320 + 100 * np.cos(t), 320 + 100 * np.sin(t)], axis=1)
    area = rasterize_polygons([circle], 640, 640).sum()
    assert abs(area - np.pi * 100**2) / (np.pi * 100**2) < 0.005


def test_several_polygons_union_and_empty():
    mask = rasterize_polygons([box(0, 0, 4, 4), box(2, 2, 6, 6)], 8, 8)
    assert mask.sum() == 16 + 16 - 4
    assert rasterize_polygons([], 8, 8).sum() == 0


@pytest.mark.parametrize("flat,ok", [([1, 2, 3, 4, 5, 6], True), ([1, 2, 3, 4], False), ([1, 2, 3], False)])
def test_polygon_to_points_rejects_degenerate(flat, ok):
    assert (polygon_to_points(flat) is not None) == ok


def centre_rule_reference(points, height, width):
    """Brute force: a ray from each pixel centre to the right crosses the outline an odd number of times."""
    yc, xc = np.mgrid[0:height, 0:width] + 0.5
    x0, y0 = points[:, 0], points[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    yc, xc = yc[..., None], xc[..., None]
    crosses = (y0 <= yc) != (y1 <= yc)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = x0 + (yc - y0) * (x1 - x0) / (y1 - y0)
    return ((crosses & (x_at > xc)).sum(axis=-1) % 2).astype(np.uint8)


@pytest.mark.parametrize("seed", range(5))
def test_random_polygons_match_brute_force_centre_rule(seed):
    # Self-intersecting, partly outside, and (every other case) on integer and half-pixel vertices.
    rng = np.random.default_rng(seed)
    for case in range(200):
        height, width = rng.integers(4, 40, size=2)
        points = rng.uniform(-8, 48, size=(rng.integers(3, 16), 2))
        if case % 2:
            points = np.round(points * 2) / 2
        expected = centre_rule_reference(points, height, width)
        np.testing.assert_array_equal(rasterize_polygons([points], height, width), expected)


def test_inscribed_ellipse_of_a_box_touches_its_four_sides_at_pi_over_4_of_its_area():
    mask = np.zeros((64, 80), np.uint8)
    mask[10:30, 5:45] = 1  # 40 x 20
    mask[40:47, 60:63] = 1  # 3 x 7, a second box
    ellipses = inscribed_ellipses(mask)
    assert (component_boxes(ellipses) == mask).all()  # each ellipse spans its own box exactly
    assert not (ellipses & (1 - mask)).any()
    big = ellipses[:32].sum()
    assert big == pytest.approx(np.pi / 4 * 800, rel=0.02)
    assert (ellipses[10:30, 5:45] == ellipses[10:30, 5:45][::-1, ::-1]).all()  # centred: point-symmetric
    assert not inscribed_ellipses(np.zeros((8, 8), np.uint8)).any()
    batch = inscribed_ellipses(np.stack([mask, np.zeros_like(mask)]))
    assert batch.shape == (2, 64, 80) and (batch[0] == ellipses).all() and not batch[1].any()


def test_inscribed_ellipse_follows_a_rotated_box():
    """A box rotated by 30 degrees (as the affine augmentation turns it) gets the rotated ellipse: it
    stays inside the rotated box, but for the box's jagged pixel edge, at pi/4 of its area, while the
    ellipse of the box's axis-aligned bounding rectangle would spill far outside it."""
    box = np.zeros((64, 64), np.uint8)
    box[10:30, 5:45] = 1
    turn = cv2.getRotationMatrix2D((25, 20), 30, 1.0)
    rotated = cv2.warpAffine(box, turn, (64, 64), flags=cv2.INTER_NEAREST)
    ellipse = inscribed_ellipses(rotated)
    assert ellipse.sum() == pytest.approx(np.pi / 4 * 800, rel=0.03)
    assert (ellipse & (1 - rotated)).sum() < 0.03 * ellipse.sum()
    upright = inscribed_ellipses(component_boxes(rotated))
    assert (upright & (1 - rotated)).sum() > 0.15 * upright.sum()


def _slice_with_tumor(size: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A noisy dark slice with a bright elliptical tumor off the centre of a loose box around it:
    (image, tumor, box)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    tumor = ((xx - 90) ** 2 / 30 ** 2 + (yy - 110) ** 2 / 20 ** 2) <= 1
    image = rng.normal(60, 12, (size, size)) + 80 * tumor
    image = cv2.GaussianBlur(image, (0, 0), 1.5).clip(0, 255).astype(np.uint8)
    boxes = np.zeros((size, size), np.uint8)
    boxes[75:150, 50:140] = 1  # the tumor fills 0.29 of it
    return image, tumor.astype(np.uint8), boxes


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_grabcut_draws_the_tumor_inside_a_loose_box_where_the_ellipse_cannot():
    image, tumor, boxes = _slice_with_tumor()
    pseudo = grabcut_pseudo_mask(image, boxes)
    assert pseudo.dtype == np.uint8 and pseudo.shape == boxes.shape
    assert _dice(pseudo, tumor) > 0.85
    assert _dice(pseudo, tumor) > _dice(inscribed_ellipses(boxes), tumor) + 0.3
    assert not (pseudo & (1 - boxes)).any(), "outside every box is background"
    core = np.zeros_like(boxes)
    core[100:125, 80:110] = 1  # the box's central third
    assert (pseudo[inscribed_ellipses(core) > 0] == 1).all(), "the central core is always tumor"
    assert np.array_equal(pseudo, grabcut_pseudo_mask(image, boxes)), "deterministic"
    # At a coarser working size: the same kind of outline, returned at the image's size.
    coarse = grabcut_pseudo_mask(image, boxes, work_size=100)
    assert coarse.shape == boxes.shape and _dice(coarse, tumor) > 0.8


def test_grabcut_without_boxes_or_background():
    image, _, boxes = _slice_with_tumor(64)
    assert not grabcut_pseudo_mask(image, np.zeros_like(boxes)).any()
    # A box over the whole slice leaves GrabCut no background to model: the inscribed ellipse is kept.
    whole = np.ones_like(boxes)
    assert np.array_equal(grabcut_pseudo_mask(image, whole), inscribed_ellipses(whole))


def test_pseudo_mask_label_share_is_the_mean_kept_share_of_labelled_slices():
    masks = np.zeros((3, 4, 4), np.uint8)
    masks[0, :2, :2] = 1  # 4 label pixels, 1 kept
    masks[1] = 1  # 16 label pixels, 8 kept
    pseudo = np.zeros_like(masks)
    pseudo[0, 0, 0] = 1
    pseudo[0, 3, 3] = 1  # outside the label: not counted
    pseudo[1, :2] = 1
    pseudo[2, 0, 0] = 1  # an unlabelled slice does not count
    assert pseudo_mask_label_share(masks, pseudo) == pytest.approx((0.25 + 0.5) / 2)
    assert pseudo_mask_label_share(np.zeros_like(masks), pseudo) == 0.0
