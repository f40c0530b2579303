import numpy as np
import pytest

from brainseg.metrics import bootstrap_ci, dice_scores, iou_scores, per_image_table, summarize


def masks(*arrays):
    return np.stack([np.array(a, dtype=np.uint8) for a in arrays])


def test_known_overlap():
    truth = masks([[1, 1, 0, 0]])
    pred = masks([[1, 0, 1, 0]])
    table = per_image_table(pred, truth)
    assert (table.tp[0], table.fp[0], table.fn[0]) == (1, 1, 1)
    assert table.dice[0] == pytest.approx(0.5)
    assert table.iou[0] == pytest.approx(1 / 3)


def test_empty_conventions():
    # both empty -> 1; only truth empty -> 0; only prediction empty -> 0
    assert dice_scores(0, 0, 0) == 1.0 and iou_scores(0, 0, 0) == 1.0
    assert dice_scores(0, 5, 0) == 0.0 and iou_scores(0, 5, 0) == 0.0
    assert dice_scores(0, 0, 5) == 0.0


def test_summary_per_image_vs_global():
    truth = masks([1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0])
    pred = masks([1, 1, 1, 1], [0, 1, 0, 0], [0, 0, 0, 0])
    s = summarize(per_image_table(pred, truth))
    assert s["dice_mean"] == pytest.approx((1 + 0 + 0) / 3)
    # pooled: tp 4, fp 1, fn 1
    assert s["dice_global"] == pytest.approx(8 / 10)
    assert s["iou_global"] == pytest.approx(4 / 6)
    assert s["precision_global"] == pytest.approx(4 / 5)
    assert s["recall_global"] == pytest.approx(4 / 5)
    # precision over images with a prediction (1.0, 0.0); recall over images with tumor (1.0, 0.0)
    assert s["precision_mean"] == pytest.approx(0.5)
    assert s["recall_mean"] == pytest.approx(0.5)
    assert s["tumor_free_images"] == 1 and s["tumor_free_fpr"] == 1.0


def test_all_empty_split_is_perfect_for_empty_prediction():
    truth = np.zeros((3, 4, 4), np.uint8)
    s = summarize(per_image_table(truth, truth))
    assert s["dice_mean"] == 1.0 and s["tumor_free_fpr"] == 0.0
    assert s["recall_global"] == 0.0  # nothing to recall: reported as 0, not NaN


def test_bootstrap_interval_matches_the_normal_approximation():
    scores = np.random.default_rng(3).beta(4, 1.5, size=400)  # skewed, like per-image Dice
    low, high = bootstrap_ci(scores, seed=0)
    half_width = 1.96 * scores.std(ddof=1) / np.sqrt(len(scores))
    assert low < scores.mean() < high
    assert abs((high - low) / 2 - half_width) < 0.1 * half_width
    assert abs((low + high) / 2 - scores.mean()) < 0.2 * half_width


def test_bootstrap_interval_is_seeded_and_narrows_with_more_images():
    scores = np.random.default_rng(4).uniform(size=1000)
    assert bootstrap_ci(scores, seed=5) == bootstrap_ci(scores, seed=5)
    assert bootstrap_ci(scores, seed=5) != bootstrap_ci(scores, seed=6)
    wide, narrow = bootstrap_ci(scores[:100], seed=5), bootstrap_ci(scores, seed=5)
    assert narrow[1] - narrow[0] < 0.5 * (wide[1] - wide[0])
    assert np.allclose(bootstrap_ci([0.7, 0.7, 0.7], seed=0), 0.7)
    assert all(np.isnan(bootstrap_ci([], seed=0)))
