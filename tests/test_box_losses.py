"""Losses for box labels, pinned on hand-made cases: each is zero where the box says nothing against
the prediction, and penalises what the box rules out."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from brainseg.losses import outside_box_loss, pairwise_loss, projection_loss

SURE = 30.0  # a logit far enough from 0 that the sigmoid is 0 or 1 to float precision


def _box(size=32, top=8, left=6, height=12, width=18) -> torch.Tensor:
    box = torch.zeros(1, 1, size, size)
    box[..., top:top + height, left:left + width] = 1
    return box


def _logits(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy((mask.astype(np.float32) * 2 - 1) * SURE)[None, None]


def _inscribed_ellipse(size=32, top=8, left=6, height=12, width=18) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, (left + width // 2, top + height // 2), (width // 2, height // 2), 0, 0, 360, 1, -1)
    mask[:, :left] = mask[:, left + width:] = 0
    mask[:top] = mask[top + height:] = 0
    return mask


def test_a_shape_inscribed_in_its_box_has_zero_projection_loss():
    ellipse = _inscribed_ellipse()
    rows, cols = np.nonzero(ellipse)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (8, 19, 6, 23)  # touches all four sides
    assert projection_loss(_logits(ellipse), _box()).item() == pytest.approx(0.0, abs=1e-6)


def test_a_shape_that_misses_a_side_or_leaves_the_box_has_projection_loss():
    short = _inscribed_ellipse()
    short[:, 18:] = 0  # no longer reaches the box's right side
    beyond = _inscribed_ellipse()
    beyond[13, 24:28] = 1  # sticks out of the box
    box = _box()
    assert projection_loss(_logits(short), box).item() > 0.05
    assert projection_loss(_logits(beyond), box).item() > 0.05


def test_a_pixel_outside_the_box_is_always_penalised_when_predicted():
    box = _box()
    inside = _inscribed_ellipse()
    base = outside_box_loss(_logits(inside), box).item()
    assert base == pytest.approx(0.0, abs=1e-6)
    for y, x in [(0, 0), (7, 10), (20, 30), (31, 31)]:  # anywhere outside, next to the box or not
        stray = inside.copy()
        stray[y, x] = 1
        assert outside_box_loss(_logits(stray), box).item() > base
    # What happens inside the box is not this loss's business.
    assert outside_box_loss(_logits(_box()[0, 0].numpy().astype(np.uint8)), box).item() == pytest.approx(0.0, abs=1e-6)


def test_pairwise_loss_wants_one_label_within_uniform_tissue_but_allows_a_change_at_an_edge():
    box = _box()
    image = torch.zeros(1, 1, 32, 32)
    uniform, split = np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8)
    uniform[8:20, 6:24] = 1
    split[8:20, 6:15] = 1  # half the box: a label change inside uniform intensity
    assert pairwise_loss(_logits(uniform), box, image).item() == pytest.approx(0.0, abs=1e-5)
    assert pairwise_loss(_logits(split), box, image).item() > 1.0
    edge = image.clone()
    edge[..., :, 15:] = 0.8  # the same change, now along an intensity edge: those pairs are not similar
    assert pairwise_loss(_logits(split), box, edge).item() == pytest.approx(0.0, abs=1e-5)


def test_box_losses_give_gradients_and_handle_tumor_free_slices():
    logits = torch.zeros(2, 1, 16, 16, requires_grad=True)
    boxes = torch.zeros(2, 1, 16, 16)
    boxes[0, :, 4:9, 4:12] = 1  # the second slice has no box: everything is background
    images = torch.rand(2, 1, 16, 16)
    loss = outside_box_loss(logits, boxes) + projection_loss(logits, boxes) + pairwise_loss(logits, boxes, images)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad.abs().sum() > 0
    assert logits.grad[1].gt(0).all()  # on the box-free slice every pixel is pushed towards background
