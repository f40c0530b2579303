"""Processed arrays -> torch datasets, with albumentations augmentation for training."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from brainseg.config import AugmentConfig
from brainseg.data.index import PSEUDO_MASKS_FILE, read_index, sample_keys
from brainseg.data.split import read_split


class ProcessedData:
    """Memory-mapped images/masks (and pseudo-masks, where preprocess drew them) plus the index and the
    split lists."""

    def __init__(self, processed_dir: Path, split_dir: Path):
        self.processed_dir = processed_dir
        self.images = np.load(processed_dir / "images.npy", mmap_mode="r")
        self.masks = np.load(processed_dir / "masks.npy", mmap_mode="r")
        pseudo = processed_dir / PSEUDO_MASKS_FILE
        self.pseudo_masks = np.load(pseudo, mmap_mode="r") if pseudo.exists() else None
        self.index = read_index(processed_dir)
        row_of = dict(zip(sample_keys(self.index), range(len(self.index))))
        try:
            self.rows = {s: np.array([row_of[k] for k in keys], dtype=np.int64)
                         for s, keys in read_split(split_dir).items()}
        except KeyError as err:
            raise ValueError(f"{split_dir} names {err} which is not in {processed_dir}/index.csv; "
                             "rerun the split stage (dvc repro)") from None

    def subset(self, name: str, pseudo: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of a split subset; with `pseudo`, the pseudo-masks in place of the labels."""
        rows = self.rows[name]
        if not pseudo:
            return self.images[rows], self.masks[rows]
        if self.pseudo_masks is None:
            raise ValueError(f"{self.processed_dir} has no {PSEUDO_MASKS_FILE}: set preprocess.pseudo_masks: grabcut "
                             "and rerun preprocess (dvc repro)")
        return self.images[rows], self.pseudo_masks[rows]


def build_augmentation(cfg: AugmentConfig, patch_size: int = 0, foreground_patches: float = 0.0) -> A.Compose:
    """The training augmentation; a transform whose probability or strength is 0 is left out.

    With a patch size, the patch is cut after the geometric transforms (their empty corners stay
    at the slice's edges) and before the intensity ones (which then touch fewer pixels).
    """
    gamma = (round(100 * (1 - cfg.gamma_range)), round(100 * (1 + cfg.gamma_range)))
    geometric = [
        (cfg.hflip, 1.0, lambda: A.HorizontalFlip(p=cfg.hflip)),
        (cfg.affine, cfg.scale + cfg.rotate_deg + cfg.shift, lambda: A.Affine(
            scale=(1 - cfg.scale, 1 + cfg.scale), rotate=(-cfg.rotate_deg, cfg.rotate_deg),
            translate_percent=(-cfg.shift, cfg.shift), border_mode=cv2.BORDER_CONSTANT, p=cfg.affine)),
        # Smooth displacement field (sigma 8 px) scaled by alpha: tissue deformation, not pixel noise.
        (cfg.elastic, cfg.elastic_alpha, lambda: A.ElasticTransform(
            alpha=cfg.elastic_alpha, sigma=8.0, border_mode=cv2.BORDER_CONSTANT, p=cfg.elastic)),
    ]
    intensity = [
        (cfg.brightness_contrast, cfg.brightness + cfg.contrast, lambda: A.RandomBrightnessContrast(
            brightness_limit=cfg.brightness, contrast_limit=cfg.contrast, p=cfg.brightness_contrast)),
        (cfg.gamma, cfg.gamma_range, lambda: A.RandomGamma(gamma_limit=gamma, p=cfg.gamma)),
        (cfg.noise, cfg.noise_std, lambda: A.GaussNoise(std_range=(min(0.01, cfg.noise_std), cfg.noise_std),
                                                        p=cfg.noise)),
        (cfg.blur, cfg.blur_sigma, lambda: A.GaussianBlur(sigma_limit=(min(0.1, cfg.blur_sigma), cfg.blur_sigma),
                                                          p=cfg.blur)),
    ]
    patch = [(1.0, patch_size, lambda: patch_sampler(patch_size, foreground_patches))]
    return A.Compose([make() for p, strength, make in geometric + patch + intensity if p > 0 and strength > 0])


def patch_sampler(size: int, foreground_patches: float) -> A.BasicTransform:
    """A random size x size crop: with probability `foreground_patches` one holding tumor pixels
    (any crop of a tumor-free slice), else one anywhere on the slice.

    Uniform crops alone would rarely hold a small tumor (a median tumor covers 1.2% of a slice),
    and tumor-only crops would teach the model that every view holds one.
    """
    with_tumor = A.CropNonEmptyMaskIfExists(size, size)
    anywhere = A.RandomCrop(size, size)
    if foreground_patches in (0.0, 1.0):
        return with_tumor if foreground_patches == 1.0 else anywhere
    with_tumor.p, anywhere.p = foreground_patches, 1.0 - foreground_patches  # OneOf's choice weights
    return A.OneOf([with_tumor, anywhere], p=1.0)


class SliceDataset(Dataset):
    """Yields (image, mask) uint8 tensors of shape 1 x H x W; mask values in {0, 1}.

    uint8 rather than float: a quarter of the bytes through worker queues and host-to-GPU copies;
    the training loop converts on the device (`to_model_input`). Augmentation is a pure function
    of (seed, epoch, item): results do not depend on the number of loader workers or on where a
    resumed run restarts. `target` turns the augmented label into what the loss is trained towards
    (e.g. `masks.inscribed_ellipses` for box labels), here in the loader's workers rather than in
    the training step.
    """

    def __init__(self, images: np.ndarray, masks: np.ndarray, augment: A.Compose | None = None, seed: int = 0,
                 target: Callable[[np.ndarray], np.ndarray] | None = None):
        self.images, self.masks, self.augment, self.seed, self.target = images, masks, augment, seed, target
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = np.asarray(self.images[i]), np.asarray(self.masks[i])
        if self.augment is not None:
            self.augment.set_random_seed(int(np.random.SeedSequence([self.seed, self.epoch, i]).generate_state(1)[0]))
            out = self.augment(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        if self.target is not None:
            mask = self.target(mask)
        # np.array copies: memory-mapped rows are read-only, and torch tensors must own writable memory.
        return torch.from_numpy(np.array(image))[None], torch.from_numpy(np.array(mask))[None]

