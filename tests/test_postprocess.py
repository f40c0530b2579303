import numpy as np

from brainseg.evaluate import tune_postprocessing
from brainseg.postprocess import binarize, remove_small_components


def test_small_components_are_removed_and_large_kept():
    mask = np.zeros((20, 20), np.uint8)
    mask[2:8, 2:8] = 1  # 36 px
    mask[15, 15] = mask[15, 16] = 1  # 2 px
    mask[18, 2] = 1  # 1 px, diagonal neighbour of nothing
    out = remove_small_components(mask, 3)
    assert out.sum() == 36 and out[2:8, 2:8].all()
    assert np.array_equal(remove_small_components(mask, 0), mask)
    diagonal = np.eye(4, dtype=np.uint8)  # 8-connected: one component of 4 px
    assert remove_small_components(diagonal, 4).sum() == 4


def test_binarize_batch_matches_single():
    rng = np.random.default_rng(0)
    probs = rng.random((3, 16, 16))
    batch = binarize(probs, 0.8, 3)
    assert all(np.array_equal(batch[i], binarize(probs[i], 0.8, 3)) for i in range(3))


def test_tuning_picks_component_filter_that_removes_specks_and_prefers_no_tta():
    truth = np.zeros((4, 32, 32), np.uint8)
    truth[:2, 8:20, 8:20] = 1  # two slices with a tumor, two tumor-free
    probs = truth * 0.9
    probs[2:, 3, 3] = 0.9  # a one-pixel false positive on each tumor-free slice
    chosen = tune_postprocessing({False: probs, True: probs.copy()}, truth, (0, 4))
    assert chosen["min_component_px"] == 4 and chosen["tta"] is False
    assert chosen["val_dice_mean"] == 1.0
    assert chosen["threshold"] == 0.5  # every threshold up to 0.9 ties; the nearest 0.5 wins
