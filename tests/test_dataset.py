"""Training samples: augmentation is seeded per (seed, epoch, slice), and patches find the tumor when asked."""

from __future__ import annotations

import numpy as np
import pytest

from brainseg.config import AugmentConfig
from brainseg.data.dataset import SliceDataset, build_augmentation
from brainseg.data.masks import inscribed_ellipses

SIZE, PATCH = 128, 32


def _slices(n: int, tumor: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Slices whose intensity encodes the pixel position, each with one 4 x 4 tumor in the middle."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    image = ((yy * 7 + xx * 3) % 251).astype(np.uint8)
    masks = np.zeros((n, SIZE, SIZE), dtype=np.uint8)
    if tumor:
        masks[:, 60:64, 60:64] = 1
    return np.repeat(image[None], n, axis=0), masks


def _samples(images, masks, foreground: float, epochs: int = 1, augment: AugmentConfig | None = None):
    augment = augment or AugmentConfig(hflip=0, affine=0, brightness_contrast=0, gamma=0, noise=0)
    dataset = SliceDataset(images, masks, build_augmentation(augment, PATCH, foreground), seed=3)
    for epoch in range(epochs):
        dataset.epoch = epoch
        yield from (dataset[i] for i in range(len(dataset)))


def test_a_patch_is_the_same_crop_of_image_and_mask():
    images, masks = _slices(50)
    masks[:, :, :] = images % 2  # a mask with the image's pattern: any misalignment shows
    for image, mask in _samples(images, masks, foreground=0.5):
        assert image.shape == mask.shape == (1, PATCH, PATCH)
        np.testing.assert_array_equal(mask, image % 2)
        # A crop of the slice, not a resize: neighbouring pixels keep the slice's steps of 3 and 7.
        steps = np.diff(image[0].numpy().astype(int), axis=1) % 251
        assert set(np.unique(steps).tolist()) == {3}


def test_foreground_share_decides_how_often_a_patch_holds_tumor():
    images, masks = _slices(100)
    share = {f: np.mean([m.any().item() for _, m in _samples(images, masks, f, epochs=4)]) for f in (0.0, 0.5, 1.0)}
    assert share[1.0] == 1.0
    # Uniform 32 px crops of a 128 px slice hold this 4 px tumor about (32 + 3)^2 / 97^2 ~ 0.13 of the time.
    assert 0.05 < share[0.0] < 0.25
    assert share[0.0] + 0.25 < share[0.5] < 0.8


def test_tumor_free_slices_give_patches_too():
    images, masks = _slices(10, tumor=False)
    assert all(m.sum() == 0 and i.shape == (1, PATCH, PATCH) for i, m in _samples(images, masks, foreground=1.0))


def test_patches_depend_on_seed_epoch_and_slice_only():
    images, masks = _slices(8)
    first = [i.numpy() for i, _ in _samples(images, masks, 0.5, epochs=2, augment=AugmentConfig())]
    again = [i.numpy() for i, _ in _samples(images, masks, 0.5, epochs=2, augment=AugmentConfig())]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    # Same slice content everywhere, yet the draws differ between slices and between epochs.
    assert len({a.tobytes() for a in first}) == len(first)


def test_whole_slices_without_a_patch_size():
    images, masks = _slices(4)
    dataset = SliceDataset(images, masks, build_augmentation(AugmentConfig()), seed=0)
    assert dataset[0][0].shape == (1, SIZE, SIZE)


def test_the_target_is_drawn_from_the_augmented_label():
    """The target is drawn after augmentation, from the augmented label: each rotated box gets its own
    ellipse, and the image is the one the label was augmented with."""
    images, masks = _slices(6, tumor=False)
    masks[:, 40:80, 30:100] = 1
    augment = build_augmentation(AugmentConfig(affine=1.0, rotate_deg=30))
    plain = SliceDataset(images, masks, augment, seed=5)
    drawn = SliceDataset(images, masks, augment, seed=5, target=inscribed_ellipses)
    for i in range(len(plain)):
        (image, box), (same_image, target) = plain[i], drawn[i]
        np.testing.assert_array_equal(image, same_image)
        np.testing.assert_array_equal(target[0], inscribed_ellipses(box[0].numpy()))
        assert 0 < target.sum() < box.sum()


@pytest.mark.parametrize("foreground", [0.0, 1.0])
def test_a_single_kind_of_patch_needs_no_choice(foreground):
    transforms = build_augmentation(AugmentConfig(), PATCH, foreground).transforms
    assert not any(type(t).__name__ == "OneOf" for t in transforms)
