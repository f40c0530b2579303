"""The committed figure results/outlines.png: real test slices with the expert outline, the Kaggle box and
what three models of about the same budget draw: trained on the boxes as masks, on GrabCut pseudo-masks
drawn inside the boxes (train.labels: pseudo), and on the outlines (best, median and worst by the outline
model's Dice).

Masks come from `brainseg-predict` (the exported models, as users run them), each model on its own
dataset's copy of the test slices:

    brainseg-predict <boxes>/test --model <box run>/models/model.onnx --out /tmp/box-pred --overlay none
    brainseg-predict <boxes>/test --model <pseudo-mask run>/models/model.onnx --out /tmp/pseudo-pred --overlay none
    brainseg-predict <outlines test images> --model <outline run>/models/model.onnx --out /tmp/outline-pred --overlay none
    python results/outline_figure.py --outlines OUTLINES_DIR --boxes BOXES_DIR --box-pred /tmp/box-pred \
        --pseudo-pred /tmp/pseudo-pred --outline-pred /tmp/outline-pred --out results/outlines.png

OUTLINES_DIR and BOXES_DIR are the extracted datasets (figshare `images/ masks/`; Kaggle `train/ valid/ test/`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from brainseg.data.preprocess import read_mask_file, sample_mask
from brainseg.data.layout import read_layout
from brainseg.data.reference import pair_with_reference, read_mapping
from brainseg.data.split import read_split_file
from brainseg.imaging import read_grayscale
from brainseg.metrics import per_image_table
from brainseg.plots import comparison_grid

ROOT = Path(__file__).resolve().parents[1]
ATTRIBUTION = "Images and expert outlines: figshare brain tumor dataset (Jun Cheng), CC BY 4.0"
PER_GROUP = 2
CROP_MIN = 112  # px of the 512 px slice: tumors are small, so each panel shows the region around them


def _crop_box(masks: list[np.ndarray], shape: tuple[int, int]) -> tuple[slice, slice]:
    ys, xs = np.nonzero(np.any(masks, axis=0))
    cy, cx = (ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2
    half = max(CROP_MIN, int(1.6 * max(np.ptp(ys), np.ptp(xs)))) // 2
    top, left = np.clip([cy - half, cx - half], 0, [shape[0] - 2 * half, shape[1] - 2 * half])
    return slice(top, top + 2 * half), slice(left, left + 2 * half)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outlines", type=Path, required=True)
    parser.add_argument("--boxes", type=Path, required=True)
    parser.add_argument("--box-pred", type=Path, required=True)
    parser.add_argument("--pseudo-pred", type=Path, required=True,
                        help="masks of a model trained on the boxes' GrabCut pseudo-masks (train.labels: pseudo)")
    parser.add_argument("--outline-pred", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "outlines.png")
    args = parser.parse_args()

    test_ids = [name for name, subset in read_split_file(ROOT / "configs/splits/figshare-kaggle.csv") if subset == "test"]
    outlines = {Path(s.name).stem: s for s in read_layout(args.outlines)[0]}
    box_samples = read_layout(args.boxes)[0]
    pick = pair_with_reference(test_ids, [s.name for s in box_samples],
                               read_mapping(ROOT / "configs/references/figshare-kaggle.csv"))
    rows = []
    for figshare_id, box_index in zip(test_ids, pick):
        sample, box_sample = outlines[figshare_id], box_samples[box_index]
        image = read_grayscale(sample.file)
        shape = image.shape
        outline = read_mask_file(sample.mask_file)

        def at_slice_size(mask: np.ndarray) -> np.ndarray:
            return cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)

        masks = {"outline": outline,
                 "box": at_slice_size(sample_mask(box_sample, box_sample.height, box_sample.width)),
                 "box model": at_slice_size(read_mask_file(args.box_pred / f"{Path(box_sample.name).stem}_mask.png")),
                 "pseudo model": at_slice_size(read_mask_file(args.pseudo_pred / f"{Path(box_sample.name).stem}_mask.png")),
                 "outline model": read_mask_file(args.outline_pred / f"{figshare_id}_mask.png")}
        dice = {f"{name.replace(' ', '_')}_dice": float(per_image_table(masks[name][None], outline[None]).dice[0])
                for name in ("box", "box model", "pseudo model", "outline model")}
        rows.append({"id": figshare_id, "image": image, "masks": masks, **dice})
    table = pd.DataFrame(rows).sort_values(["outline_model_dice", "id"], ascending=[False, True], kind="stable")
    middle = len(table) // 2 - PER_GROUP // 2
    chosen = [("best", table.iloc[:PER_GROUP]), ("median", table.iloc[middle:middle + PER_GROUP]),
              ("worst", table.iloc[-PER_GROUP:])]
    cases = []
    for group, picked in chosen:
        for row in picked.itertuples():
            region = _crop_box(list(row.masks.values()), row.image.shape)
            cases.append((f"{group}: slice {row.id}\nDice {row.box_model_dice:.2f} / {row.pseudo_model_dice:.2f} "
                          f"(boxes), {row.outline_model_dice:.2f} (outlines)",
                          row.image[region], {k: v[region] for k, v in row.masks.items()}))
    comparison_grid(cases, [("expert outline (green),\nKaggle box (yellow)", [("outline", "lime"), ("box", "yellow")]),
                            ("trained on boxes (red)", [("outline", "lime"), ("box model", "red")]),
                            ("boxes' GrabCut pseudo-masks (red)", [("outline", "lime"), ("pseudo model", "red")]),
                            ("trained on outlines (red)", [("outline", "lime"), ("outline model", "red")])],
                    f"Test slices ranked by the outline-trained model (of {len(table)}); "
                    "Dice against the expert outline of models trained on boxes (as masks / as pseudo-masks) and "
                    "on outlines", ATTRIBUTION, args.out, dpi=64)
    print(f"{args.out}: mean Dice vs outlines: box {table.box_dice.mean():.3f}, box model "
          f"{table.box_model_dice.mean():.3f}, pseudo-masks {table.pseudo_model_dice.mean():.3f}, "
          f"outline model {table.outline_model_dice.mean():.3f}")


if __name__ == "__main__":
    main()
