"""Training loop: Dice+BCE, Adam, warm-up + cosine schedule, early stopping on validation Dice."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from dvclive import Live
from torch.utils.data import DataLoader
from tqdm import tqdm

from brainseg.config import Params
from brainseg.data.dataset import ProcessedData, SliceDataset, build_augmentation
from brainseg.losses import DiceBCELoss
from brainseg.metrics import dice_scores
from brainseg.model import build_model, save_checkpoint


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def lr_factor(epoch: int, epochs: int, warmup: int, scheduler: str) -> float:
    """Multiplier of the base learning rate for `epoch` (0-based): linear warm-up, then cosine."""
    if epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    if scheduler == "none":
        return 1.0
    progress = (epoch - warmup) / max(1, epochs - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def predict_probs(model: torch.nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 32) -> np.ndarray:
    """Tumor probabilities (float32, N x H x W) for uint8 images N x H x W."""
    model.eval()
    out = np.empty(images.shape, dtype=np.float32)
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.asarray(images[start:start + batch_size], dtype=np.float32) / 255.0)
        out[start:start + len(batch)] = torch.sigmoid(model(batch[:, None].to(device)))[:, 0].cpu().numpy()
    return out


def train(params: Params, processed_dir: Path, split_dir: Path, model_path: Path, live_dir: Path) -> dict:
    cfg = params.train
    seed_everything(params.seed)
    device = resolve_device(cfg.device)
    data = ProcessedData(processed_dir, split_dir)
    train_images, train_masks = data.subset("train")
    val_images, val_masks = data.subset("val")
    train_set = SliceDataset(train_images, train_masks, build_augmentation(cfg.augment), seed=params.seed)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=len(train_set) > cfg.batch_size,
                        num_workers=cfg.num_workers, generator=torch.Generator().manual_seed(params.seed),
                        pin_memory=device.type == "cuda")

    model = build_model(params.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: lr_factor(e, cfg.epochs, cfg.warmup_epochs, cfg.scheduler))
    criterion = DiceBCELoss(cfg.dice_weight, cfg.bce_weight)

    best = {"val_dice": -1.0, "epoch": -1}
    started = time.perf_counter()
    with Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None) as live:
        for epoch in range(cfg.epochs):
            train_set.epoch = epoch
            model.train()
            total, seen = 0.0, 0
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False)
            for images, masks in bar:
                images, masks = images.to(device), masks.to(device)
                optimizer.zero_grad(set_to_none=True)
                loss = criterion(model(images), masks)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(images)
                seen += len(images)
                bar.set_postfix(loss=f"{total / seen:.4f}")
            scheduler.step()

            val_loss, val_dice = evaluate_split(model, criterion, val_images, val_masks, device)
            live.log_metric("train/loss", total / seen)
            live.log_metric("val/loss", val_loss)
            live.log_metric("val/dice", val_dice)
            live.log_metric("lr", optimizer.param_groups[0]["lr"], plot=False)
            improved = val_dice > best["val_dice"]
            if improved:
                best = {"val_dice": val_dice, "epoch": epoch + 1}
                save_checkpoint(model_path, model, params.model, params.preprocess.image_size, **best)
            tqdm.write(f"epoch {epoch + 1:3d}  train loss {total / seen:.4f}  val loss {val_loss:.4f}  "
                       f"val dice {val_dice:.4f}{'  *best' if improved else ''}")
            live.next_step()
            if epoch + 1 - best["epoch"] >= cfg.patience:
                tqdm.write(f"early stop: no val dice gain for {cfg.patience} epochs")
                break
        live.summary["best_epoch"] = best["epoch"]
        live.summary["best_val_dice"] = best["val_dice"]
    minutes = (time.perf_counter() - started) / 60
    print(f"trained {epoch + 1} epochs in {minutes:.1f} min on {device}; best val dice "
          f"{best['val_dice']:.4f} at epoch {best['epoch']} -> {model_path}")
    return best


@torch.no_grad()
def evaluate_split(model, criterion, images: np.ndarray, masks: np.ndarray, device: torch.device,
                   batch_size: int = 32) -> tuple[float, float]:
    """Mean loss and per-image mean Dice at threshold 0.5."""
    model.eval()
    loss_sum, dice = 0.0, []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.asarray(images[start:start + batch_size], dtype=np.float32) / 255.0)[:, None].to(device)
        y = torch.from_numpy(np.asarray(masks[start:start + batch_size], dtype=np.float32))[:, None].to(device)
        logits = model(x)
        loss_sum += criterion(logits, y).item() * len(x)
        pred, truth = (logits > 0).flatten(1), y.bool().flatten(1)
        tp = (pred & truth).sum(1).cpu().numpy()
        fp = (pred & ~truth).sum(1).cpu().numpy()
        fn = (~pred & truth).sum(1).cpu().numpy()
        dice.append(dice_scores(tp, fp, fn))
    return loss_sum / len(images), float(np.concatenate(dice).mean())
