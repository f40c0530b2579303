"""Evaluate the best checkpoint on the test split, beside baselines, and draw the plots."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from brainseg.config import EvaluateConfig, Params
from brainseg.io import atomic_write_text
from brainseg.data.preprocess import original_masks
from brainseg.data.masks import inscribed_ellipses
from brainseg.data.dataset import ProcessedData
from brainseg.data.reference import reference_masks
from brainseg.lesions import box_agreement, component_boxes, hausdorff95, scored_boxes, tumors_found
from brainseg.metrics import bootstrap_ci, confusion_counts, dice_scores, iou_scores, per_image_table, summarize
from brainseg.model import initial_model, load_checkpoint, predict_probs
from brainseg.plots import curves_figure, overlay_grid
from brainseg.inference import PostProcess, binarize, mask_at_size, merge_flipped

CPU = torch.device("cpu")  # evaluation runs where users will run the exported model
# Python floats, as a threshold read from postprocess.json is: NumPy compares them in the maps' own float32,
# so validation, test and brainseg-predict agree on a value that lies exactly at a threshold.
SWEEP = tuple(round(0.05 * k, 2) for k in range(1, 20))
INTENSITY_SWEEP = tuple(round(0.1 * k, 1) for k in range(41))
# Facts of the test set, not of the model: kept out of metrics/test.json so experiments compare on scores.
TEST_SET_COUNTS = ("images", "tumor_free_images", "tumors")
# Scores against the reference set shown beside the primary ones (all of them are in the details).
REFERENCE_HEADLINE = ("dice_mean", "dice_global", "iou_mean", "precision_global", "recall_global", "hd95_px_median")


def standardize(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float32)
    mean = x.mean(axis=(1, 2), keepdims=True)
    std = x.std(axis=(1, 2), keepdims=True).clip(min=1e-3)
    return (x - mean) / std


def intensity_baseline(val: tuple[np.ndarray, np.ndarray], test_images: np.ndarray) -> tuple[float, np.ndarray]:
    """The classic non-learned segmenter: pixels brighter than t standard deviations above the
    slice mean are tumor; t is chosen on validation for best per-image Dice. Returns t and the
    test predictions."""
    z_val = standardize(val[0])
    scores = [summarize(per_image_table(z_val > t, val[1]))["dice_mean"] for t in INTENSITY_SWEEP]
    best_t = INTENSITY_SWEEP[int(np.argmax(scores))]
    return best_t, standardize(test_images) > best_t


def flip_tta_probs(probs_of, images: np.ndarray, plain: np.ndarray) -> np.ndarray:
    """`plain` (the slices' probabilities) merged with those `probs_of` gives their mirror images."""
    return merge_flipped(plain, probs_of(np.ascontiguousarray(images[:, :, ::-1])))


def tune_postprocessing(candidates: dict[bool, np.ndarray], truth: np.ndarray, min_sizes, max_counts=(0,),
                        box_labels: bool = False) -> dict:
    """Threshold, TTA on/off, minimum component size and most components kept with the best
    per-image mean Dice.

    `candidates` maps tta -> validation probabilities. With `box_labels` the masks are scored as
    boxes (`component_boxes`) against the label boxes: the threshold at which each tumor just
    spans its box wins, and no outline is needed. Ties go to the simpler choice: no TTA, the
    threshold nearest 0.5, the smallest size, every component kept (0), then the fewest.
    """
    as_labelled = component_boxes if box_labels else (lambda masks: masks)
    scored = []
    for tta, probs in candidates.items():
        for threshold in SWEEP:
            for min_pixels in sorted(set(min_sizes)):
                for max_count in sorted(set(max_counts)):
                    masks = as_labelled(binarize(probs, threshold, min_pixels, max_count))
                    dice = summarize(per_image_table(masks, truth))["dice_mean"]
                    scored.append((-round(dice, 9), tta, abs(threshold - 0.5), min_pixels, max_count > 0, max_count,
                                   threshold))
    neg_dice, tta, _, min_pixels, _, max_count, threshold = min(scored)
    return {"threshold": threshold, "tta": tta, "min_component_px": min_pixels, "max_components": max_count,
            "val_dice_mean": -neg_dice}


def original_size_table(probs: np.ndarray, truths: list[np.ndarray], post: PostProcess = PostProcess()) -> pd.DataFrame:
    """Per-image metrics of the masks brainseg-predict would write, at each image's original size
    (`mask_at_size`: components filtered at the model's size, resized, thresholded; TTA, if any, is
    already in `probs`)."""
    rows = []
    for prob, truth in zip(probs, truths):
        pred = mask_at_size(prob, truth.shape, post).astype(bool)
        tp, fp, fn = (int(c[0]) for c in confusion_counts(pred[None], truth[None]))
        found, tumors = tumors_found(pred, truth)
        box_dice, box_iou, box_hit = box_agreement(pred, truth)
        rows.append({"tp": tp, "fp": fp, "fn": fn, "hd95_px": hausdorff95(pred, truth), "tumors": tumors,
                     "tumors_found": found, "box_dice": box_dice, "box_iou": box_iou, "box_hit": box_hit})
    table = pd.DataFrame(rows)
    table.insert(3, "dice", dice_scores(table.tp, table.fp, table.fn))
    table.insert(4, "iou", iou_scores(table.tp, table.fp, table.fn))
    return table


def summarize_original_size(table: pd.DataFrame) -> dict:
    """Pixel metrics, HD95, tumor detection and box agreement from an `original_size_table`."""
    hd95 = table["hd95_px"].dropna()
    tumors = int(table["tumors"].sum())
    hits = table["box_hit"].dropna()
    return {
        **summarize(table),
        "hd95_px_mean": float(hd95.mean()) if len(hd95) else None,
        "hd95_px_median": float(hd95.median()) if len(hd95) else None,
        "tumors": tumors,
        "tumor_sensitivity": float(table["tumors_found"].sum() / tumors) if tumors else 0.0,
        "box_dice_mean": float(table["box_dice"].mean()),
        "box_iou_mean": float(table["box_iou"].mean()),
        "localisation_hit_rate": float(hits.mean()) if len(hits) else 0.0,
    }


def original_size_sweep(probs: np.ndarray, truths: list[np.ndarray], thresholds: Sequence[float]) -> pd.DataFrame:
    """Metrics at each probability threshold, at the original sizes: PR and Dice-vs-threshold data."""
    counts = np.zeros((len(thresholds), len(probs), 3), dtype=np.int64)
    for i, (prob, truth) in enumerate(zip(probs, truths)):
        full = cv2.resize(prob, (truth.shape[1], truth.shape[0]), interpolation=cv2.INTER_LINEAR)
        truth = truth.astype(bool)
        for j, t in enumerate(thresholds):
            counts[j, i] = [c[0] for c in confusion_counts((full >= t)[None], truth[None])]
    rows = []
    for t, per_image in zip(thresholds, counts):
        s = summarize(pd.DataFrame(per_image, columns=["tp", "fp", "fn"]))
        rows.append({"threshold": round(float(t), 4), "precision": s["precision_global"],
                     "recall": s["recall_global"], "dice_mean": s["dice_mean"], "dice_global": s["dice_global"]})
    return pd.DataFrame(rows)


def _rounded(metrics: dict) -> dict:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}


def _read_history(live_dir: Path) -> dict[str, pd.DataFrame]:
    """Training curves as dvclive wrote them in the train stage's declared output (one TSV per metric)."""
    base = live_dir / "plots" / "metrics"
    return {str(p.relative_to(base).with_suffix("")): pd.read_csv(p, sep="\t") for p in sorted(base.rglob("*.tsv"))}


def _overlay_panels(images, truths, preds, table: pd.DataFrame, files: list[str], n: int):
    order = table.sort_values(["dice", "file"], kind="stable").index.to_numpy()
    with_tumor = [i for i in order if truths[i].any()]
    picks = {
        "worst": list(order[:n]),
        "median": with_tumor[max(0, len(with_tumor) // 2 - n // 2):][:n],
        "best": with_tumor[-n:][::-1],
    }
    return [(label, [(images[i], truths[i], preds[i], f"{files[i][:18]} dice {table.dice[i]:.2f}")
                     for i in rows]) for label, rows in picks.items()]


def score_against_reference(probs: np.ndarray, truths: list[np.ndarray], reference: list[np.ndarray],
                            post: PostProcess, box_labels: bool = False,
                            pseudo_masks: np.ndarray | None = None) -> tuple[pd.DataFrame, dict]:
    """Per-image table and summary of the predictions against a second truth, and how far the
    labels themselves are from it (for box labels against outlines: the perfect-box bound; with
    `box_labels` also the ellipses inscribed in the boxes, the target of train.labels: ellipse; with
    `pseudo_masks`, preprocess's at the model's size, the target of train.labels: pseudo)."""
    table = original_size_table(probs, reference, post)
    scores = {"all": _rounded(summarize_original_size(table))}
    bounds = {"labels": truths}
    if box_labels:
        bounds["ellipses"] = [inscribed_ellipses(t) for t in truths]
    if pseudo_masks is not None:  # resized to each reference mask as predictions are
        bounds["pseudo_masks"] = pseudo_masks
    for name, masks in bounds.items():
        bound = original_size_table([m.astype(np.float32) for m in masks], reference)
        scores[f"{name}_vs_reference"] = _rounded(summarize_original_size(bound))
    return table, scores


def evaluate(params: Params, raw_dir: Path, processed_dir: Path, split_dir: Path, model_path: Path, live_dir: Path,
             postprocess_path: Path, metrics_path: Path, details_path: Path, plots_dir: Path,
             reference_dir: Path | None = None) -> dict:
    """Writes the post-processing chosen on validation to `postprocess_path` (export carries it into
    the model's description), the figures a person compares across experiments to `metrics_path`
    and the supporting figures (test-set counts, training-size and untuned scores, baselines) to
    `details_path`.

    With `reference_dir` (a second truth for the test images, see data/reference.py) the predictions
    are also scored against it: a `reference` block in both files and `ref_*` columns per image."""
    cfg = params.evaluate
    data = ProcessedData(processed_dir, split_dir)
    test_images, test_masks = data.subset("test")
    test_rows = data.index.loc[data.rows["test"]]
    model, _ = load_checkpoint(model_path)
    probs_of = functools.partial(predict_probs, model, device=CPU)

    # 1. Post-processing (threshold, flip TTA, component filter) is chosen on validation only.
    chosen = choose_postprocessing(probs_of, data, cfg, params.train.scored_as_boxes, params.train.box_span,
                                   pseudo=params.train.pseudo_labels)
    atomic_write_text(postprocess_path, json.dumps(chosen, indent=2) + "\n")
    post = PostProcess.from_dict(chosen)
    # 2. Test predictions, scored per image against the labels at each image's original size.
    plain_probs = probs_of(test_images)
    probs = flip_tta_probs(probs_of, test_images, plain_probs) if post.tta else plain_probs
    preds = binarize(probs, post.threshold, post.min_component_px, post.max_components)  # at the model's resolution
    truths = original_masks(raw_dir, test_rows, params.data.categories)
    table = original_size_table(probs, truths, post)
    table.insert(0, "file", test_rows["file"].tolist())
    table["tumor_pixels"] = [int(t.sum()) for t in truths]
    # 3. The same predictions against the reference set, when there is one.
    reference = None
    if reference_dir is not None:
        pseudo = data.subset("test", pseudo=True)[1] if data.pseudo_masks is not None else None
        reference = _score_reference(params, reference_dir, test_rows, probs, truths, post, table, pseudo)
    # 4. The headline figures and the supporting ones, with baselines through the same scoring path.
    metrics = _headline(table, chosen, reference, params.seed)
    details = _details(params, data, table, truths, plain_probs, preds, test_masks, reference)
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
    atomic_write_text(details_path, json.dumps(details, indent=2) + "\n")
    # 5. Plots: threshold sweep, per-image rows, curves and overlays.
    _plot(cfg, live_dir, plots_dir, test_images, test_masks, probs, preds, truths, table, post.threshold)

    b = details["baselines"]
    print(f"chosen on val: threshold {post.threshold:g}, tta {post.tta}, min component {post.min_component_px} px, "
          f"components kept: {post.max_components or 'all'}; test dice {metrics['dice_mean']:.4f} (per-image mean), "
          f"{metrics['dice_global']:.4f} (global); baselines: intensity {b['intensity_threshold']['dice_mean']:.4f}, "
          f"untrained {b['untrained']['dice_mean']:.4f}, empty {b['empty']['dice_mean']:.4f} -> {metrics_path}")
    if reference is not None:
        ellipses, pseudo = reference.get("ellipses_vs_reference"), reference.get("pseudo_masks_vs_reference")
        print(f"against the reference set: dice {reference['all']['dice_mean']:.4f} (per-image mean); "
              f"the labels themselves {reference['labels_vs_reference']['dice_mean']:.4f}"
              + (f", the ellipses inscribed in them {ellipses['dice_mean']:.4f}" if ellipses else "")
              + (f", the pseudo-masks {pseudo['dice_mean']:.4f}" if pseudo else ""))
    return metrics


def choose_postprocessing(probs_of, data: ProcessedData, cfg: EvaluateConfig, box_labels: bool = False,
                          box_span: float = 1.0, pseudo: bool = False) -> dict:
    """Tuned on validation (`tune_postprocessing`), or the configured threshold as is.

    `probs_of`: uint8 slices N x S x S -> the model's probabilities; `box_labels`: score masks as boxes
    (train.labels: box or ellipse), of which a tumor spans the central `box_span` share per side;
    `pseudo`: score them against the validation slices' pseudo-masks instead of their labels."""
    if not cfg.tune_on_val:
        return {"threshold": cfg.threshold, "tta": False, "min_component_px": 0, "max_components": 0}
    val_images, val_masks = data.subset("val", pseudo)
    candidates = {False: probs_of(val_images)}
    if cfg.tta:
        candidates[True] = flip_tta_probs(probs_of, val_images, candidates[False])
    if box_labels:
        val_masks = scored_boxes(val_masks, box_span)
    return tune_postprocessing(candidates, val_masks, cfg.min_component_px, cfg.max_components, box_labels)


def _score_reference(params: Params, reference_dir: Path, test_rows: pd.DataFrame, probs: np.ndarray,
                     truths: list[np.ndarray], post: PostProcess, table: pd.DataFrame,
                     pseudo_masks: np.ndarray | None = None) -> dict:
    """Scores against the reference set; adds its file and per-image scores to `table` as ref_* columns."""
    mapping = Path(params.reference.mapping) if params.reference.mapping else None
    ref_files, ref_truths = reference_masks(reference_dir, test_rows, mapping)
    ref_table, reference = score_against_reference(probs, truths, ref_truths, post, params.train.box_labels,
                                                   pseudo_masks)
    table["ref_file"] = ref_files
    for column in ("dice", "iou", "hd95_px"):
        table[f"ref_{column}"] = ref_table[column].to_numpy()
    return reference


def _headline(table: pd.DataFrame, chosen: dict, reference: dict | None, seed: int) -> dict:
    """metrics/test.json: the scores experiments are compared on (no test-set counts)."""
    ci_low, ci_high = bootstrap_ci(table["dice"], seed=seed)
    scores = _rounded(summarize_original_size(table))
    metrics = {
        **{k: v for k, v in scores.items() if k not in TEST_SET_COUNTS},
        "dice_mean_ci95_low": round(ci_low, 6),  # test-set sampling only: seeds vary more (results/kaggle.md)
        "dice_mean_ci95_high": round(ci_high, 6),
        **_rounded(chosen),
    }
    if reference is not None:
        metrics["reference"] = {k: reference["all"][k] for k in REFERENCE_HEADLINE}
    return metrics


def _details(params: Params, data: ProcessedData, table: pd.DataFrame, truths: list[np.ndarray],
             plain_probs: np.ndarray, preds: np.ndarray, test_masks: np.ndarray, reference: dict | None) -> dict:
    """metrics/test_details.json: test-set counts, training-size and untuned scores, and baselines."""
    test_images = data.subset("test")[0]
    intensity_t, intensity_pred = intensity_baseline(data.subset("val"), test_images)
    # A binary map is a probability of 0 or 1, so baselines go through the same original-size path.
    baselines = {
        "empty": np.zeros(test_images.shape, np.float32),
        "intensity_threshold": intensity_pred.astype(np.float32),
        "untrained": predict_probs(initial_model(params.model, params.seed), test_images, CPU),
    }
    scores = _rounded(summarize_original_size(table))
    details = {
        "test_set": {k: scores[k] for k in TEST_SET_COUNTS},
        "training_size": _rounded(summarize(per_image_table(preds, test_masks))),
        "untuned": _rounded(summarize_original_size(original_size_table(plain_probs, truths))),
        "baselines": {name: _rounded(summarize_original_size(original_size_table(p, truths)))
                      for name, p in baselines.items()},
    }
    details["baselines"]["intensity_threshold"]["z_threshold"] = intensity_t
    if reference is not None:
        details["reference"] = reference
    return details


def _plot(cfg: EvaluateConfig, live_dir: Path, plots_dir: Path, test_images: np.ndarray, test_masks: np.ndarray,
          probs: np.ndarray, preds: np.ndarray, truths: list[np.ndarray], table: pd.DataFrame,
          threshold: float) -> None:
    plots_dir.mkdir(parents=True, exist_ok=True)
    sweep = original_size_sweep(probs, truths, SWEEP)
    atomic_write_text(plots_dir / "thresholds.csv", sweep.round(6).to_csv(index=False))
    atomic_write_text(plots_dir / "per_image.csv", table.round(6).to_csv(index=False))
    curves_figure(_read_history(live_dir), sweep, threshold, plots_dir / "curves.png")
    overlay_grid(_overlay_panels(test_images, test_masks, preds, table, table["file"].tolist(),
                                 cfg.overlays_per_group), plots_dir / "overlays.png")
