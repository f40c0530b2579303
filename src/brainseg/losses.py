"""Training losses on logits: weighted soft Dice + binary cross-entropy + focal loss for masks, and the
box-supervision terms (outside-box, projection, pairwise) for labels that are only boxes."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from brainseg.lesions import box_margin


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per image, averaged over the batch.

    Per image rather than pooled over the batch, so a small tumor weighs as much as a large one,
    as in the per-image Dice the pipeline reports; `eps` keeps tumor-free slices finite and
    rewards predicting nothing on them.
    """
    probs = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    intersection = (probs * target).sum(1)
    return (1.0 - (2.0 * intersection + eps) / (probs.sum(1) + target.sum(1) + eps)).mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Binary focal loss (Lin et al. 2017), mean over pixels: BCE scaled by (1 - p_t) ** gamma.

    Down-weights the many easy background pixels; gamma = 0 is plain BCE.
    """
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = torch.exp(-bce)  # probability given to the true class
    return ((1.0 - p_t) ** gamma * bce).mean()


class SegmentationLoss(torch.nn.Module):
    def __init__(self, dice_weight: float, bce_weight: float, focal_weight: float = 0.0, focal_gamma: float = 2.0):
        super().__init__()
        self.dice_weight, self.bce_weight = dice_weight, bce_weight
        self.focal_weight, self.focal_gamma = focal_weight, focal_gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """`images` (unused here) keeps one call signature with BoxSupervisionLoss."""
        # Losses are computed in float32 even under mixed precision: sums over 10^5 pixels and
        # log-probabilities near 0 or 1 lose too much in 16 bits.
        logits = logits.float()
        loss = logits.new_zeros(())
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, target)
        if self.bce_weight:
            loss = loss + self.bce_weight * F.binary_cross_entropy_with_logits(logits, target)
        if self.focal_weight:
            loss = loss + self.focal_weight * focal_loss(logits, target, self.focal_gamma)
        return loss


# --- Box supervision: losses that are exact when the labels are boxes, not outlines ----------------
# `boxes` is N x 1 x H x W with 1 inside a box (the union of an image's boxes), 0 elsewhere.

def outside_box_loss(logits: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """BCE towards background on the pixels outside every box (there the box label is exact),
    averaged per image over those pixels, then over the batch."""
    outside = 1.0 - boxes
    per_pixel = F.softplus(logits.float())  # BCE with target 0
    return ((per_pixel * outside).flatten(1).sum(1) / outside.flatten(1).sum(1).clamp(min=1.0)).mean()


def central_spans(profiles: torch.Tensor, span: float) -> tuple[torch.Tensor, torch.Tensor]:
    """For 0/1 box profiles N x L (which columns, or rows, a slice's boxes cover): (target, care).

    Within each run of 1s (one box's extent) the central `span` share is target 1; the margins on
    either side are left out (care 0): a tumor in a loose box spans its centre but need not reach
    its edges. Everything outside the runs keeps target 0 and care 1. span 1 is the tight box."""
    target, care = profiles.clone(), torch.ones_like(profiles)
    if span >= 1.0:
        return target, care
    rows = profiles.detach().cpu().numpy() > 0
    for n, row in enumerate(rows):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(np.int8), [0]])))
        for start, end in zip(edges[::2], edges[1::2]):
            margin = box_margin(end - start, span)
            if margin:
                target[n, start:start + margin] = target[n, end - margin:end] = 0
                care[n, start:start + margin] = care[n, end - margin:end] = 0
    return target, care


def projection_loss(logits: torch.Tensor, boxes: torch.Tensor, eps: float = 1.0, span: float = 1.0) -> torch.Tensor:
    """The box tightness prior (Hsu et al. 2019; BoxInst's projection term, Tian et al. 2021): the
    prediction's maximum along each column and each row must match the box's, i.e. the tumor
    touches every side of its box and nothing lies beyond. 1D soft Dice per image and axis.

    With `span` < 1 only the central share of each box side must be spanned, for loose boxes
    (`central_spans`); beyond the box the prediction must still be empty."""
    probs = torch.sigmoid(logits.float())
    loss = logits.new_zeros((), dtype=torch.float32)
    for axis in (2, 3):  # max over rows -> one value per column; over columns -> one per row
        box, care = central_spans(boxes.float().amax(dim=axis).flatten(1), span)
        pred = probs.amax(dim=axis).flatten(1) * care
        dice = (2 * (pred * box).sum(1) + eps) / (pred.sum(1) + box.sum(1) + eps)
        loss = loss + (1 - dice).mean()
    return loss


def _neighbour_offsets(dilation: int) -> list[tuple[int, int]]:
    """Half of the 8 neighbours at `dilation` pixels (each pair of pixels is counted once)."""
    return [(0, dilation), (dilation, 0), (dilation, dilation), (dilation, -dilation)]


def pairwise_loss(logits: torch.Tensor, boxes: torch.Tensor, images: torch.Tensor, sigma: float = 0.02,
                  min_similarity: float = 0.3, dilation: int = 2) -> torch.Tensor:
    """BoxInst's pairwise term on MRI intensity: neighbouring pixels of similar intensity (similarity
    exp(-|dI| / sigma) >= min_similarity), at least one of them inside a box, should share a label;
    the loss is -log P(same label) averaged over those pairs. Pairs across a box's edge carry the
    background (certain outside the box) inward until an intensity edge: the outline follows edges."""
    log_p, log_not_p = F.logsigmoid(logits.float()), F.logsigmoid(-logits.float())
    total, pairs = logits.new_zeros((), dtype=torch.float32), logits.new_zeros((), dtype=torch.float32)
    height, width = logits.shape[-2:]
    for dy, dx in _neighbour_offsets(dilation):
        # a: pixels (y, x); b: their neighbours (y + dy, x + dx), both inside the image.
        ya, yb = slice(0, height - dy), slice(dy, height)
        xa, xb = (slice(0, width - dx), slice(dx, width)) if dx >= 0 else (slice(-dx, width), slice(0, width + dx))
        similar = torch.exp(-(images[..., ya, xa] - images[..., yb, xb]).abs() / sigma) >= min_similarity
        in_box = (boxes[..., ya, xa] > 0) | (boxes[..., yb, xb] > 0)
        weight = (similar & in_box).float()
        log_same = torch.logaddexp(log_p[..., ya, xa] + log_p[..., yb, xb],  # both tumor, or
                                   log_not_p[..., ya, xa] + log_not_p[..., yb, xb])  # both background
        total = total - (log_same * weight).sum()
        pairs = pairs + weight.sum()
    return total / pairs.clamp(min=1.0)


class BoxSupervisionLoss(torch.nn.Module):
    """train.labels: box. The target is the union of each slice's filled boxes; only what boxes say
    for certain is enforced: background outside them, a mask that spans each box (tightness), and
    labels that follow intensity inside them (pairwise). `images` are the model inputs in [0, 1]."""

    def __init__(self, outside: float, projection: float, pairwise: float, span: float = 1.0):
        super().__init__()
        self.outside, self.projection, self.pairwise, self.span = outside, projection, pairwise, span

    def forward(self, logits: torch.Tensor, boxes: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        loss = (self.outside * outside_box_loss(logits, boxes)
                + self.projection * projection_loss(logits, boxes, span=self.span))
        if self.pairwise:
            loss = loss + self.pairwise * pairwise_loss(logits, boxes, images.float())
        return loss
