"""params.yaml -> typed, validated configuration.

Every stage reads its settings through `load_params`, so a bad value fails before any work
starts, with the dotted name of the key at fault.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from brainseg.errors import BrainsegError

SOURCES = ("phantom", "kaggle", "local")
REFERENCE_SOURCES = ("none", "kaggle", "local")
SPLIT_STRATEGIES = ("predefined", "random", "file")
UNLISTED_POLICIES = ("error", "exclude")
ARCHITECTURES = ("Unet", "UnetPlusPlus", "FPN", "DeepLabV3Plus")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("cosine", "poly", "onecycle", "plateau", "none")
DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("none", "bf16", "fp16")
RESUME_MODES = ("auto", "never")
BAD_IMAGE_POLICIES = ("error", "skip")
AUGMENT_PROBABILITIES = ("hflip", "affine", "elastic", "brightness_contrast", "gamma", "noise", "blur")
# The encoders of segmentation-models-pytorch 0.6.0 (pinned in requirements.txt), so that a typo
# fails when params.yaml is read rather than after download and preprocess: importing the package
# to ask would cost every stage 2-4 s. tests/test_config.py checks the list against the installed
# package. `tu-<name>` selects any timm model.
SMP_ENCODERS = frozenset("""
    densenet121 densenet161 densenet169 densenet201 dpn107 dpn131 dpn68 dpn68b dpn92 dpn98
    efficientnet-b0 efficientnet-b1 efficientnet-b2 efficientnet-b3 efficientnet-b4 efficientnet-b5
    efficientnet-b6 efficientnet-b7 inceptionresnetv2 inceptionv4 mit_b0 mit_b1 mit_b2 mit_b3 mit_b4 mit_b5
    mobilenet_v2 mobileone_s0 mobileone_s1 mobileone_s2 mobileone_s3 mobileone_s4 resnet101 resnet152
    resnet18 resnet34 resnet50 resnext101_32x16d resnext101_32x32d resnext101_32x48d resnext101_32x4d
    resnext101_32x8d resnext50_32x4d se_resnet101 se_resnet152 se_resnet50 se_resnext101_32x4d
    se_resnext50_32x4d senet154 timm-efficientnet-b0 timm-efficientnet-b1 timm-efficientnet-b2
    timm-efficientnet-b3 timm-efficientnet-b4 timm-efficientnet-b5 timm-efficientnet-b6 timm-efficientnet-b7
    timm-efficientnet-b8 timm-efficientnet-l2 timm-skresnet18 timm-skresnet34 timm-skresnext50_32x4d
    timm-tf_efficientnet_lite0 timm-tf_efficientnet_lite1 timm-tf_efficientnet_lite2
    timm-tf_efficientnet_lite3 timm-tf_efficientnet_lite4 vgg11 vgg11_bn vgg13 vgg13_bn vgg16 vgg16_bn
    vgg19 vgg19_bn xception""".split())
MAX_PHANTOM_SIZE = 2048  # 720 slices of 2048^2 already take 3 GB of raw arrays
# Local encoder weight files live here; dvc.yaml lists the folder as a dependency of train.
WEIGHTS_DIR = "weights"
SPLIT_FILES_DIR = "configs/splits"  # a dependency of the split stage: split files must live here
REFERENCE_MAPPINGS_DIR = "configs/references"  # a dependency of the evaluate stage, likewise


class ConfigError(BrainsegError, ValueError):
    """A value in params.yaml is missing or invalid; the message names the key."""


@dataclass(frozen=True)
class PhantomConfig:
    train: int = 480
    valid: int = 120
    test: int = 120
    image_size: int = 640
    difficulty: float = 0.5
    tumor_free_fraction: float = 0.15
    two_tumor_fraction: float = 0.15


@dataclass(frozen=True)
class DataConfig:
    source: str = "phantom"
    kaggle_dataset: str = "pkdarabi/brain-tumor-image-dataset-semantic-segmentation"
    local_path: str | None = None
    max_archive_mb: int = 4096
    download_retries: int = 3
    # Category names counted as tumor; empty = every category under the tumor supercategory.
    categories: tuple[str, ...] = ()
    phantom: PhantomConfig = field(default_factory=PhantomConfig)


@dataclass(frozen=True)
class PreprocessConfig:
    image_size: int = 128
    on_bad_image: str = "error"  # error | skip


@dataclass(frozen=True)
class SplitConfig:
    strategy: str = "predefined"
    train: float = 0.7
    val: float = 0.15
    test: float = 0.15
    file: str | None = None  # strategy file: a CSV (file,subset) under configs/splits/
    unlisted: str = "error"  # strategy file: images the file does not name are an error | excluded


@dataclass(frozen=True)
class ModelConfig:
    architecture: str = "Unet"
    encoder: str = "resnet18"
    encoder_weights: str | None = None
    decoder_channels: tuple[int, ...] = (128, 64, 32, 16, 8)
    dropout: float = 0.1


@dataclass(frozen=True)
class AugmentConfig:
    # Probabilities (p) and strengths of each augmentation, applied in this order.
    hflip: float = 0.5
    affine: float = 0.7  # p of one rotate/scale/shift draw
    rotate_deg: float = 15.0
    scale: float = 0.1
    shift: float = 0.05
    elastic: float = 0.0  # p
    elastic_alpha: float = 30.0  # displacement strength, pixels
    brightness_contrast: float = 0.5  # p
    brightness: float = 0.15  # +- limit
    contrast: float = 0.15  # +- limit
    gamma: float = 0.3  # p
    gamma_range: float = 0.2  # gamma in [1 - r, 1 + r]
    noise: float = 0.2  # p
    noise_std: float = 0.05  # max std, fraction of the intensity range
    blur: float = 0.0  # p
    blur_sigma: float = 1.0  # max Gaussian sigma, pixels


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 16  # global: split evenly across train.devices processes
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only (Nesterov)
    scheduler: str = "cosine"
    warmup_epochs: int = 1
    plateau_patience: int = 3  # plateau only: epochs without val Dice gain before the lr is cut
    plateau_factor: float = 0.5
    patience: int = 8
    dice_weight: float = 1.0
    bce_weight: float = 1.0
    focal_weight: float = 0.0
    focal_gamma: float = 2.0
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    amp: str = "none"
    channels_last: bool = False
    device: str = "auto"
    devices: int = 1
    deterministic: bool = True
    num_workers: int = 0
    pin_memory: bool = True
    resume: str = "auto"
    # Patch training: each step sees a random patch_size crop of the slice, so a larger
    # preprocess.image_size costs no more per step; validation and inference see whole slices.
    patch_size: int = 0  # 0 = the whole slice
    foreground_patches: float = 0.33  # share of patches placed to contain tumor (others uniform)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class EvaluateConfig:
    tune_on_val: bool = True
    threshold: float = 0.5
    tta: bool = True
    min_component_px: tuple[int, ...] = (0, 4, 8, 16, 32)
    overlays_per_group: int = 4


@dataclass(frozen=True)
class ExportConfig:
    opset: int = 18
    tolerance: float = 1e-4


@dataclass(frozen=True)
class ReferenceConfig:
    """A second truth for the test images (e.g. expert outlines where the labels are boxes)."""
    source: str = "none"  # none | kaggle | local, fetched like data.source; any supported layout
    kaggle_dataset: str | None = None
    local_path: str | None = None
    mapping: str | None = None  # CSV under configs/references/ pairing image and reference names


@dataclass(frozen=True)
class Params:
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


def read_yaml(path: Path, if_missing: str) -> Any:
    """The parsed file; a missing file or bad YAML raises ConfigError naming `path`."""
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {if_missing}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    raw = read_yaml(path, "file not found; run from the repository root")
    try:
        params = parse_params(raw or {})
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return params


def parse_params(raw: dict[str, Any]) -> Params:
    params = _build(Params, raw, "")
    _check(params)
    return params


def _build(cls, raw: Any, prefix: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'top level'} must be a mapping, got {raw!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]} (allowed here: {', '.join(known)})")
    values = {}
    for name, f in known.items():
        if name not in raw:
            continue
        key = prefix + name
        default = getattr(cls(), name)
        values[name] = _coerce(raw[name], default, str(f.type), key)
    return cls(**values)


def _coerce(value: Any, default: Any, type_hint: str, key: str):
    if hasattr(default, "__dataclass_fields__"):
        return _build(type(default), value, key + ".")
    if value is None:
        if "None" in str(type_hint):
            return None
        raise ConfigError(f"{key} must not be empty")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        # PyYAML reads `1e-4` (as written by `dvc exp run -S`) as a string.
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return number
    if isinstance(default, tuple):
        if "str" in type_hint:
            if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
                raise ConfigError(f"{key} must be a list of names, got {value!r}")
            return tuple(str(v) for v in value)
        if not isinstance(value, list) or not value or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
            raise ConfigError(f"{key} must be a non-empty list of non-negative integers, got {value!r}")
        return tuple(value)
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key} {message}")


def _require_csv_under(value: str | None, folder: str, key: str, stage: str, when: str) -> None:
    parts = Path(value or "").parts
    _require(parts[:2] == tuple(folder.split("/")) and len(parts) > 2 and ".." not in parts
             and parts[-1].endswith(".csv"), key,
             f"must name a .csv file under {folder}/ (a tracked dependency of the {stage} stage) {when}; "
             f"got {value!r}")


def _one_of(value: str, choices: tuple[str, ...], key: str) -> None:
    _require(value in choices, key, f"must be one of {', '.join(choices)}; got {value!r}")


def _check(p: Params) -> None:
    _one_of(p.data.source, SOURCES, "data.source")
    if p.data.source == "local":
        _require(bool(p.data.local_path), "data.local_path", "must name a zip or folder when data.source is local")
    if p.data.source == "kaggle":
        _require(kaggle_dataset_parts(p.data.kaggle_dataset) is not None, "data.kaggle_dataset",
                 f"must look like owner/dataset-slug[/version number]; got {p.data.kaggle_dataset!r}")
    _require(p.data.max_archive_mb > 0, "data.max_archive_mb", "must be positive")
    _require(p.data.download_retries >= 1, "data.download_retries", "must be at least 1")
    ph = p.data.phantom
    for name in ("train", "valid", "test"):
        _require(getattr(ph, name) >= 1, f"data.phantom.{name}", "must be at least 1")
    _require(64 <= ph.image_size <= MAX_PHANTOM_SIZE, "data.phantom.image_size",
             f"must lie in [64, {MAX_PHANTOM_SIZE}], got {ph.image_size}")
    _require(0.0 <= ph.difficulty <= 1.0, "data.phantom.difficulty", "must lie in [0, 1]")
    _require(0.0 <= ph.tumor_free_fraction <= 1.0, "data.phantom.tumor_free_fraction", "must lie in [0, 1]")
    _require(0.0 <= ph.two_tumor_fraction <= 1.0, "data.phantom.two_tumor_fraction", "must lie in [0, 1]")
    ref = p.reference
    _one_of(ref.source, REFERENCE_SOURCES, "reference.source")
    if ref.source == "local":
        _require(bool(ref.local_path), "reference.local_path", "must name a zip or folder when reference.source is local")
    if ref.source == "kaggle":
        _require(kaggle_dataset_parts(ref.kaggle_dataset or "") is not None, "reference.kaggle_dataset",
                 f"must look like owner/dataset-slug[/version number]; got {ref.kaggle_dataset!r}")
    if ref.mapping is not None:
        _require_csv_under(ref.mapping, REFERENCE_MAPPINGS_DIR, "reference.mapping", "evaluate", "or null")

    # Encoders downsample 2**5 = 32 times.
    _require(p.preprocess.image_size >= 32 and p.preprocess.image_size % 32 == 0,
             "preprocess.image_size", f"must be a multiple of 32 (at least 32), got {p.preprocess.image_size}")

    _one_of(p.preprocess.on_bad_image, BAD_IMAGE_POLICIES, "preprocess.on_bad_image")
    _one_of(p.split.strategy, SPLIT_STRATEGIES, "split.strategy")
    _one_of(p.split.unlisted, UNLISTED_POLICIES, "split.unlisted")
    if p.split.strategy == "file":
        _require_csv_under(p.split.file, SPLIT_FILES_DIR, "split.file", "split", "when split.strategy is file")
    fractions = (p.split.train, p.split.val, p.split.test)
    _require(all(f > 0 for f in fractions) and abs(sum(fractions) - 1.0) < 1e-6,
             "split.train/val/test", f"must be positive and sum to 1, got {fractions}")

    _require(0 <= p.seed < 2**32, "seed", f"must lie in [0, 2**32) (NumPy's seed range), got {p.seed}")

    _one_of(p.model.architecture, ARCHITECTURES, "model.architecture")
    encoder = p.model.encoder
    if not encoder.startswith("tu-"):
        close = difflib.get_close_matches(encoder, SMP_ENCODERS, n=3)
        _require(encoder in SMP_ENCODERS, "model.encoder",
                 f"{encoder!r} is not a segmentation-models-pytorch encoder"
                 + (f"; did you mean {', '.join(close)}?" if close else "; e.g. resnet18, resnet34, efficientnet-b0, "
                    "or tu-<timm model>"))
    _require(len(p.model.decoder_channels) == 5 and min(p.model.decoder_channels) > 0,
             "model.decoder_channels", "must list 5 positive channel counts")
    _require(0.0 <= p.model.dropout < 1.0, "model.dropout", "must lie in [0, 1)")

    t = p.train
    _require(t.epochs >= 1, "train.epochs", "must be at least 1")
    _require(t.devices >= 1, "train.devices", "must be at least 1")
    _require(t.batch_size >= 2 * t.devices and t.batch_size % t.devices == 0, "train.batch_size",
             f"must be a multiple of train.devices ({t.devices}) giving at least 2 slices per process "
             f"(batch norm needs two); got {t.batch_size}")
    _one_of(t.optimizer, OPTIMIZERS, "train.optimizer")
    _require(t.lr > 0, "train.lr", "must be positive")
    _require(t.weight_decay >= 0, "train.weight_decay", "must not be negative")
    _require(0 <= t.momentum < 1, "train.momentum", "must lie in [0, 1)")
    _one_of(t.scheduler, SCHEDULERS, "train.scheduler")
    _require(0 <= t.warmup_epochs < t.epochs, "train.warmup_epochs", "must lie in [0, train.epochs)")
    _require(t.plateau_patience >= 1, "train.plateau_patience", "must be at least 1")
    _require(0 < t.plateau_factor < 1, "train.plateau_factor", "must lie in (0, 1)")
    _require(t.patience >= 1, "train.patience", "must be at least 1")
    weights = (t.dice_weight, t.bce_weight, t.focal_weight)
    _require(min(weights) >= 0 and sum(weights) > 0, "train.dice_weight/bce_weight/focal_weight",
             "must be non-negative and not all zero")
    _require(t.focal_gamma >= 0, "train.focal_gamma", "must not be negative")
    _require(t.grad_clip >= 0, "train.grad_clip", "must not be negative (0 turns clipping off)")
    _one_of(t.amp, AMP_MODES, "train.amp")
    _one_of(t.device, DEVICES, "train.device")
    _require(t.num_workers >= 0, "train.num_workers", "must not be negative")
    _one_of(t.resume, RESUME_MODES, "train.resume")
    size = p.preprocess.image_size
    _require(t.patch_size == 0 or (t.patch_size % 32 == 0 and 32 <= t.patch_size <= size), "train.patch_size",
             f"must be 0 (whole slices) or a multiple of 32 in [32, preprocess.image_size = {size}], "
             f"got {t.patch_size}")
    _require(0 <= t.foreground_patches <= 1, "train.foreground_patches", "is a share and must lie in [0, 1]")
    for f in fields(AugmentConfig):
        value = getattr(t.augment, f.name)
        _require(value >= 0, f"train.augment.{f.name}", "must not be negative")
        if f.name in AUGMENT_PROBABILITIES:
            _require(value <= 1, f"train.augment.{f.name}", "is a probability and must lie in [0, 1]")
    _require(t.augment.gamma_range < 1, "train.augment.gamma_range", "must be below 1")
    if is_local_weights(p.model.encoder_weights):
        parts = Path(p.model.encoder_weights).parts
        _require(parts[:1] == (WEIGHTS_DIR,) and len(parts) > 1 and ".." not in parts, "model.encoder_weights",
                 f"must be null, a hub name such as imagenet, or a file under {WEIGHTS_DIR}/ (a tracked "
                 f"dependency of the train stage); got {p.model.encoder_weights!r}")

    _require(0.0 < p.evaluate.threshold < 1.0, "evaluate.threshold", "must lie in (0, 1)")
    _require(p.evaluate.overlays_per_group >= 1, "evaluate.overlays_per_group", "must be at least 1")
    import onnx  # here, not at the top: 0.2 s that only this check needs

    newest = onnx.defs.onnx_opset_version()
    _require(17 <= p.export.opset <= newest, "export.opset",
             f"must lie in [17, {newest}] (the installed onnx knows opsets up to {newest}), got {p.export.opset}")
    _require(p.export.tolerance > 0, "export.tolerance", "must be positive")


def kaggle_dataset_parts(name: str) -> tuple[str, str, str | None] | None:
    """'owner/slug' or 'owner/slug/3' -> (owner, slug, version or None); None when malformed."""
    parts = name.split("/")
    if len(parts) not in (2, 3) or not all(parts) or (len(parts) == 3 and not parts[2].isdigit()):
        return None
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def is_local_weights(encoder_weights: str | None) -> bool:
    """A file path (has a folder or an extension), as opposed to a hub name like `imagenet`."""
    return encoder_weights is not None and ("/" in encoder_weights or bool(Path(encoder_weights).suffix))
