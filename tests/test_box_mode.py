"""train.labels: box and ellipse — scoring masks as boxes, choosing epochs and post-processing on boxes only, and
the whole pipeline learning outlines from boxes on the phantom, whose true outlines are known."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from brainseg.config import BoxLossConfig, EvaluateConfig, TrainConfig
from brainseg.evaluate import choose_postprocessing, tune_postprocessing
from brainseg.lesions import component_boxes, scored_boxes
from brainseg.losses import BoxSupervisionLoss, SegmentationLoss
from brainseg.profiles import merge
from brainseg.train import build_criterion, training_target, validation_sums
from tiny_repo import boxes_instead_of_outlines, copy_repo, run


def _disc(size: int, cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


def test_component_boxes_fill_each_tumor_s_own_box():
    mask = np.zeros((20, 30), np.uint8)
    mask[2:5, 3:9] = 1
    mask[4, 9] = 1  # 8-connected to the first: the box grows to include it
    mask[12:18, 20:22] = 1
    mask[13, 21] = 0  # a hole: boxes are filled
    boxes = component_boxes(mask)
    expected = np.zeros_like(mask)
    expected[2:5, 3:10] = 1
    expected[12:18, 20:22] = 1
    assert (boxes == expected).all()
    assert not component_boxes(np.zeros((4, 4), np.uint8)).any()
    batch = component_boxes(np.stack([mask, np.zeros_like(mask)]))
    assert batch.shape == (2, 20, 30) and (batch[0] == expected).all() and not batch[1].any()


def test_component_boxes_keep_the_central_span_of_loose_boxes():
    mask = np.zeros((40, 40), np.uint8)
    mask[4:24, 10:18] = 1  # 20 rows x 8 columns
    half = component_boxes(mask, span=0.5)
    expected = np.zeros_like(mask)
    expected[9:19, 12:16] = 1  # margins int(20 * 0.25) = 5 and int(8 * 0.25) = 2 at each end
    assert (half == expected).all()
    assert (component_boxes(mask, span=1.0) == mask).all()


def test_tuning_on_loose_boxes_picks_the_mask_that_spans_their_centre():
    """Probabilities falling off from the centre of a 21 x 21 box: scored against the central half of
    the box (11 x 11), the chosen mask is the disc inscribed in that half, not in the whole box; tuned
    towards a pseudo-mask inside the box, it is that pseudo-mask."""
    size, r = 48, 10
    box = np.zeros((size, size), np.uint8)
    box[24 - r:24 + r + 1, 24 - r:24 + r + 1] = 1
    yy, xx = np.mgrid[:size, :size]
    # No pixel's probability equals a swept threshold: 0.762 at 5 px from the centre, 0.714 at 6.
    probs = np.clip(1 - np.sqrt((yy - 24) ** 2 + (xx - 24) ** 2) / 21, 0, 1).astype(np.float32)[None]
    inner = (probs[0] >= 0.75).astype(np.uint8)  # a pseudo-mask well inside the box: 5.25 px about its centre

    class OneSlice:
        def subset(self, name, pseudo=False):
            return np.zeros((1, size, size), np.uint8), (inner if pseudo else box)[None]

    cfg = EvaluateConfig(tta=False, min_component_px=[0])
    tight = choose_postprocessing(lambda images: probs, OneSlice(), cfg, box_labels=True)
    loose = choose_postprocessing(lambda images: probs, OneSlice(), cfg, box_labels=True, box_span=0.5)
    assert loose["val_dice_mean"] == pytest.approx(1.0) and loose["threshold"] > tight["threshold"]
    chosen = (probs[0] >= loose["threshold"]).astype(np.uint8)
    assert (component_boxes(chosen) == component_boxes(box, span=0.5)).all()
    # Towards pseudo-masks the masks are chosen against them, pixel by pixel, not as boxes.
    towards_pseudo = choose_postprocessing(lambda images: probs, OneSlice(), cfg, pseudo=True)
    assert towards_pseudo["val_dice_mean"] == pytest.approx(1.0)
    assert ((probs[0] >= towards_pseudo["threshold"]) == inner).all()
    assert towards_pseudo["threshold"] > tight["threshold"]  # scored as boxes, the inflated mask would win


def test_tuning_on_boxes_picks_the_threshold_at_which_the_tumor_spans_its_box():
    """Probabilities falling off from a tumor's centre: pixel Dice against the box prefers the low
    threshold that paints most of the box; scored as boxes, the tightest threshold whose mask still
    spans the box wins, which is the one where the mask is the disc inscribed in it."""
    size, r = 48, 10
    box = np.zeros((size, size), np.uint8)
    box[24 - r:24 + r + 1, 24 - r:24 + r + 1] = 1
    yy, xx = np.mgrid[:size, :size]
    distance = np.sqrt((yy - 24) ** 2 + (xx - 24) ** 2)
    probs = np.clip(1 - distance / (2 * r), 0, 1).astype(np.float32)[None]  # 0.5 at the rim of the inscribed disc
    as_masks = tune_postprocessing({False: probs}, box[None], (0,))
    as_boxes = tune_postprocessing({False: probs}, box[None], (0,), box_labels=True)
    assert as_boxes["val_dice_mean"] == pytest.approx(1.0)
    assert as_boxes["threshold"] > as_masks["threshold"]
    inscribed = (probs[0] >= as_boxes["threshold"]).astype(np.uint8)
    assert (component_boxes(inscribed) == box).all()
    assert (inscribed & ~box.astype(bool)).sum() == 0 and inscribed.sum() < 0.85 * box.sum()


def test_criterion_follows_train_labels():
    assert isinstance(build_criterion(TrainConfig()), SegmentationLoss)
    criterion = build_criterion(TrainConfig(labels="box"))
    assert isinstance(criterion, BoxSupervisionLoss)
    # The disc inscribed in its box, on an image where the disc is bright: pairwise and projection
    # terms are near zero, so the loss is far below that of the filled box (which the pairwise term
    # and nothing else penalises: it cuts through the similar dark pixels at the box's corners).
    disc = torch.from_numpy(_disc(32, 16, 16, 8)).float()[None, None]
    box = torch.zeros_like(disc)
    box[..., 8:25, 8:25] = 1
    image = 0.2 + 0.6 * disc
    loss_disc = criterion(30 * (2 * disc - 1), box, image).item()
    loss_box = criterion(30 * (2 * box - 1), box, image).item()
    assert loss_disc < 0.05 < loss_box

    # Ellipse labels: the mask loss (Dice + BCE) towards the disc inscribed in the 17 x 17 box
    # (radius 8.5 about its centre pixel), whatever the image; other labels are their own target.
    ellipse = TrainConfig(labels="ellipse")
    assert type(build_criterion(ellipse)) is SegmentationLoss
    yy, xx = np.mgrid[:32, :32]
    inscribed = ((yy - 16) ** 2 + (xx - 16) ** 2 <= 8.5 ** 2).astype(np.uint8)
    np.testing.assert_array_equal(training_target(ellipse)(box[0, 0].numpy().astype(np.uint8)), inscribed)
    assert training_target(TrainConfig()) is None and training_target(TrainConfig(labels="box")) is None
    assert TrainConfig(labels="ellipse").box_labels and TrainConfig(labels="box").box_labels
    assert not TrainConfig().box_labels
    # Pseudo-masks are chosen against, not scored as boxes: a mask inside a loose box would lose.
    assert TrainConfig(labels="pseudo").box_labels and not TrainConfig(labels="pseudo").scored_as_boxes
    assert TrainConfig(labels="box").scored_as_boxes and TrainConfig(labels="ellipse").scored_as_boxes
    assert TrainConfig(labels="box", box=BoxLossConfig(span=0.6)).box_span == 0.6
    assert TrainConfig(labels="ellipse", box=BoxLossConfig(span=0.6)).box_span == 1.0


class _Fixed(torch.nn.Module):
    """A 'model' that returns given logits whatever its input."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits[: len(x)]


def test_validation_scores_box_labels_as_boxes():
    """The disc inscribed in its box scores box Dice 1 with box labels, and its pixel Dice otherwise."""
    disc = _disc(32, 16, 16, 8)
    box = component_boxes(disc)
    logits = torch.from_numpy(30 * (2 * disc.astype(np.float32) - 1))[None, None]
    images, masks = np.zeros((1, 32, 32), np.uint8), box[None]
    criterion = SegmentationLoss(1.0, 1.0)
    _, as_boxes, _ = validation_sums(_Fixed(logits), criterion, images, masks, torch.device("cpu"),
                                     box_truths=scored_boxes(masks, 1.0))
    _, as_pixels, n = validation_sums(_Fixed(logits), criterion, images, masks, torch.device("cpu"))
    assert n == 1 and as_boxes == pytest.approx(1.0)
    assert as_pixels == pytest.approx(2 * disc.sum() / (disc.sum() + box.sum()), abs=1e-6)
    # Against a looser box the same disc spans its central two thirds exactly.
    loose = np.zeros((1, 32, 32), np.uint8)
    loose[0, 4:29, 4:29] = 1  # 25 x 25: margins of int(25 * 0.17) = 4 leave 8..24, the disc's box
    _, tight_score, _ = validation_sums(_Fixed(logits), criterion, images, loose, torch.device("cpu"),
                                        box_truths=scored_boxes(loose, 1.0))
    _, loose_score, _ = validation_sums(_Fixed(logits), criterion, images, loose, torch.device("cpu"),
                                        box_truths=scored_boxes(loose, 0.66))
    assert loose_score == pytest.approx(1.0) and tight_score < 0.7


def _boxes_scored_against_outlines(repo, params: dict, tmp_path) -> dict:
    """`params` switched to train on `repo`'s phantom relabelled with boxes (each tumor's bounding box,
    as the Kaggle dataset labels them) and to score the test slices against its true outlines."""
    outlines = shutil.copytree(repo / "data/raw", tmp_path / "outlines")
    params["data"].update(source="local", local_path=str(boxes_instead_of_outlines(outlines, tmp_path / "boxes")))
    params["reference"].update(source="local", local_path=str(outlines))
    return params


@pytest.mark.slow
@pytest.mark.parametrize("labels", ["box", "ellipse", "pseudo"])
def test_box_modes_run_through_the_pipeline_on_boxes_scored_against_outlines(pipeline_repo, tmp_path, labels):
    """The tiny phantom relabelled with boxes: preprocess points to box mode; in each box mode the whole
    pipeline runs, epoch and post-processing are chosen on the boxes, the phantom's true outlines
    score the test slices as the reference set, and the model card says how the model was trained.
    For pseudo, preprocess draws GrabCut pseudo-masks, and evaluate scores them against the outlines."""
    repo = copy_repo(pipeline_repo, tmp_path / "repo")
    params = _boxes_scored_against_outlines(repo, yaml.safe_load((repo / "params.yaml").read_text()), tmp_path)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro", "preprocess"], repo).stdout
    assert "the labels are boxes" in out and "train.labels: pseudo" in out and "ellipse or box" in out

    params["train"]["labels"] = labels
    if labels == "pseudo":
        params["preprocess"]["pseudo_masks"] = "grabcut"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro"], repo).stdout
    assert ("GrabCut pseudo-masks keep" in out) == (labels == "pseudo")
    metrics = json.loads((repo / "metrics/test.json").read_text())
    details = json.loads((repo / "metrics/test_details.json").read_text())
    assert 0.0 <= metrics["reference"]["dice_mean"] <= 1.0
    bounds = details["reference"]
    assert bounds["labels_vs_reference"]["dice_mean"] < 0.95  # boxes and outlines differ
    # The phantom's tumors are blobs: the ellipses inscribed in their boxes are nearer their outlines.
    assert bounds["ellipses_vs_reference"]["dice_mean"] > bounds["labels_vs_reference"]["dice_mean"]
    assert ("pseudo_masks_vs_reference" in bounds) == (labels == "pseudo")
    if labels == "pseudo":
        assert 0.0 < bounds["pseudo_masks_vs_reference"]["dice_mean"] <= 1.0
        share = json.loads((repo / "metrics/data.json").read_text())["pseudo_mask_label_share"]
        assert 0.0 < share < 1.0
    chosen = json.loads((repo / "models/postprocess.json").read_text())
    assert chosen["threshold"] == metrics["threshold"]
    card = (repo / "models/MODEL_CARD.md").read_text()
    assert f"train.labels: {labels}" in card
    assert {"box": "trained on them as boxes", "ellipse": "inscribed in each box", "pseudo": "GrabCut"}[labels] in card


# Enough phantom and training for the labels' shapes to matter, at about two minutes a model: 128
# training slices at 64 px for 60 epochs, scored on 64 test slices (tumor-free ones included).
LEARNING_FROM_BOXES = {
    "data": {"phantom": {"train": 128, "valid": 32, "test": 64, "image_size": 256}},
    "preprocess": {"image_size": 64},
    "train": {"epochs": 60, "patience": 60, "batch_size": 8},
}


@pytest.mark.slow
def test_trained_on_boxes_the_ellipse_mode_draws_tumors_nearer_their_outlines_than_boxes_as_masks(
        pipeline_repo, tmp_path):
    """Issue 16's claim where the true outlines are known: trained on each phantom tumor's bounding box
    alone, `train.labels: ellipse` scores higher against the outlines than the same boxes trained as
    masks, which learns to paint boxes. The phantom's tumors are blobs and its boxes tight: the boxes
    themselves score about 0.85 against the outlines, the ellipses inscribed in them 0.91. Measured
    (results/outlines.md): ellipse 0.661 / 0.650 / 0.683 against masks 0.620 / 0.616 / 0.663
    for seeds 42 / 1 / 7; this test runs seed 42."""
    generated = copy_repo(pipeline_repo, tmp_path / "phantom")
    params = merge(yaml.safe_load((generated / "params.yaml").read_text()), LEARNING_FROM_BOXES)
    (generated / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["dvc", "repro", "download"], generated)
    params = _boxes_scored_against_outlines(generated, params, tmp_path)

    against_outlines = {}
    for labels in ("mask", "ellipse"):
        repo = copy_repo(generated, tmp_path / labels)
        params["train"]["labels"] = labels
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        run(["dvc", "repro", "evaluate"], repo)
        against_outlines[labels] = json.loads((repo / "metrics/test.json").read_text())["reference"]["dice_mean"]
    assert against_outlines["ellipse"] > against_outlines["mask"], against_outlines

