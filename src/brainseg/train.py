"""Training loop: early stopping on validation Dice, resumable, deterministic, single or multi-process."""

from __future__ import annotations

import contextlib
import copy
import os
import time
from pathlib import Path

import numpy as np
import torch
from dvclive import Live
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

import brainseg.data.dataset
import brainseg.losses
import brainseg.model
import brainseg.optim
from brainseg import distributed, training_state
from brainseg.config import Params, TrainConfig
from brainseg.data.dataset import ProcessedData, SliceDataset, build_augmentation
from brainseg.losses import SegmentationLoss
from brainseg.metrics import dice_scores
from brainseg.model import build_model, model_batches, save_checkpoint, seed_everything, to_model_input
from brainseg.optim import LRSchedule, build_optimizer

STATE_FILE = "last.pt"
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def configure_determinism(deterministic: bool, device: torch.device) -> None:
    """CPU kernels are deterministic already; on CUDA, deterministic algorithms cost some speed."""
    if device.type != "cuda":
        torch.use_deterministic_algorithms(True, warn_only=True)
        return
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; it must be set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU flags list native bf16 instructions (Linux; elsewhere assumed present)."""
    try:
        flags = cpuinfo.read_text().split()
    except OSError:
        return True
    return "avx512_bf16" in flags or "amx_bf16" in flags


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for float32.

    bf16 also runs on CPU: on cores with bf16 instructions (avx512_bf16, AMX) oneDNN convolutions
    are about twice as fast (benchmarks/training_loader.py); fp16 has no such CPU kernels.
    """
    if mode == "none":
        return None
    if device.type == "cpu" and mode == "bf16" and not cpu_has_bf16():
        print("train.amp: bf16 on a CPU without bf16 instructions (avx512_bf16 or amx_bf16) is emulated "
              "and slower than float32; set train.amp: none here")
    if device.type != "cuda" and mode != "bf16":
        print(f"train.amp: {mode} is ignored on {device.type}; training in float32")
        return None
    return _AMP_DTYPES[mode]


@torch.no_grad()
def validation_sums(model, criterion, images: np.ndarray, masks: np.ndarray, device: torch.device,
                    autocast_dtype: torch.dtype | None = None, memory_format=torch.contiguous_format,
                    batch_size: int = 32) -> tuple[float, float, int]:
    """(sum of per-slice losses, sum of per-image Dice at threshold 0.5, slices): summable across processes.

    In the training's precision and memory format: with patch training the whole validation
    slices can cost as much as the epoch's patches.
    """
    model.eval()
    loss_sum, dice_sum = 0.0, 0.0
    for rows, x in model_batches(images, device, batch_size):
        y = torch.from_numpy(np.asarray(masks[rows], dtype=np.float32))[:, None].to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(x.contiguous(memory_format=memory_format))
        loss_sum += criterion(logits, y).item() * len(x)
        pred, truth = (logits > 0).flatten(1), y.bool().flatten(1)
        tp = (pred & truth).sum(1).cpu().numpy()
        fp = (pred & ~truth).sum(1).cpu().numpy()
        fn = (~pred & truth).sum(1).cpu().numpy()
        dice_sum += float(dice_scores(tp, fp, fn).sum())
    return loss_sum, dice_sum, len(images)


def _state_inputs(processed_dir: Path, split_dir: Path) -> list[Path]:
    return [processed_dir / n for n in ("images.npy", "masks.npy", "index.csv")] + sorted(split_dir.glob("*.txt"))


def train(params: Params, processed_dir: Path, split_dir: Path, model_path: Path, live_dir: Path,
          state_dir: Path) -> dict | None:
    """Train, keep the best epoch's weights in `model_path`; returns the best epoch and score.

    With train.devices > 1 outside torchrun, re-runs the calling script under torchrun and
    returns None here; the workers come back into this function.
    """
    cfg = params.train
    if cfg.devices > 1 and not distributed.launched_by_torchrun():
        distributed.run_under_torchrun(cfg.devices)
        return None
    ctx = distributed.setup(cfg.device, cfg.devices)
    try:
        return _train(params, ctx, processed_dir, split_dir, model_path, live_dir, state_dir / STATE_FILE)
    finally:
        distributed.cleanup(ctx)


def _loader(train_set: SliceDataset, cfg: TrainConfig, ctx: distributed.Context, seed: int) -> DataLoader:
    # Each process takes every world-th slice of one seeded permutation, so the union of the
    # processes' k-th batches is the single-process run's k-th batch of train.batch_size slices.
    sampler = DistributedSampler(train_set, num_replicas=ctx.world, rank=ctx.rank, shuffle=True, seed=seed)
    per_process = cfg.batch_size // ctx.world
    workers = cfg.num_workers
    return DataLoader(train_set, batch_size=per_process, sampler=sampler, num_workers=workers,
                      drop_last=len(sampler) > per_process, pin_memory=cfg.pin_memory and ctx.device.type == "cuda",
                      persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
                      generator=torch.Generator())


def _train(params: Params, ctx: distributed.Context, processed_dir: Path, split_dir: Path, model_path: Path,
           live_dir: Path, state_path: Path) -> dict:
    cfg, device = params.train, ctx.device
    configure_determinism(cfg.deterministic, device)
    seed_everything(params.seed)
    data = ProcessedData(processed_dir, split_dir)
    train_images, train_masks = data.subset("train")
    val_rows = data.rows["val"][ctx.rank::ctx.world]  # validation is sharded, then summed
    val_images, val_masks = data.images[val_rows], data.masks[val_rows]
    augment = build_augmentation(cfg.augment, cfg.patch_size, cfg.foreground_patches)
    train_set = SliceDataset(train_images, train_masks, augment, seed=params.seed)
    loader = _loader(train_set, cfg, ctx, params.seed)

    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    net = build_model(params.model).to(device, memory_format=memory_format)
    model = DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None) if ctx.world > 1 else net
    # Processes share the initial weights (DDP copies rank 0's) but not their dropout draws.
    torch.manual_seed(params.seed + ctx.rank)
    optimizer = build_optimizer(net.parameters(), cfg)
    schedule = LRSchedule(optimizer, cfg, len(loader))
    criterion = SegmentationLoss(cfg.dice_weight, cfg.bce_weight, cfg.focal_weight, cfg.focal_gamma)
    autocast_dtype = amp_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype == torch.float16)

    fingerprint = training_state.fingerprint(
        params, _state_inputs(processed_dir, split_dir),
        [brainseg.train, brainseg.model, brainseg.losses, brainseg.optim, brainseg.data.dataset])
    start_epoch, best, best_weights, history = 0, {"val_dice": -1.0, "epoch": 0}, None, []
    state = training_state.load_state(state_path, fingerprint) if cfg.resume == "auto" else None
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        scaler.load_state_dict(state["scaler"])
        training_state.restore_rng_state(state["rng"][ctx.rank])
        start_epoch, best, best_weights, history = state["epoch"], state["best"], state["best_weights"], state["history"]
        if ctx.is_main:
            print(f"resume: continuing after epoch {start_epoch}/{cfg.epochs} from {state_path}")
    elif cfg.resume == "never" and ctx.is_main and state_path.exists():
        print(f"train.resume is never: ignoring {state_path}")

    started = time.perf_counter()
    epoch = start_epoch
    with Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None) if ctx.is_main else contextlib.nullcontext() as live:
        for entry in history:  # DVC removed the earlier epochs' logs before this rerun
            _log_epoch(live, entry)
        for epoch in range(start_epoch, cfg.epochs):
            if epoch - best["epoch"] >= cfg.patience:
                if ctx.is_main:
                    tqdm.write(f"early stop: no val dice gain for {cfg.patience} epochs")
                break
            train_loss = _train_epoch(model, loader, optimizer, schedule, criterion, scaler, autocast_dtype,
                                      cfg, ctx, epoch, params.seed, memory_format)
            distributed.broadcast_buffers(ctx, net)
            sums = validation_sums(net, criterion, val_images, val_masks, device, autocast_dtype, memory_format)
            loss_sum, dice_sum, count = distributed.sum_across(ctx, list(sums))
            val_loss, val_dice = loss_sum / count, dice_sum / count
            schedule.epoch_end(val_dice)
            entry = {"train/loss": train_loss, "val/loss": val_loss, "val/dice": val_dice, "lr": schedule.lr}
            history.append(entry)
            improved = val_dice > best["val_dice"]
            if improved:
                best = {"val_dice": val_dice, "epoch": epoch + 1}
                best_weights = copy.deepcopy({k: v.cpu() for k, v in net.state_dict().items()})
            if ctx.is_main:
                _log_epoch(live, entry)
                tqdm.write(f"epoch {epoch + 1:3d}  train loss {train_loss:.4f}  val loss {val_loss:.4f}  "
                           f"val dice {val_dice:.4f}{'  *best' if improved else ''}")
            rng = _gather_rng(ctx)
            if ctx.is_main:
                training_state.save_state(state_path, {
                    "fingerprint": fingerprint, "epoch": epoch + 1, "best": best, "best_weights": best_weights,
                    "history": history, "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(), "scaler": scaler.state_dict(), "rng": rng})
            distributed.barrier(ctx)
        else:
            epoch = cfg.epochs
        if ctx.is_main:
            live.summary["best_epoch"] = best["epoch"]
            live.summary["best_val_dice"] = best["val_dice"]
    if ctx.is_main:
        save_checkpoint(model_path, best_weights, params.model, params.preprocess.image_size, **best)
        state_path.unlink()  # finished: a later run must train, not resume
        with contextlib.suppress(OSError):
            state_path.parent.rmdir()
        minutes = (time.perf_counter() - started) / 60
        print(f"trained {epoch} epochs ({epoch - start_epoch} in this run, {minutes:.1f} min, {ctx.world} x {device}); "
              f"best val dice {best['val_dice']:.4f} at epoch {best['epoch']} -> {model_path}")
    distributed.barrier(ctx)
    return best


def _train_epoch(model, loader: DataLoader, optimizer, schedule: LRSchedule, criterion, scaler,
                 autocast_dtype: torch.dtype | None, cfg: TrainConfig, ctx: distributed.Context, epoch: int,
                 seed: int, memory_format: torch.memory_format) -> float:
    """One pass over the training data; returns the mean loss over all processes."""
    loader.sampler.set_epoch(epoch)
    loader.dataset.epoch = epoch
    # Worker seeds are drawn from the loader's generator: make them a function of the epoch.
    loader.generator.manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))
    model.train()
    total, seen = 0.0, 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
               disable=not ctx.is_main or None, mininterval=2.0)
    for images, masks in bar:
        images = to_model_input(images.to(ctx.device, non_blocking=True)).contiguous(memory_format=memory_format)
        masks = masks.to(ctx.device, non_blocking=True).float()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(ctx.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(images)
        loss = criterion(logits, masks)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        total += loss.item() * len(images)
        seen += len(images)
        bar.set_postfix(loss=f"{total / seen:.4f}")
    total, seen = distributed.sum_across(ctx, [total, float(seen)])
    return total / seen


def _gather_rng(ctx: distributed.Context) -> list[dict]:
    """Every process's random-number state, collected on rank 0 for the saved state."""
    own = training_state.rng_state()
    if ctx.world == 1:
        return [own]
    gathered = [None] * ctx.world if ctx.is_main else None
    torch.distributed.gather_object(own, gathered, dst=0)
    return gathered


def _log_epoch(live: Live, entry: dict) -> None:
    for name in ("train/loss", "val/loss", "val/dice"):
        live.log_metric(name, entry[name])
    live.log_metric("lr", entry["lr"], plot=False)
    live.next_step()
