"""Training loop: early stopping on validation Dice, resumable, deterministic, single or multi-process."""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from dvclive import Live
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

import brainseg.data.dataset
import brainseg.data.masks
import brainseg.lesions
import brainseg.losses
import brainseg.model
import brainseg.optim
from brainseg import distributed, training_state
from brainseg.config import ConfigError, Params, TrainConfig
from brainseg.data.dataset import ProcessedData, SliceDataset, build_augmentation
from brainseg.data.index import PSEUDO_MASKS_FILE
from brainseg.data.masks import inscribed_ellipses
from brainseg.lesions import component_boxes, scored_boxes
from brainseg.losses import BoxSupervisionLoss, SegmentationLoss
from brainseg.metrics import dice_scores
from brainseg.model import initial_model, model_batches, save_checkpoint, to_model_input
from brainseg.optim import LRSchedule, WeightAverage, build_optimizer

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
    """Whether the CPU flags list native bf16 instructions (Linux: x86 avx512_bf16 or AMX, Arm bf16;
    elsewhere assumed present)."""
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return True
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for float32.

    bf16 also runs on CPU: on cores with bf16 instructions (avx512_bf16, AMX) oneDNN convolutions
    are about twice as fast (benchmarks/training_step.py); fp16 has no such CPU kernels. Without
    those instructions bf16 is emulated, about 10x slower than float32 (2-core AVX2 EPYC), so it
    is refused rather than left to turn a one-hour profile into a half-day run.
    """
    if mode == "none":
        return None
    if device.type == "cpu" and mode == "bf16" and not cpu_has_bf16():
        raise ConfigError("train.amp: bf16 needs a CPU with bf16 instructions (avx512_bf16 or amx_bf16, on Arm bf16, "
                          "in /proc/cpuinfo); this one would emulate them, about 10x slower than float32. Set "
                          "train.amp: none (e.g. -S train.amp=none -S train.channels_last=false), or train on a GPU")
    if device.type != "cuda" and mode != "bf16":
        print(f"train.amp: {mode} is ignored on {device.type}; training in float32")
        return None
    return _AMP_DTYPES[mode]


def build_criterion(cfg: TrainConfig) -> torch.nn.Module:
    """The training loss for the kind of labels: masks (and ellipses or pseudo-masks drawn from boxes), or
    boxes (train.labels)."""
    if cfg.labels == "box":
        return BoxSupervisionLoss(cfg.box.outside, cfg.box.projection, cfg.box.pairwise, cfg.box.span)
    return SegmentationLoss(cfg.dice_weight, cfg.bce_weight, cfg.focal_weight, cfg.focal_gamma)


def training_target(cfg: TrainConfig) -> Callable[[np.ndarray], np.ndarray] | None:
    """What the loss is trained towards, drawn from each (augmented) label; None: the label itself.

    train.labels: ellipse trains Dice + BCE towards the ellipse inscribed in each box: a mask that
    spans its box like a tumor, at pi/4 of its area. A fixed prior, not learned: against the expert
    outlines of the Kaggle test slices the ellipses themselves score 0.64 per-image Dice, the boxes
    0.55 (results/outlines.md). Drawn after augmentation, so a rotated box gets its rotated ellipse.
    """
    return inscribed_ellipses if cfg.labels == "ellipse" else None


@torch.no_grad()
def validation_sums(model, criterion, images: np.ndarray, targets: np.ndarray, device: torch.device,
                    batch_size: int = 32, box_truths: np.ndarray | None = None) -> tuple[float, float, int]:
    """(sum of per-slice losses, sum of per-image Dice at threshold 0.5, slices): summable across processes.

    The loss is against `targets` (the labels, or what `training_target` draws from them), and so is
    the Dice, but with box labels it is against `box_truths` (`lesions.scored_boxes` of the labels):
    the Dice of the prediction's component boxes, what boxes can score honestly (an outline inside
    its box has pixel Dice well below 1 against it).
    In float32 whatever train.amp is: the choice of the best epoch should not depend on bf16 rounding
    (and the recorded runs were selected this way).
    """
    model.eval()
    loss_sum, dice_sum = 0.0, 0.0
    for rows, x in model_batches(images, device, batch_size):
        y = torch.from_numpy(np.asarray(targets[rows], dtype=np.float32))[:, None].to(device)
        logits = model(x)
        loss_sum += criterion(logits, y, x).item() * len(x)
        pred, truth = logits > 0, y.bool()
        if box_truths is not None:
            pred = torch.from_numpy(component_boxes(pred[:, 0].cpu().numpy()))[:, None].to(device).bool()
            truth = torch.from_numpy(np.asarray(box_truths[rows]))[:, None].to(device).bool()
        pred, truth = pred.flatten(1), truth.flatten(1)
        tp = (pred & truth).sum(1).cpu().numpy()
        fp = (pred & ~truth).sum(1).cpu().numpy()
        fn = (~pred & truth).sum(1).cpu().numpy()
        dice_sum += float(dice_scores(tp, fp, fn).sum())
    return loss_sum, dice_sum, len(images)


def _state_inputs(processed_dir: Path, split_dir: Path) -> list[Path]:
    arrays = [processed_dir / n for n in ("images.npy", "masks.npy", PSEUDO_MASKS_FILE, "index.csv")]
    return [p for p in arrays if p.exists()] + sorted(split_dir.glob("*.txt"))


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


@dataclass
class Progress:
    """Where a run stands after each epoch: what early stopping, the final checkpoint and a
    resumed run need besides the weights and the optimizer."""
    epoch: int = 0
    best_val_dice: float = -1.0
    best_epoch: int = 0
    best_weights: dict | None = None
    history: list[dict] = field(default_factory=list)  # one dvclive entry per epoch

    def record(self, entry: dict, net: torch.nn.Module) -> bool:
        """Log a finished epoch; keep a copy of the weights when validation Dice improved."""
        self.epoch += 1
        self.history.append(entry)
        if entry["val/dice"] <= self.best_val_dice:
            return False
        self.best_val_dice, self.best_epoch = entry["val/dice"], self.epoch
        self.best_weights = copy.deepcopy({k: v.cpu() for k, v in net.state_dict().items()})
        return True

    def stalled(self, patience: int) -> bool:
        return self.epoch - self.best_epoch >= patience


def _train(params: Params, ctx: distributed.Context, processed_dir: Path, split_dir: Path, model_path: Path,
           live_dir: Path, state_path: Path) -> dict:
    cfg, device = params.train, ctx.device
    configure_determinism(cfg.deterministic, device)
    autocast_dtype = amp_dtype(cfg.amp, device)  # first: an unusable setting fails before the data loads

    # Data: training slices (or patches of them) with augmentation seeded per (seed, epoch, slice);
    # validation slices whole, sharded across processes and summed.
    data = ProcessedData(processed_dir, split_dir)
    augment = build_augmentation(cfg.augment, cfg.patch_size, cfg.foreground_patches)
    target = training_target(cfg)
    loader = _loader(SliceDataset(*data.subset("train", cfg.pseudo_labels), augment, seed=params.seed, target=target),
                     cfg, ctx, params.seed)
    val_rows = data.rows["val"][ctx.rank::ctx.world]
    val_images, val_masks = data.images[val_rows], data.masks[val_rows]
    if cfg.pseudo_labels:
        val_targets = data.subset("val", pseudo=True)[1][ctx.rank::ctx.world]
    else:
        val_targets = target(val_masks) if target else val_masks  # drawn once: validation is not augmented
    val_box_truths = scored_boxes(val_masks, cfg.box_span) if cfg.scored_as_boxes else None

    # Model and optimisation. The initial weights are a function of the seed alone (evaluate's
    # untrained baseline rebuilds them); DDP then copies rank 0's to every process.
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    net = initial_model(params.model, params.seed).to(device, memory_format=memory_format)
    device_ids = [device] if device.type == "cuda" else None
    model = DistributedDataParallel(net, device_ids=device_ids) if ctx.world > 1 else net
    torch.manual_seed(params.seed + ctx.rank)  # processes share weights, not their dropout draws
    optimizer = build_optimizer(net.parameters(), cfg)
    schedule = LRSchedule(optimizer, cfg, len(loader))
    criterion = build_criterion(cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype == torch.float16)
    resumable = {"model": net, "optimizer": optimizer, "schedule": schedule, "scaler": scaler}
    # With train.ema_decay, a moving average of the weights is what validation scores and the
    # checkpoint keeps; the trained network only feeds it.
    average = WeightAverage(net, cfg.ema_decay) if cfg.ema_decay else None
    if average:
        resumable["average"] = average
    scored = average.module if average else net

    # A killed run with the same params, data and code continues where it stopped.
    fingerprint = training_state.fingerprint(
        params, _state_inputs(processed_dir, split_dir),
        [brainseg.train, brainseg.model, brainseg.losses, brainseg.lesions, brainseg.optim, brainseg.data.dataset,
         brainseg.data.masks])
    progress = _resume(state_path, fingerprint, resumable, cfg, ctx)

    started, start_epoch = time.perf_counter(), progress.epoch
    with Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None) if ctx.is_main else contextlib.nullcontext() as live:
        for entry in progress.history:  # DVC removed the earlier epochs' logs before this rerun
            _log_epoch(live, entry)
        while progress.epoch < cfg.epochs:
            if progress.stalled(cfg.patience):
                if ctx.is_main:
                    tqdm.write(f"early stop: no val dice gain for {cfg.patience} epochs")
                break
            train_loss = _train_epoch(model, loader, optimizer, schedule, criterion, scaler, autocast_dtype,
                                      cfg, ctx, progress.epoch, params.seed, memory_format, average)
            distributed.broadcast_buffers(ctx, scored)
            sums = validation_sums(scored, criterion, val_images, val_targets, device, box_truths=val_box_truths)
            loss_sum, dice_sum, count = distributed.sum_across(ctx, list(sums))
            schedule.epoch_end(dice_sum / count)
            entry = {"train/loss": train_loss, "val/loss": loss_sum / count, "val/dice": dice_sum / count,
                     "lr": schedule.lr}
            improved = progress.record(entry, scored)
            if ctx.is_main:
                _log_epoch(live, entry)
                tqdm.write(f"epoch {progress.epoch:3d}  train loss {train_loss:.4f}  val loss {entry['val/loss']:.4f}  "
                           f"val dice {entry['val/dice']:.4f}{'  *best' if improved else ''}")
            _save_state(state_path, fingerprint, progress, resumable, ctx)
        if ctx.is_main:
            live.summary["best_epoch"] = progress.best_epoch
            live.summary["best_val_dice"] = progress.best_val_dice

    best = {"val_dice": progress.best_val_dice, "epoch": progress.best_epoch}
    if ctx.is_main:
        save_checkpoint(model_path, progress.best_weights, params.model, params.preprocess.image_size, **best)
        state_path.unlink()  # finished: a later run must train, not resume
        with contextlib.suppress(OSError):
            state_path.parent.rmdir()
        minutes = (time.perf_counter() - started) / 60
        print(f"trained {progress.epoch} epochs ({progress.epoch - start_epoch} in this run, {minutes:.1f} min, "
              f"{ctx.world} x {device}); best val dice {progress.best_val_dice:.4f} at epoch {progress.best_epoch} "
              f"-> {model_path}")
    distributed.barrier(ctx)
    return best


def _resume(state_path: Path, fingerprint: str, resumable: dict, cfg: TrainConfig,
            ctx: distributed.Context) -> Progress:
    """The saved progress of an interrupted run with this fingerprint, its weights, optimizer,
    schedule, scaler and random-number states restored; else a fresh start."""
    state = training_state.load_state(state_path, fingerprint) if cfg.resume == "auto" else None
    if state is None:
        if cfg.resume == "never" and ctx.is_main and state_path.exists():
            print(f"train.resume is never: ignoring {state_path}")
        return Progress()
    for name, obj in resumable.items():
        obj.load_state_dict(state[name])
    training_state.restore_rng_state(state["rng"][ctx.rank])
    if ctx.is_main:
        print(f"resume: continuing after epoch {state['progress']['epoch']}/{cfg.epochs} from {state_path}")
    return Progress(**state["progress"])


def _save_state(state_path: Path, fingerprint: str, progress: Progress, resumable: dict,
                ctx: distributed.Context) -> None:
    """After every epoch: what `_resume` needs, every process's RNG states included."""
    rng = _gather_rng(ctx)
    if ctx.is_main:
        training_state.save_state(state_path, {
            "fingerprint": fingerprint, "progress": dict(vars(progress)), "rng": rng,
            **{name: obj.state_dict() for name, obj in resumable.items()}})
    distributed.barrier(ctx)


def _train_epoch(model, loader: DataLoader, optimizer, schedule: LRSchedule, criterion, scaler,
                 autocast_dtype: torch.dtype | None, cfg: TrainConfig, ctx: distributed.Context, epoch: int,
                 seed: int, memory_format: torch.memory_format, average: WeightAverage | None) -> float:
    """One pass over the training data, updating `average` (if any) after each step; returns the
    mean loss over all processes."""
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
        loss = criterion(logits, masks, images)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        if average:
            average.update()
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
