"""Optimizers, the learning-rate schedule and the moving average of the weights, built from `train` params."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable

import torch

from brainseg.config import TrainConfig

# One-cycle policy (Smith 2018): start at lr / 25, peak at lr, end at lr / (25 * 10^4), as torch's OneCycleLR.
_ONECYCLE_START, _ONECYCLE_END = 1 / 25, 1 / 25e4
_ONECYCLE_RISE = 0.3  # share of training spent rising when train.warmup_epochs is 0
_POLY_POWER = 0.9  # nnU-Net's polynomial decay


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":  # decoupled weight decay
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                           weight_decay=cfg.weight_decay)


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the base learning rate before optimizer step `step` (0-based) of `total`.

    All schedules but onecycle start with a linear warm-up over `warmup` steps; onecycle rises
    along a half cosine instead. plateau and none stay at 1 after warm-up (plateau cuts are
    applied on top, at epoch ends).
    """
    if kind == "onecycle":
        rise = warmup or max(1, round(_ONECYCLE_RISE * total))
        if step < rise:
            return _ONECYCLE_START + (1 - _ONECYCLE_START) * 0.5 * (1 - math.cos(math.pi * step / rise))
        progress = (step - rise) / max(1, total - rise)
        return _ONECYCLE_END + (1 - _ONECYCLE_END) * 0.5 * (1 + math.cos(math.pi * progress))
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "poly":
        return (1.0 - progress) ** _POLY_POWER
    return 1.0


class LRSchedule:
    """Sets the optimizer's learning rate every step; `plateau` also cuts it when validation stalls.

    Per step rather than per epoch, so warm-up is smooth even when training runs few epochs.
    `state_dict` holds everything needed to resume mid-training.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
        self.optimizer, self.cfg = optimizer, cfg
        self.total = cfg.epochs * steps_per_epoch
        self.warmup = cfg.warmup_epochs * steps_per_epoch
        self.step_count = 0
        self.plateau_scale, self.plateau_best, self.plateau_bad_epochs = 1.0, -math.inf, 0
        self._apply()

    @property
    def lr(self) -> float:
        factor = lr_factor(self.step_count, self.total, self.warmup, self.cfg.scheduler)
        return self.cfg.lr * self.plateau_scale * factor

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def step(self) -> None:
        """Call after each optimizer step."""
        self.step_count += 1
        self._apply()

    def epoch_end(self, val_score: float) -> None:
        """Call after validation; for plateau, cut the rate after plateau_patience epochs without gain."""
        if self.cfg.scheduler != "plateau" or self.step_count < self.warmup:
            return
        if val_score > self.plateau_best:
            self.plateau_best, self.plateau_bad_epochs = val_score, 0
            return
        self.plateau_bad_epochs += 1
        if self.plateau_bad_epochs >= self.cfg.plateau_patience:
            self.plateau_scale *= self.cfg.plateau_factor
            self.plateau_bad_epochs = 0
            self._apply()

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "plateau_scale": self.plateau_scale,
                "plateau_best": self.plateau_best, "plateau_bad_epochs": self.plateau_bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self.plateau_scale = float(state["plateau_scale"])
        self.plateau_best = float(state["plateau_best"])
        self.plateau_bad_epochs = int(state["plateau_bad_epochs"])
        self._apply()


class WeightAverage:
    """An exponential moving average of a network's weights and batch-norm statistics (Polyak averaging).

    After every optimizer step of `net`, `module` moves a share (1 - d) of the way towards the trained network,
    so it averages roughly the last 1 / (1 - d) steps: the noise of single minibatches and of the
    last epochs' wandering cancels, as in an ensemble of nearby checkpoints, at no training cost.
    d ramps up as min(decay, (1 + n) / (10 + n)) after n updates, so the random initial weights are
    forgotten within the first steps. Integer buffers (batch-norm's batch counter) are copied.
    `state_dict` holds what a resumed run needs to continue the same average.
    """

    def __init__(self, net: torch.nn.Module, decay: float):
        self.net, self.decay, self.updates = net, decay, 0
        self.module = copy.deepcopy(net).eval().requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Call after each optimizer step of `net`."""
        self.updates += 1
        keep = self.current_decay()
        trained = self.net.state_dict()
        for name, average in self.module.state_dict().items():
            if average.is_floating_point():
                average.lerp_(trained[name].detach(), 1.0 - keep)
            else:
                average.copy_(trained[name])

    def state_dict(self) -> dict:
        return {"updates": self.updates, "weights": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["weights"])
