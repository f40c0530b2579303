"""Processed arrays -> torch datasets, with albumentations augmentation for training."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from brainseg.config import AugmentConfig
from brainseg.data.cache import read_index
from brainseg.data.split import read_split, sample_keys


class ProcessedData:
    """Memory-mapped images/masks plus the index and the split lists."""

    def __init__(self, processed_dir: Path, split_dir: Path):
        self.images = np.load(processed_dir / "images.npy", mmap_mode="r")
        self.masks = np.load(processed_dir / "masks.npy", mmap_mode="r")
        self.index = read_index(processed_dir)
        row_of = dict(zip(sample_keys(self.index), range(len(self.index))))
        try:
            self.rows = {s: np.array([row_of[k] for k in keys], dtype=np.int64)
                         for s, keys in read_split(split_dir).items()}
        except KeyError as err:
            raise ValueError(f"{split_dir} names {err} which is not in {processed_dir}/index.csv; "
                             "rerun the split stage (dvc repro)") from None

    def subset(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        rows = self.rows[name]
        return self.images[rows], self.masks[rows]


def build_augmentation(cfg: AugmentConfig) -> A.Compose:
    return A.Compose([
        A.HorizontalFlip(p=cfg.hflip),
        A.Affine(scale=(1 - cfg.scale, 1 + cfg.scale), rotate=(-cfg.rotate_deg, cfg.rotate_deg),
                 translate_percent=(-cfg.shift, cfg.shift), border_mode=cv2.BORDER_CONSTANT, p=cfg.affine),
        A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=cfg.brightness_contrast),
        A.RandomGamma(gamma_limit=(80, 120), p=cfg.gamma),
        A.GaussNoise(std_range=(0.01, 0.05), p=cfg.noise),
    ])


class SliceDataset(Dataset):
    """Yields (image, mask) float tensors of shape 1 x H x W; image in [0, 1], mask in {0, 1}.

    Augmentation is a pure function of (seed, epoch, item): results do not depend on the number
    of loader workers or on where a resumed run restarts.
    """

    def __init__(self, images: np.ndarray, masks: np.ndarray, augment: A.Compose | None = None, seed: int = 0):
        self.images, self.masks, self.augment, self.seed = images, masks, augment, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = np.asarray(self.images[i]), np.asarray(self.masks[i])
        if self.augment is not None:
            self.augment.set_random_seed(int(np.random.SeedSequence([self.seed, self.epoch, i]).generate_state(1)[0]))
            out = self.augment(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image_t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32) / 255.0)[None]
        mask_t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]
        return image_t, mask_t
