"""Segmentation metrics on binary masks (pure numpy).

Conventions (also stated in the README):
- per-image Dice = 2|P∩T| / (|P|+|T|), IoU = |P∩T| / |P∪T|; both are 1 when P and T are
  both empty and 0 when exactly one is empty. Reported as the mean over images.
- per-image precision is averaged over images with a non-empty prediction, per-image recall over
  images with a non-empty truth (elsewhere they are undefined).
- global (micro) Dice/IoU/precision/recall pool the pixel counts of the whole split first.
- false-positive rate on tumor-free slices: the share of slices without tumor where any pixel
  is predicted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def confusion_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image true-positive, false-positive and false-negative pixel counts of N x H x W masks."""
    pred = pred.astype(bool).reshape(len(pred), -1)
    truth = truth.astype(bool).reshape(len(truth), -1)
    tp = np.count_nonzero(pred & truth, axis=1)
    fp = np.count_nonzero(pred & ~truth, axis=1)
    fn = np.count_nonzero(~pred & truth, axis=1)
    return tp, fp, fn


def _ratio(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, empty, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def dice_scores(tp, fp, fn) -> np.ndarray:
    return _ratio(2 * np.asarray(tp), 2 * np.asarray(tp) + fp + fn, empty=1.0)


def iou_scores(tp, fp, fn) -> np.ndarray:
    return _ratio(tp, np.asarray(tp) + fp + fn, empty=1.0)


def per_image_table(pred: np.ndarray, truth: np.ndarray) -> pd.DataFrame:
    tp, fp, fn = confusion_counts(pred, truth)
    return pd.DataFrame({"tp": tp, "fp": fp, "fn": fn, "dice": dice_scores(tp, fp, fn), "iou": iou_scores(tp, fp, fn)})


def summarize(table: pd.DataFrame) -> dict[str, float]:
    """Flat metrics from a per-image table with tp/fp/fn columns."""
    tp, fp, fn = (table[c].to_numpy() for c in ("tp", "fp", "fn"))
    predicted, present = tp + fp > 0, tp + fn > 0
    TP, FP, FN = tp.sum(), fp.sum(), fn.sum()
    tumor_free = ~present
    return {
        "dice_mean": float(dice_scores(tp, fp, fn).mean()),
        "iou_mean": float(iou_scores(tp, fp, fn).mean()),
        "precision_mean": float(_ratio(tp[predicted], (tp + fp)[predicted], 0.0).mean()) if predicted.any() else 0.0,
        "recall_mean": float(_ratio(tp[present], (tp + fn)[present], 0.0).mean()) if present.any() else 0.0,
        "dice_global": float(dice_scores(TP, FP, FN)),
        "iou_global": float(iou_scores(TP, FP, FN)),
        "precision_global": float(_ratio(TP, TP + FP, 0.0)),
        "recall_global": float(_ratio(TP, TP + FN, 0.0)),
        "tumor_free_fpr": float(predicted[tumor_free].mean()) if tumor_free.any() else 0.0,
        "images": int(len(table)),
        "tumor_free_images": int(tumor_free.sum()),
    }


def bootstrap_means(values, seed: int, resamples: int = 10_000) -> np.ndarray:
    """Means of `resamples` seeded resamples (with replacement) of per-image `values`."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    return np.concatenate([values[rng.integers(0, len(values), size=(min(1000, resamples - done), len(values)))]
                           .mean(axis=1) for done in range(0, resamples, 1000)])  # blocks bound the memory


def bootstrap_ci(values, seed: int, level: float = 0.95, resamples: int = 10_000) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of per-image `values`, seeded.

    Resamples images with replacement: it says how much the mean would move on another test set
    of the same size from the same population (not across training runs: that needs seeds).
    """
    if len(values) == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(bootstrap_means(values, seed, resamples), [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
