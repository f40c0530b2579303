import json

import numpy as np
import pytest

from brainseg.errors import BrainsegError
from brainseg.evaluate import tune_postprocessing
from brainseg.inference import (PostProcess, binarize, filter_components, mask_at_size, merge_flipped,
                                read_postprocess, resize_to_model, unit_range)


def test_small_components_are_removed_and_large_kept():
    mask = np.zeros((20, 20), np.uint8)
    mask[2:8, 2:8] = 1  # 36 px
    mask[15, 15] = mask[15, 16] = 1  # 2 px
    mask[18, 2] = 1  # 1 px, diagonal neighbour of nothing
    out = filter_components(mask, 3)
    assert out.sum() == 36 and out[2:8, 2:8].all()
    assert np.array_equal(filter_components(mask, 0), mask)
    diagonal = np.eye(4, dtype=np.uint8)  # 8-connected: one component of 4 px
    assert filter_components(diagonal, 4).sum() == 4


def test_max_components_keeps_the_largest_after_dropping_small_ones():
    mask = np.zeros((20, 20), np.uint8)
    mask[2:8, 2:8] = 1  # 36 px
    mask[12:16, 12:16] = 1  # 16 px
    mask[18, 2] = 1  # 1 px
    largest = filter_components(mask, 0, 1)
    assert largest.sum() == 36 and largest[2:8, 2:8].all()
    assert filter_components(mask, 0, 2).sum() == 52 and filter_components(mask, 0, 3).sum() == 53
    assert np.array_equal(filter_components(mask, 0, 0), mask)  # 0 keeps every component
    assert filter_components(mask, 20, 2).sum() == 36  # the size filter first: one left, so one kept
    assert not filter_components(np.zeros((4, 4), np.uint8), 0, 1).any()


def test_binarize_batch_matches_single():
    rng = np.random.default_rng(0)
    probs = rng.random((3, 16, 16))
    batch = binarize(probs, 0.8, 3, 1)
    assert all(np.array_equal(batch[i], binarize(probs[i], 0.8, 3, 1)) for i in range(3))


def test_tuning_picks_component_filter_that_removes_specks_and_prefers_no_tta():
    truth = np.zeros((4, 32, 32), np.uint8)
    truth[:2, 8:20, 8:20] = 1  # two slices with a tumor, two tumor-free
    probs = truth * 0.9
    probs[2:, 3, 3] = 0.9  # a one-pixel false positive on each tumor-free slice
    chosen = tune_postprocessing({False: probs, True: probs.copy()}, truth, (0, 4))
    assert chosen["min_component_px"] == 4 and chosen["tta"] is False
    assert chosen["val_dice_mean"] == 1.0
    assert chosen["threshold"] == 0.5  # every threshold up to 0.9 ties; the nearest 0.5 wins


def test_tuning_keeps_only_the_largest_component_when_each_slice_has_one_tumor():
    truth = np.zeros((3, 32, 32), np.uint8)
    truth[:, 8:20, 8:20] = 1
    probs = truth * 0.9
    probs[:, 26:30, 26:30] = 0.9  # a 16-px false positive beside each tumor: only keeping one component removes it
    chosen = tune_postprocessing({False: probs}, truth, (0, 4), (0, 1))
    assert chosen["max_components"] == 1 and chosen["min_component_px"] == 0 and chosen["val_dice_mean"] == 1.0
    two_tumors = truth.copy()
    two_tumors[:, 26:30, 26:30] = 1  # the same blobs, now both true: keeping all is best, and simplest on ties
    assert tune_postprocessing({False: probs}, two_tumors, (0,), (0, 1))["max_components"] == 0
    assert tune_postprocessing({False: truth * 0.9}, truth, (0,), (0, 1))["max_components"] == 0  # a tie


def test_mask_at_size_drops_small_components_at_the_model_size_then_resizes():
    prob = np.zeros((16, 16), np.float32)
    prob[4:10, 4:10] = 0.9  # 36 px: kept
    prob[13, 13] = 0.95  # 1 px: dropped by min_component_px 4
    prob[4:10, 10] = 0.4  # below the threshold: its probability is not resized into the tumor
    mask = mask_at_size(prob, (32, 48), PostProcess(threshold=0.5, min_component_px=4))
    assert mask.shape == (32, 48) and mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    assert not mask[24:, 36:].any()  # the speck is gone at full size too
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max()) == (8, 19)  # 4..9 of 16 -> about 8..19 of 32
    assert 12 <= cols.min() and cols.max() <= 30  # the 0.4 column at 10 of 16 (30 of 48) does not extend it
    with_speck = mask_at_size(prob, (32, 48), PostProcess(threshold=0.5))
    assert with_speck[24:, 36:].any()
    prob[13:16, 13:16] = 0.95  # 9 px: survives min_component_px 4, not max_components 1
    assert mask_at_size(prob, (32, 48), PostProcess(threshold=0.5, min_component_px=4))[24:, 36:].any()
    largest_only = PostProcess(threshold=0.5, min_component_px=4, max_components=1)
    assert np.array_equal(mask_at_size(prob, (32, 48), largest_only), mask)


def test_merge_flipped_averages_with_the_mirror_image_flipped_back():
    plain = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    of_mirrored = plain[..., ::-1] + 2  # a model that sees the mirror image and adds 2
    assert np.array_equal(merge_flipped(plain, of_mirrored), plain + 1)


def test_postprocess_round_trip_and_checks(tmp_path):
    post = PostProcess(threshold=0.35, tta=True, min_component_px=16, max_components=1)
    path = tmp_path / "postprocess.json"
    path.write_text(json.dumps({**post.to_dict(), "val_dice_mean": 0.8}))
    assert read_postprocess(path) == post
    # written before max_components existed
    path.write_text(json.dumps({"threshold": 0.35, "tta": True, "min_component_px": 16}))
    assert read_postprocess(path) == PostProcess(threshold=0.35, tta=True, min_component_px=16, max_components=0)
    path.write_text(json.dumps({"threshold": 0.35}))
    with pytest.raises(BrainsegError, match=r"postprocess\.json .*lacks 'tta'.*rerun the evaluate stage"):
        read_postprocess(path)
    for bad in ({"threshold": 1.0}, {"min_component_px": -1}, {"max_components": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            PostProcess(**bad)


def test_preprocessing_is_an_area_resize_to_unit_range():
    gray = np.zeros((8, 8), np.uint8)
    gray[:, :3] = 255  # output column 1 covers input columns 2 (255) and 3 (0)
    small = resize_to_model(gray, 4)
    assert small.dtype == np.uint8 and small[0].tolist() == [255, 128, 0, 0]  # averaged, not picked
    assert unit_range(resize_to_model(np.full((8, 8), 51, np.uint8), 4)).max() == pytest.approx(0.2)
