"""Stage preprocess: decode, build masks and resize every image once into data/processed/."""

import json
from pathlib import Path

import own_src  # noqa: F401 - this repository's src/ first: the code dvc.lock hashes is the code that runs
from brainseg.cli import run
from brainseg.config import load_params
from brainseg.io import atomic_write_text
from brainseg.data.preprocess import preprocess
from brainseg.labels import labels_are_boxes


def main() -> None:
    params = load_params()
    cfg = params.preprocess
    audit = preprocess(Path("data/raw"), Path("data/processed"), cfg.image_size,
                       categories=params.data.categories, on_bad_image=cfg.on_bad_image,
                       plot_path=Path("plots/tumor_area.png"),
                       pseudo_mask_size=cfg.pseudo_mask_size if cfg.pseudo_masks == "grabcut" else None)
    atomic_write_text(Path("metrics/data.json"), json.dumps(audit, indent=2) + "\n")
    skipped = (f", {audit['images_skipped']} unreadable skipped (named in data/processed/skipped.csv)"
               if audit["images_skipped"] else "")
    print(f"preprocess: {audit['images']} images at {params.preprocess.image_size}px{skipped}, "
          f"{audit['tumor_free_fraction']:.1%} tumor-free, {audit['rectangle_fraction']:.1%} of polygons are boxes, "
          f"{audit['groups_cross_split']} groups in more than one split")
    if "pseudo_mask_label_share" in audit:
        print(f"preprocess: GrabCut pseudo-masks keep {audit['pseudo_mask_label_share']:.2f} of the label pixels "
              "(mean per slice; tumors fill about 0.4 of a loose box)")
    # Said whatever train.labels is: that key is not this stage's parameter (changing it reruns training only).
    if labels_are_boxes(audit):
        print("preprocess: the labels are boxes, not tumor outlines; trained as masks (train.labels: mask) the model "
              "learns to draw boxes; train.labels: pseudo with preprocess.pseudo_masks: grabcut, ellipse or box learns "
              "a shape inside them (README: \"Labels that are boxes\")")


if __name__ == "__main__":
    run(main)
