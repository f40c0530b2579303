"""Losses for box labels, pinned on hand-made cases: each is zero where the box says nothing against
the prediction, and penalises what the box rules out."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from brainseg.losses import central_spans, outside_box_loss, pairwise_loss, projection_loss

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


def test_central_spans_leave_each_box_s_margins_out():
    profiles = torch.tensor([[0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0]], dtype=torch.float32)
    target, care = central_spans(profiles, 0.5)
    assert target.tolist() == [[0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0, 0]]
    assert care.tolist() == [[1, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0, 1]]
    target, care = central_spans(profiles, 1.0)
    assert torch.equal(target, profiles) and bool(care.all())


def test_a_loose_box_s_tumor_need_only_span_its_centre():
    """A tumor reaching 60% of its box's width and height, centred: the tight prior (span 1) wants it
    to reach the box's sides, span 0.5 does not; leaving the box or missing the centre still costs."""
    box = _box(size=48, top=8, left=8, height=30, width=30)
    tumor = _inscribed_ellipse(size=48, top=14, left=14, height=18, width=18)
    assert projection_loss(_logits(tumor), box).item() > 0.3
    assert projection_loss(_logits(tumor), box, span=0.5).item() == pytest.approx(0.0, abs=1e-6)
    beyond = tumor.copy()
    beyond[20:24, 36:44] = 1  # reaches past the box's right side
    off_centre = _inscribed_ellipse(size=48, top=8, left=8, height=10, width=10)  # a corner, not the centre
    assert projection_loss(_logits(beyond), box, span=0.5).item() > 0.05
    assert projection_loss(_logits(off_centre), box, span=0.5).item() > 0.3


def test_pairwise_loss_wants_labels_to_change_only_at_intensity_edges():
    box = _box()  # rows 8:20, columns 6:24
    tumor = np.zeros((32, 32), np.uint8)
    tumor[10:18, 9:20] = 1
    image = torch.from_numpy(0.1 + 0.7 * tumor.astype(np.float32))[None, None]  # bright tumor, dark tissue
    # The tumor's outline runs along the intensity edge: every similar pair shares a label.
    assert pairwise_loss(_logits(tumor), box, image).item() == pytest.approx(0.0, abs=1e-5)
    # The painted box changes label inside uniform dark tissue, at the box's own edge (pairs that
    # cross it count: the background outside is certain and spreads inward).
    painted = _box()[0, 0].numpy().astype(np.uint8)
    assert pairwise_loss(_logits(painted), box, image).item() > 1.0
    # So does a cut through the tumor, where nothing in the image changes.
    cut = tumor.copy()
    cut[:, 15:] = 0
    assert pairwise_loss(_logits(cut), box, image).item() > 1.0
    # Pairs away from every box say nothing: stray labels far outside are the outside loss's business.
    far = tumor.copy()
    far[28:31, 28:31] = 1
    assert pairwise_loss(_logits(far), box, image).item() == pytest.approx(0.0, abs=1e-5)


def test_box_losses_give_gradients_and_handle_tumor_free_slices():
    logits = torch.zeros(2, 1, 16, 16, requires_grad=True)
    boxes = torch.zeros(2, 1, 16, 16)
    boxes[0, :, 4:9, 4:12] = 1  # the second slice has no box: everything is background
    images = torch.rand(2, 1, 16, 16)
    loss = outside_box_loss(logits, boxes) + projection_loss(logits, boxes) + pairwise_loss(logits, boxes, images)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad.abs().sum() > 0
    assert logits.grad[1].gt(0).all()  # on the box-free slice every pixel is pushed towards background
