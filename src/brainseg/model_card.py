"""models/MODEL_CARD.md: what the exported model is, how good it is and where it must not be used.

Hugging Face model-card layout (a YAML header a hub or registry can read, then prose), rendered by
the export stage from the params, the model description and the evaluate and preprocess stages'
metrics, so it cannot disagree with them.
"""

from __future__ import annotations

import yaml

from brainseg.config import Params
from brainseg.labels import labels_are_boxes

_SOURCES = {
    "phantom": "the built-in synthetic phantom (T1 contrast-enhanced-like axial slices with known tumor outlines)",
    "kaggle": "the Kaggle dataset `{dataset}`",
    "local": "a local copy of a dataset in a supported layout (`data.local_path`)",
}


def _rounded(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _label_kind(data_metrics: dict) -> str:
    return "boxes" if labels_are_boxes(data_metrics) else "outlines"


def _header(params: Params, spec: dict, test: dict, data_metrics: dict) -> dict:
    dataset = params.data.kaggle_dataset if params.data.source == "kaggle" else params.data.source
    return {
        "license": "other",
        "library_name": "onnx",
        "pipeline_tag": "image-segmentation",
        "tags": ["medical-imaging", "mri", "brain-tumor", "segmentation", "u-net", "brainseg"],
        "datasets": [dataset],
        "metrics": ["dice"],
        "model-index": [{
            "name": f"brainseg-{params.model.architecture.lower()}-{params.model.encoder}",
            "results": [{
                "task": {"type": "image-segmentation", "name": "tumor segmentation"},
                "dataset": {"name": dataset, "type": dataset, "split": "test"},
                "metrics": [
                    {"type": "dice", "value": test["dice_mean"],
                     "name": f"per-image Dice vs {_label_kind(data_metrics)}"},
                    {"type": "iou", "value": test["iou_mean"], "name": "per-image IoU"},
                ],
            }],
        }],
    }


def render_model_card(params: Params, spec: dict, test: dict, data_metrics: dict,
                      split_sizes: dict[str, int]) -> str:
    """The card's text. `spec`: model.json; `test`: metrics/test.json; `data_metrics`: metrics/data.json;
    `split_sizes`: slices per subset (train, val, test) as the split stage made them."""
    size = spec["input"]["shape"][-1]
    labels = _label_kind(data_metrics)
    source = _SOURCES[params.data.source].format(dataset=params.data.kaggle_dataset)
    post = spec["postprocess"]
    if labels == "outlines":
        label_caveat = "The labels are tumor outlines, so the scores below measure boundaries."
    elif params.train.box_labels:
        how = {"box": "as boxes (`train.labels: box`: background outside each box, a mask that spans its box, "
                      "labels that follow intensity inside it)",
               "ellipse": "towards the ellipse inscribed in each box (`train.labels: ellipse`)",
               "pseudo": "towards outlines GrabCut drew from each box and the image (`train.labels: pseudo`, "
                         "`preprocess.pseudo_masks: grabcut`)"}[params.train.labels]
        label_caveat = (
            f"**The labels are loose boxes, not tumor outlines**, and the model was trained on them {how}, "
            "so it draws a shape inside each box, not the box. Its Dice against the boxes is low "
            "by design (an exact outline scores about 0.55 against the Kaggle boxes); the reference-set "
            "scores, where present, measure the outlines. Epoch and post-processing were chosen on boxes only.")
    else:
        label_caveat = (
            "**The labels are loose boxes, not tumor outlines**, and a model trained on them draws a rounded box "
            "around the tumor: its Dice against the boxes says how well it reproduces the box, not the tumor's "
            "boundary (on the Kaggle box dataset a perfect box scores about 0.55 Dice against expert outlines; "
            "`train.labels: box` learns the outline from the same boxes).")
    reference = test.get("reference")
    reference_line = (
        f"\nAgainst the reference set (a second truth for the same test slices, `reference.*` in params.yaml): "
        f"per-image Dice {reference['dice_mean']:.3f}, global Dice {reference['dice_global']:.3f}, HD95 median "
        f"{_rounded(reference['hd95_px_median'])} px.\n" if reference else "")
    lines = [
        "---",
        yaml.safe_dump(_header(params, spec, test, data_metrics), sort_keys=False).rstrip(),
        "---",
        "",
        "# Brain tumor segmentation: 2D MRI slices (brainseg)",
        "",
        "Segments tumors in single 2D axial MRI slices (T1 contrast-enhanced, as trained) and returns a "
        "tumor mask at the slice's own size. Trained and exported by this repository's DVC pipeline "
        "(`dvc repro`); the numbers below are the committed run's.",
        "",
        "## Model",
        "",
        f"- {params.model.architecture} with a {params.model.encoder} encoder "
        f"({'from scratch' if params.model.encoder_weights is None else params.model.encoder_weights + ' weights'}), "
        f"decoder channels {list(params.model.decoder_channels)}, one grayscale input channel, one output "
        "(tumor probability); per-slice standardisation is inside the graph.",
        f"- Input: N x 1 x {size} x {size} float32 intensities in [0, 1] (area-resized slice); output: "
        "probabilities of the same shape.",
        f"- Post-processing chosen on the validation split: threshold {post['threshold']}, flip TTA "
        f"{'on' if post['tta'] else 'off'}, components under {post['min_component_px']} px (at {size} px) dropped"
        + (f", only the {post['max_components']} largest kept." if post.get("max_components") else "."),
        f"- Files: `{spec['files']['onnx']}` (ONNX, opset in the file), `{spec['files']['torchscript']}` "
        f"(TorchScript), `model.json` (the inference contract); best epoch {spec['best_epoch']}, "
        f"validation Dice {spec['val_dice']}.",
        "",
        "## Training data",
        "",
        f"{source[0].upper() + source[1:]}: {split_sizes['train']} training, "
        f"{split_sizes['val']} validation and {split_sizes['test']} test slices "
        f"(split: `{params.split.strategy}`), resized to {params.preprocess.image_size} px; "
        f"{data_metrics['tumor_free_fraction']:.0%} of slices tumor-free, median tumor area "
        f"{data_metrics['tumor_area_fraction_median']:.1%} of the slice. {label_caveat}",
        "",
        "## Metrics (test split)",
        "",
        "| metric | value |",
        "|---|---|",
        f"| per-image Dice (mean) | {test['dice_mean']:.3f} (95% bootstrap interval over test slices "
        f"{test['dice_mean_ci95_low']:.3f}–{test['dice_mean_ci95_high']:.3f}) |",
        f"| per-image IoU (mean) | {test['iou_mean']:.3f} |",
        f"| global Dice / precision / recall | {test['dice_global']:.3f} / {test['precision_global']:.3f} / "
        f"{test['recall_global']:.3f} |",
        f"| HD95 median (px, original size) | {_rounded(test['hd95_px_median'])} |",
        f"| tumors found | {test['tumor_sensitivity']:.1%} |",
        f"| false positives on tumor-free slices | {test['tumor_free_fpr']:.1%} of them |",
        reference_line,
        "Scored at each slice's original size against the labels; the interval covers test-set sampling "
        "only (seeds vary too).",
        "",
        "## Intended use",
        "",
        "Research on brain tumor segmentation: a baseline to compare methods against, to prototype "
        "pipelines, or to pre-annotate slices that an expert then corrects.",
        "",
        "## Limitations: not for diagnosis",
        "",
        "- **Research use only. Not a medical device; not for diagnosis, treatment or any clinical decision.**",
        "- 2D slices only, one at a time: no 3D context; trained on axial T1 contrast-enhanced slices; other "
        "sequences, orientations, scanners or pediatric data are out of distribution and untested.",
        "- It always answers: a slice without a tumor, or not a brain MRI at all, can still get a mask.",
        "- Small tumors are the weak point (lower Dice, more over- or under-segmentation).",
        "",
        "## How to use",
        "",
        "```bash",
        "pip install -r requirements-deploy.txt   # numpy, opencv, onnxruntime: no torch",
        "brainseg-predict scans/ --out predictions/ --model models/model.onnx",
        "```",
        "",
        "Writes `<name>_mask.png` (0/255 at the slice's size), an overlay and a report per input; "
        "`model.json`'s `postprocess` block and `brainseg.inference` say how probabilities become the mask.",
        "Or in a local web page (upload slices, see and download the masks):",
        "",
        "```bash",
        "pip install -r requirements-demo.txt   # the above plus Gradio",
        "brainseg-demo --model models/",
        "```",
        "",
    ]
    return "\n".join(lines)
