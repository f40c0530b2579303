import math

import numpy as np

from brainseg.lesions import hausdorff95, tumors_found


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
