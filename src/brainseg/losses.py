"""Training loss: weighted soft Dice + binary cross-entropy on logits."""

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


class DiceBCELoss(torch.nn.Module):
    def __init__(self, dice_weight: float, bce_weight: float):
        super().__init__()
        self.dice_weight, self.bce_weight = dice_weight, bce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = logits.new_zeros(())
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, target)
        if self.bce_weight:
            loss = loss + self.bce_weight * F.binary_cross_entropy_with_logits(logits, target)
        return loss
