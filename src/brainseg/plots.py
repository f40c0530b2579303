"""Figures a person would rather see than read: overlays and curves (PNG, deterministic)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from brainseg.io import atomic_output  # noqa: E402

_PNG_META = {"Software": None}  # keeps PNG bytes identical across matplotlib patch releases


def _save(fig, path: Path, dpi: int = 100) -> None:
    with atomic_output(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, metadata=_PNG_META)
    plt.close(fig)


def overlay_grid(panels: list[tuple[str, list[tuple[np.ndarray, np.ndarray, np.ndarray, str]]]], path: Path) -> None:
    """Rows of (label, cases); each case is (image, truth, prediction, caption).

    Truth outlines are green, predicted outlines red.
    """
    cols = max(len(cases) for _, cases in panels)
    fig, axes = plt.subplots(len(panels), cols, figsize=(2.6 * cols, 2.9 * len(panels)), squeeze=False)
    for r, (label, cases) in enumerate(panels):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(cases):
                continue
            image, truth, pred, caption = cases[c]
            ax.imshow(image, cmap="gray", interpolation="nearest")
            for mask, color in ((truth, "lime"), (pred, "red")):
                if mask.any():
                    ax.contour(mask.astype(float), levels=[0.5], colors=color, linewidths=1.0)
            ax.set_title(f"{label}: {caption}", fontsize=7)
    fig.suptitle("test overlays — truth green, prediction red", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def curves_figure(history: dict[str, pd.DataFrame], sweep: pd.DataFrame, threshold: float, path: Path) -> None:
    """Training curves beside the test threshold and precision-recall curves."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for name, df in history.items():
        if "loss" in name:
            axes[0].plot(df["step"] + 1, df.iloc[:, -1], label=name)
    axes[0].set(xlabel="epoch", ylabel="loss", title="training")
    val_dice = history.get("val/dice")
    if val_dice is not None:
        twin = axes[0].twinx()
        twin.plot(val_dice["step"] + 1, val_dice.iloc[:, -1], color="tab:green", label="val/dice")
        twin.set_ylabel("val dice (per-image mean)")
        twin.set_ylim(0, 1)
        twin.legend(loc="center right")
    axes[0].legend(loc="upper right")
    axes[1].plot(sweep["threshold"], sweep["dice_mean"], label="dice (per-image mean)")
    axes[1].plot(sweep["threshold"], sweep["dice_global"], label="dice (global)")
    axes[1].axvline(threshold, color="grey", linestyle=":", label=f"threshold {threshold:g}")
    axes[1].set(xlabel="probability threshold", ylabel="dice", title="test: dice vs threshold", ylim=(0, 1))
    axes[1].legend()
    axes[2].plot(sweep["recall"], sweep["precision"], marker=".")
    axes[2].set(xlabel="recall (global)", ylabel="precision (global)", title="test: precision-recall",
                xlim=(0, 1), ylim=(0, 1))
    fig.tight_layout()
    _save(fig, path)


def comparison_grid(cases: list[tuple[str, np.ndarray, dict[str, np.ndarray]]],
                    rows: list[tuple[str, list[tuple[str, str]]]], title: str, footer: str, path: Path,
                    dpi: int = 72) -> None:
    """One column per case (caption, image, named masks), one row per view: (label, [(mask name, color)]),
    the masks drawn as outlines over the image. 72 dpi keeps a grid of real slices small enough to commit."""
    fig, axes = plt.subplots(len(rows), len(cases), figsize=(2.1 * len(cases), 2.2 * len(rows) + 0.6), squeeze=False)
    for c, (caption, image, masks) in enumerate(cases):
        for r, (label, drawn) in enumerate(rows):
            ax = axes[r][c]
            ax.imshow(image, cmap="gray", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for name, color in drawn:
                if masks[name].any():
                    ax.contour(masks[name].astype(float), levels=[0.5], colors=color, linewidths=1.2)
            if r == 0:
                ax.set_title(caption, fontsize=7)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.text(0.5, 0.005, footer, ha="center", va="bottom", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    _save(fig, path, dpi)
