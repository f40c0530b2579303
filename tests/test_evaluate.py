"""Evaluation at the original image size, on hand-made masks with known answers."""

import math

import numpy as np
import pytest

from brainseg.evaluate import (SWEEP, original_size_sweep, original_size_table, summarize_original_size,
                               tune_postprocessing)
from brainseg.inference import PostProcess


def _truth(size: int, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    truth = np.zeros((size, size), np.uint8)
    truth[y0:y1, x0:x1] = 1
    return truth


def test_prediction_is_judged_at_the_original_size():
    # A 16x16 prediction of a square covering rows/cols 4..11 is the 64x64 square 16..47 at 4x.
    prob = np.zeros((1, 16, 16), np.float32)
    prob[0, 4:12, 4:12] = 1.0
    truth = _truth(64, (16, 16, 48, 48))
    table = original_size_table(prob, [truth])
    row = table.iloc[0]
    assert row.tp == truth.sum() - row.fn and row.dice > 0.97
    assert row.box_dice > 0.97 and row.box_hit == 1.0 and row.tumors_found == 1
    assert row.hd95_px <= 2.0  # bilinear edges move by at most a pixel or two


def test_summary_counts_misses_false_alarms_and_box_hits():
    empty = np.zeros((16, 16), np.float32)
    found = np.zeros((16, 16), np.float32)
    found[2:6, 2:6] = 1.0
    probs = np.stack([found, empty, found])  # hit, miss, false alarm on a tumor-free slice
    truths = [_truth(32, (4, 4, 12, 12)), _truth(32, (20, 20, 28, 28)), np.zeros((32, 32), np.uint8)]
    s = summarize_original_size(original_size_table(probs, truths))
    assert s["tumors"] == 2 and s["tumor_sensitivity"] == 0.5
    assert s["localisation_hit_rate"] == 0.5  # the tumor-free slice has no hit to score
    assert s["tumor_free_fpr"] == 1.0
    assert s["box_dice_mean"] == pytest.approx((1.0 + 0.0 + 0.0) / 3, abs=0.02)
    assert math.isclose(s["hd95_px_median"], s["hd95_px_mean"])  # one slice with both masks


def test_small_components_are_dropped_before_upsampling():
    prob = np.zeros((1, 16, 16), np.float32)
    prob[0, 1, 1] = 0.9  # a one-pixel speck
    table = original_size_table(prob, [np.zeros((64, 64), np.uint8)], PostProcess(min_component_px=2))
    assert table.iloc[0].fp == 0 and table.iloc[0].dice == 1.0


def test_threshold_sweep_at_original_size():
    rng = np.random.default_rng(0)
    small_truth = (rng.random((4, 16, 16)) > 0.7).astype(np.uint8)
    probs = np.clip(small_truth * 0.6 + rng.random(small_truth.shape) * 0.5, 0, 1).astype(np.float32)
    truths = [np.kron(t, np.ones((2, 2), np.uint8)) for t in small_truth]  # originals at 32x32
    sweep = original_size_sweep(probs, truths, np.array([0.1, 0.5, 0.9]))
    assert list(sweep.threshold) == [0.1, 0.5, 0.9]
    assert sweep.recall.is_monotonic_decreasing
    assert sweep.precision.iloc[1] > sweep.precision.iloc[0]


def test_a_probability_exactly_at_a_swept_threshold_is_tumor_when_tuned_tested_and_predicted():
    assert float(np.float32(0.7)) < 0.7  # compared in float64, a float32 0.7 would fall below the threshold 0.7
    probs = np.zeros((1, 8, 8), np.float32)
    probs[0, 2:6, 2:6] = 0.7
    truth = (probs > 0).astype(np.uint8)
    chosen = tune_postprocessing({False: probs}, truth, (0,))
    assert chosen["val_dice_mean"] == 1.0 and chosen["threshold"] == 0.5  # 0.55 ... 0.7 tie with 0.5
    sweep = original_size_sweep(probs, [truth[0]], SWEEP).set_index("threshold")
    assert sweep.loc[0.7, "dice_mean"] == 1.0 and sweep.loc[0.75, "dice_mean"] == 0.0
    assert original_size_table(probs, [truth[0]], PostProcess(threshold=0.7)).dice[0] == 1.0
