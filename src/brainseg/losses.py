"""Training loss: weighted soft Dice + binary cross-entropy + focal loss, on logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
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
