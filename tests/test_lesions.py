import math

import numpy as np
import pytest

from brainseg.lesions import bounding_box, box_agreement, hausdorff95, tumors_found


def square(size, top, left, side):
    mask = np.zeros((size, size), np.uint8)
    mask[top:top + side, left:left + side] = 1
    return mask


def test_hd95_identical_masks_is_zero_and_empty_is_undefined():
    m = square(32, 5, 5, 10)
    assert hausdorff95(m, m) == 0.0
    assert math.isnan(hausdorff95(np.zeros_like(m), m))
    assert math.isnan(hausdorff95(m, np.zeros_like(m)))


def test_hd95_of_a_shifted_square_is_the_shift():
    truth = square(64, 10, 10, 20)
    pred = square(64, 10, 13, 20)  # shifted right by 3 px
    assert hausdorff95(pred, truth) == 3.0


def test_hd95_pools_both_directions():
    truth = square(64, 10, 10, 20)
    pred = truth.copy()
    pred[50, 50] = 1  # one far false-positive pixel: 1 of ~77 boundary pixels, below the 95th pct
    assert hausdorff95(pred, truth) == 0.0
    pred[45:55, 45:55] = 1  # a whole far blob moves the 95th percentile
    assert hausdorff95(pred, truth) > 10


def test_tumor_detection_counts_components():
    truth = square(40, 2, 2, 5) | square(40, 20, 20, 8)
    pred = square(40, 22, 22, 2)  # touches the second tumor only
    assert tumors_found(pred, truth) == (1, 2)
    assert tumors_found(truth, truth) == (2, 2)
    assert tumors_found(pred, np.zeros_like(truth)) == (0, 0)


def test_bounding_box_is_half_open_and_none_when_empty():
    mask = np.zeros((10, 12), np.uint8)
    mask[2:5, 3:9] = 1
    mask[7, 10] = 1
    assert bounding_box(mask) == (3, 2, 11, 8)
    assert bounding_box(np.zeros((4, 4))) is None


def test_box_agreement_on_known_rectangles():
    truth = np.zeros((20, 20), np.uint8)
    truth[0:10, 0:10] = 1  # a 10x10 label box
    pred = np.zeros_like(truth)
    pred[5:15, 0:10] = 1  # shifted down by half: overlap 50, union 150
    dice, iou, hit = box_agreement(pred, truth)
    assert dice == pytest.approx(0.5) and iou == pytest.approx(1 / 3)
    assert hit == 1.0  # centre (5, 10) lies on the label box's lower edge
    ring = np.zeros_like(truth)
    ring[0:10, 0:10] = 1
    ring[2:8, 2:8] = 0  # a hollow prediction has the same box as the solid label
    assert box_agreement(ring, truth) == (1.0, 1.0, 1.0)
    far = np.zeros_like(truth)
    far[15:20, 15:20] = 1
    assert box_agreement(far, truth) == (0.0, 0.0, 0.0)


def test_box_agreement_empty_cases():
    empty, truth = np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)
    dice, iou, hit = box_agreement(empty, truth)
    assert (dice, iou) == (1.0, 1.0) and np.isnan(hit)
    truth[2:4, 2:4] = 1
    assert box_agreement(empty, truth) == (0.0, 0.0, 0.0)  # a missed tumor is a miss
    dice, iou, hit = box_agreement(truth, np.zeros_like(truth))  # a false alarm on a tumor-free slice
    assert (dice, iou) == (0.0, 0.0) and np.isnan(hit)
