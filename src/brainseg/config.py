"""params.yaml -> typed, validated configuration.

Every stage reads its settings through `load_params`, so a bad value fails before any work
starts, with the dotted name of the key at fault.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar, get_args, get_origin, get_type_hints

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
LABEL_KINDS = ("mask", "box", "ellipse", "pseudo")
PSEUDO_MASK_METHODS = ("none", "grabcut")
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
MAX_PHANTOM_SLICES = 10_000  # per split: the phantom numbers its source slices modulo a prime above this
# Local encoder weight files live here; dvc.yaml lists the folder as a dependency of train.
WEIGHTS_DIR = "weights"
SPLIT_FILES_DIR = "configs/splits"  # a dependency of the split stage: split files must live here
REFERENCE_MAPPINGS_DIR = "configs/references"  # a dependency of the evaluate stage, likewise


class ConfigError(BrainsegError, ValueError):
    """A value in params.yaml is missing or invalid; the message names the key."""


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key} {message}")


def _one_of(value: str, choices: tuple[str, ...], key: str) -> None:
    _require(value in choices, key, f"must be one of {', '.join(choices)}; got {value!r}")


def _require_csv_under(value: str | None, folder: str, key: str, stage: str, when: str) -> None:
    parts = Path(value or "").parts
    _require(parts[:2] == tuple(folder.split("/")) and len(parts) > 2 and ".." not in parts
             and parts[-1].endswith(".csv"), key,
             f"must name a .csv file under {folder}/ (a tracked dependency of the {stage} stage) {when}; "
             f"got {value!r}")


def _require_kaggle_dataset(name: str | None, key: str) -> None:
    _require(kaggle_dataset_parts(name or "") is not None, key,
             f"must look like owner/dataset-slug[/version number]; got {name!r}")


# Each section checks its own values when it is built (from params.yaml or in code); `KEY` is
# its place in params.yaml, so that every message names the key at fault. Checks that span
# sections, or that tie a value to the pipeline's tracked folders, are Params'.

@dataclass(frozen=True)
class PhantomConfig:
    """The built-in synthetic slices: split sizes and how hard they are to segment."""
    KEY: ClassVar[str] = "data.phantom"
    train: int = 480
    valid: int = 120
    test: int = 120
    image_size: int = 640
    difficulty: float = 0.5  # 0 easy .. 1 hard: noise, bias field, texture, lower tumor contrast
    tumor_free_fraction: float = 0.15
    two_tumor_fraction: float = 0.15

    def __post_init__(self) -> None:
        for name in ("train", "valid", "test"):
            count = getattr(self, name)
            _require(1 <= count <= MAX_PHANTOM_SLICES, f"{self.KEY}.{name}",
                     f"must lie in [1, {MAX_PHANTOM_SLICES}], got {count}")
        _require(64 <= self.image_size <= MAX_PHANTOM_SIZE, f"{self.KEY}.image_size",
                 f"must lie in [64, {MAX_PHANTOM_SIZE}], got {self.image_size}")
        for name in ("difficulty", "tumor_free_fraction", "two_tumor_fraction"):
            _require(0.0 <= getattr(self, name) <= 1.0, f"{self.KEY}.{name}", "must lie in [0, 1]")
        _require(self.tumor_free_fraction + self.two_tumor_fraction <= 1.0,
                 f"{self.KEY}.tumor_free_fraction/two_tumor_fraction",
                 f"must sum to at most 1, got {self.tumor_free_fraction} + {self.two_tumor_fraction}")


@dataclass(frozen=True)
class DataConfig:
    KEY: ClassVar[str] = "data"
    source: str = "phantom"
    kaggle_dataset: str = "pkdarabi/brain-tumor-image-dataset-semantic-segmentation"
    local_path: str | None = None
    max_archive_mb: int = 4096
    download_retries: int = 3
    # Category names counted as tumor; empty = every category under the tumor supercategory.
    categories: tuple[str, ...] = ()
    phantom: PhantomConfig = field(default_factory=PhantomConfig)

    def __post_init__(self) -> None:
        _one_of(self.source, SOURCES, "data.source")
        if self.source == "local":
            _require(bool(self.local_path), "data.local_path", "must name a zip or folder when data.source is local")
        if self.source == "kaggle":
            _require_kaggle_dataset(self.kaggle_dataset, "data.kaggle_dataset")
        _require(self.max_archive_mb > 0, "data.max_archive_mb", "must be positive")
        _require(self.download_retries >= 1, "data.download_retries", "must be at least 1")


@dataclass(frozen=True)
class ReferenceConfig:
    """A second truth for the test images (e.g. expert outlines where the labels are boxes)."""
    KEY: ClassVar[str] = "reference"
    source: str = "none"  # none | kaggle | local, fetched like data.source; any supported layout
    kaggle_dataset: str | None = None
    local_path: str | None = None
    mapping: str | None = None  # CSV under configs/references/ pairing image and reference names

    def __post_init__(self) -> None:
        _one_of(self.source, REFERENCE_SOURCES, "reference.source")
        if self.source == "local":
            _require(bool(self.local_path), "reference.local_path",
                     "must name a zip or folder when reference.source is local")
        if self.source == "kaggle":
            _require_kaggle_dataset(self.kaggle_dataset, "reference.kaggle_dataset")
        if self.mapping is not None:
            _require_csv_under(self.mapping, REFERENCE_MAPPINGS_DIR, "reference.mapping", "evaluate", "or null")


@dataclass(frozen=True)
class PreprocessConfig:
    KEY: ClassVar[str] = "preprocess"
    image_size: int = 128
    on_bad_image: str = "error"  # error | skip
    # Pseudo-masks drawn from box labels at (up to) pseudo_mask_size px, stored beside the labels for
    # train.labels: pseudo; none skips the work.
    pseudo_masks: str = "none"  # none | grabcut
    pseudo_mask_size: int = 512

    def __post_init__(self) -> None:
        # Encoders downsample 2**5 = 32 times.
        _require(self.image_size >= 32 and self.image_size % 32 == 0, "preprocess.image_size",
                 f"must be a multiple of 32 (at least 32), got {self.image_size}")
        _one_of(self.on_bad_image, BAD_IMAGE_POLICIES, "preprocess.on_bad_image")
        _one_of(self.pseudo_masks, PSEUDO_MASK_METHODS, "preprocess.pseudo_masks")
        _require(self.pseudo_mask_size >= 32, "preprocess.pseudo_mask_size", f"must be at least 32, got "
                 f"{self.pseudo_mask_size}")


@dataclass(frozen=True)
class SplitConfig:
    KEY: ClassVar[str] = "split"
    strategy: str = "predefined"
    train: float = 0.7
    val: float = 0.15
    test: float = 0.15
    file: str | None = None  # strategy file: a CSV (file,subset) under configs/splits/
    unlisted: str = "error"  # strategy file: images the file does not name are an error | excluded

    def __post_init__(self) -> None:
        _one_of(self.strategy, SPLIT_STRATEGIES, "split.strategy")
        _one_of(self.unlisted, UNLISTED_POLICIES, "split.unlisted")
        if self.strategy == "file":
            _require_csv_under(self.file, SPLIT_FILES_DIR, "split.file", "split", "when split.strategy is file")
        fractions = (self.train, self.val, self.test)
        _require(all(f > 0 for f in fractions) and abs(sum(fractions) - 1.0) < 1e-6,
                 "split.train/val/test", f"must be positive and sum to 1, got {fractions}")


@dataclass(frozen=True)
class ModelConfig:
    KEY: ClassVar[str] = "model"
    architecture: str = "Unet"
    encoder: str = "resnet18"
    encoder_weights: str | None = None
    decoder_channels: tuple[int, ...] = (128, 64, 32, 16, 8)
    dropout: float = 0.1

    def __post_init__(self) -> None:
        _one_of(self.architecture, ARCHITECTURES, "model.architecture")
        if not self.encoder.startswith("tu-"):
            close = difflib.get_close_matches(self.encoder, SMP_ENCODERS, n=3)
            _require(self.encoder in SMP_ENCODERS, "model.encoder",
                     f"{self.encoder!r} is not a segmentation-models-pytorch encoder"
                     + (f"; did you mean {', '.join(close)}?" if close
                        else "; e.g. resnet18, resnet34, efficientnet-b0, or tu-<timm model>"))
        _require(len(self.decoder_channels) == 5 and min(self.decoder_channels) > 0,
                 "model.decoder_channels", "must list 5 positive channel counts")
        _require(0.0 <= self.dropout < 1.0, "model.dropout", "must lie in [0, 1)")


@dataclass(frozen=True)
class AugmentConfig:
    KEY: ClassVar[str] = "train.augment"
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

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            _require(value >= 0, f"train.augment.{f.name}", "must not be negative")
            if f.name in AUGMENT_PROBABILITIES:
                _require(value <= 1, f"train.augment.{f.name}", "is a probability and must lie in [0, 1]")
        _require(self.gamma_range < 1, "train.augment.gamma_range", "must be below 1")


@dataclass(frozen=True)
class BoxLossConfig:
    """Weights of the box-supervision terms (train.labels: box; losses.BoxSupervisionLoss)."""
    KEY: ClassVar[str] = "train.box"
    outside: float = 1.0  # background everywhere outside the boxes (exact there)
    projection: float = 1.0  # tightness: the mask touches every side of its box and nothing beyond
    pairwise: float = 1.0  # neighbours of similar intensity inside a box share a label
    span: float = 1.0  # centred share of each box side the mask must span: 1 = tight boxes, less for loose ones

    def __post_init__(self) -> None:
        for f in fields(self):
            _require(getattr(self, f.name) >= 0, f"{self.KEY}.{f.name}", "must not be negative")
        _require(0 < self.span <= 1, f"{self.KEY}.span",
                 f"is a share of the box side and must lie in (0, 1], got {self.span}")
        _require(self.outside + self.projection > 0, f"{self.KEY}.outside/projection",
                 "must not both be 0: the pairwise term alone is satisfied by an empty mask")


@dataclass(frozen=True)
class TrainConfig:
    KEY: ClassVar[str] = "train"
    epochs: int = 24
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
    ema_decay: float = 0.0  # per-step decay of a moving average of the weights, validated and saved; 0 = off
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
    # What the labels are: masks (outlines) trained with soft Dice + BCE, or boxes trained with
    # losses that hold exactly for boxes (`box`), with Dice + BCE towards the ellipse inscribed in
    # each box (`ellipse`) or towards the pseudo-masks preprocess drew from them (`pseudo`), so that
    # the model learns the tumor, not its box.
    labels: str = "mask"
    box: BoxLossConfig = field(default_factory=BoxLossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    @property
    def box_labels(self) -> bool:
        """The labels are boxes (trained as boxes, or towards ellipses or pseudo-masks drawn from them)."""
        return self.labels != "mask"

    @property
    def pseudo_labels(self) -> bool:
        """Trained towards the pseudo-masks preprocess drew from the boxes (preprocess.pseudo_masks)."""
        return self.labels == "pseudo"

    @property
    def scored_as_boxes(self) -> bool:
        """Epochs and post-processing are chosen by scoring masks as boxes: for box and ellipse labels.
        Towards pseudo-masks they are chosen against the validation slices' pseudo-masks, which are
        as box-only as the boxes, instead: scored as boxes, a mask that keeps to the tumor loses to
        one inflated to its loose box."""
        return self.labels in ("box", "ellipse")

    @property
    def box_span(self) -> float:
        """The central share of each label box side a tumor is expected to span: train.box.span in
        box mode (its projection term, and the boxes masks are scored against), else the whole box."""
        return self.box.span if self.labels == "box" else 1.0

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "train.epochs", "must be at least 1")
        _one_of(self.labels, LABEL_KINDS, "train.labels")
        _require(self.devices >= 1, "train.devices", "must be at least 1")
        _require(self.batch_size >= 2 * self.devices and self.batch_size % self.devices == 0, "train.batch_size",
                 f"must be a multiple of train.devices ({self.devices}) giving at least 2 slices per process "
                 f"(batch norm needs two); got {self.batch_size}")
        _one_of(self.optimizer, OPTIMIZERS, "train.optimizer")
        _require(self.lr > 0, "train.lr", "must be positive")
        _require(self.weight_decay >= 0, "train.weight_decay", "must not be negative")
        _require(0 <= self.momentum < 1, "train.momentum", "must lie in [0, 1)")
        _one_of(self.scheduler, SCHEDULERS, "train.scheduler")
        _require(0 <= self.warmup_epochs < self.epochs, "train.warmup_epochs", "must lie in [0, train.epochs)")
        _require(self.plateau_patience >= 1, "train.plateau_patience", "must be at least 1")
        _require(0 < self.plateau_factor < 1, "train.plateau_factor", "must lie in (0, 1)")
        _require(self.patience >= 1, "train.patience", "must be at least 1")
        weights = (self.dice_weight, self.bce_weight, self.focal_weight)
        _require(min(weights) >= 0 and sum(weights) > 0, "train.dice_weight/bce_weight/focal_weight",
                 "must be non-negative and not all zero")
        _require(self.focal_gamma >= 0, "train.focal_gamma", "must not be negative")
        _require(self.grad_clip >= 0, "train.grad_clip", "must not be negative (0 turns clipping off)")
        _require(0 <= self.ema_decay < 1, "train.ema_decay", "must lie in [0, 1) (0 turns the average off)")
        _one_of(self.amp, AMP_MODES, "train.amp")
        _one_of(self.device, DEVICES, "train.device")
        _require(self.num_workers >= 0, "train.num_workers", "must not be negative")
        _one_of(self.resume, RESUME_MODES, "train.resume")
        _require(self.patch_size == 0 or (self.patch_size >= 32 and self.patch_size % 32 == 0), "train.patch_size",
                 f"must be 0 (whole slices) or a multiple of 32 (at least 32), got {self.patch_size}")
        _require(0 <= self.foreground_patches <= 1, "train.foreground_patches", "is a share and must lie in [0, 1]")


@dataclass(frozen=True)
class EvaluateConfig:
    KEY: ClassVar[str] = "evaluate"
    tune_on_val: bool = True
    threshold: float = 0.5
    tta: bool = True
    min_component_px: tuple[int, ...] = (0, 4, 8, 16, 32)
    max_components: tuple[int, ...] = (0,)
    overlays_per_group: int = 4

    def __post_init__(self) -> None:
        _require(0.0 < self.threshold < 1.0, "evaluate.threshold", "must lie in (0, 1)")
        for key in ("min_component_px", "max_components"):
            values = getattr(self, key)
            _require(len(values) > 0 and min(values) >= 0, f"evaluate.{key}",
                     f"must list candidates of at least 0 (0: no filter), got {list(values)}")
        _require(self.overlays_per_group >= 1, "evaluate.overlays_per_group", "must be at least 1")


@dataclass(frozen=True)
class ExportConfig:
    KEY: ClassVar[str] = "export"
    opset: int = 18
    # Max |probability difference| of ONNX Runtime and TorchScript against PyTorch. 1e-3: at 192 px
    # their kernels differ by up to ~3e-4 on trained models (no mask changes; a GPU-trained 256-px model: 1.6e-3);
    # a broken export differs by far more.
    tolerance: float = 1e-3

    def __post_init__(self) -> None:
        import onnx  # here, not at the top: 0.2 s that only this check needs

        newest = onnx.defs.onnx_opset_version()
        _require(17 <= self.opset <= newest, "export.opset",
                 f"must lie in [17, {newest}] (the installed onnx knows opsets up to {newest}), got {self.opset}")
        _require(self.tolerance > 0, "export.tolerance", "must be positive")


@dataclass(frozen=True)
class Params:
    KEY: ClassVar[str] = ""
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def __post_init__(self) -> None:
        _require(0 <= self.seed < 2**32, "seed", f"must lie in [0, 2**32) (NumPy's seed range), got {self.seed}")
        size = self.preprocess.image_size
        _require(not self.train.pseudo_labels or self.preprocess.pseudo_masks != "none", "train.labels",
                 "pseudo trains towards pseudo-masks that preprocess draws from the boxes: set "
                 "preprocess.pseudo_masks: grabcut as well")
        _require(self.train.patch_size <= size, "train.patch_size",
                 f"must not exceed preprocess.image_size ({size}), got {self.train.patch_size}")
        if is_local_weights(self.model.encoder_weights):
            parts = Path(self.model.encoder_weights).parts
            _require(parts[:1] == (WEIGHTS_DIR,) and len(parts) > 1 and ".." not in parts, "model.encoder_weights",
                     f"must be null, a hub name such as imagenet, or a file under {WEIGHTS_DIR}/ (a tracked "
                     f"dependency of the train stage); got {self.model.encoder_weights!r}")


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
    return _build(Params, raw)


def _build(cls, raw: Any):
    """`cls` from a parsed YAML mapping: every value converted to its field's declared type."""
    prefix = f"{cls.KEY}." if cls.KEY else ""
    if not isinstance(raw, dict):
        raise ConfigError(f"{cls.KEY or 'top level'} must be a mapping, got {raw!r}")
    hints = get_type_hints(cls)
    allowed = [f.name for f in fields(cls)]
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]} (allowed here: {', '.join(allowed)})")
    return cls(**{name: _coerce(raw[name], hints[name], prefix + name) for name in allowed if name in raw})


def _coerce(value: Any, hint: Any, key: str):
    """`value` as type `hint` (bool, int, float, str, a section, tuple[...], or X | None)."""
    if is_dataclass(hint):
        return _build(hint, value)
    args = get_args(hint)
    if type(None) in args:  # X | None
        if value is None:
            return None
        (hint,) = [a for a in args if a is not type(None)]
    if value is None:
        raise ConfigError(f"{key} must not be empty")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        # PyYAML reads `1e-4` (as written by `dvc exp run -S`) as a string.
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return number
    if get_origin(hint) is tuple and get_args(hint)[0] is str:
        if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
            raise ConfigError(f"{key} must be a list of names, got {value!r}")
        return tuple(str(v) for v in value)
    if get_origin(hint) is tuple:
        if not isinstance(value, list) or not value or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
            raise ConfigError(f"{key} must be a non-empty list of non-negative integers, got {value!r}")
        return tuple(value)
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value


def kaggle_dataset_parts(name: str) -> tuple[str, str, str | None] | None:
    """'owner/slug' or 'owner/slug/3' -> (owner, slug, version or None); None when malformed."""
    parts = name.split("/")
    if len(parts) not in (2, 3) or not all(parts) or (len(parts) == 3 and not parts[2].isdigit()):
        return None
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def is_local_weights(encoder_weights: str | None) -> bool:
    """A file path (has a folder or an extension), as opposed to a hub name like `imagenet`."""
    return encoder_weights is not None and ("/" in encoder_weights or bool(Path(encoder_weights).suffix))
