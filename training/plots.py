"""Figures for training reports (matplotlib, headless Agg backend). Each function writes one PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # never a window: reports are made on headless machines and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from busi_viewer.core.overlay import blend_heatmap, draw_mask_outline  # noqa: E402

_DPI = 110


def _save(figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=_DPI)
    plt.close(figure)
    return path


def learning_curves(history: Sequence[dict], path: Path, title: str = "") -> Path:
    """Train/validation loss and accuracy per epoch from the fit loop's history rows."""
    epochs = [row["epoch"] for row in history]
    figure, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.4))
    loss_ax.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    loss_ax.plot(epochs, [r["val_loss"] for r in history], "o-", label="validation")
    acc_ax.plot(epochs, [r["train_accuracy"] for r in history], "o-", label="train")
    acc_ax.plot(epochs, [r["val_accuracy"] for r in history], "o-", label="validation")
    for axis, name in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        axis.set_xlabel("epoch")
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    return _save(figure, path)


def confusion_matrix_plot(matrix: np.ndarray, class_names: Sequence[str], path: Path, title: str = "") -> Path:
    """Counts with row-normalised shading; rows are true classes, columns predictions."""
    matrix = np.asarray(matrix)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axis = plt.subplots(figsize=(4.2, 3.8))
    axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            axis.text(j, i, f"{matrix[i, j]}", ha="center", va="center",
                      color="white" if shares[i, j] > 0.6 else "black")
    axis.set_xticks(range(len(class_names)), class_names)
    axis.set_yticks(range(len(class_names)), class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    return _save(figure, path)


def roc_plot(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: Path, title: str = "") -> Path:
    """One-vs-rest ROC curves: ``{class: (false positive rates, true positive rates, auc)}``."""
    figure, axis = plt.subplots(figsize=(4.2, 4.0))
    for name, (fpr, tpr, auc) in curves.items():
        axis.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    axis.plot([0, 1], [0, 1], ":", color="grey")
    axis.set_xlabel("false positive rate")
    axis.set_ylabel("true positive rate")
    axis.set_title(title)
    axis.legend(loc="lower right")
    axis.grid(alpha=0.3)
    return _save(figure, path)


def reliability_plot(panels: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, float]], path: Path) -> Path:
    """Reliability diagrams side by side: ``{label: (bin confidence, bin accuracy, bin count, ece)}``."""
    figure, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.8), squeeze=False)
    for axis, (label, (confidence, accuracy, count, ece)) in zip(axes[0], panels.items()):
        used = np.asarray(count) > 0
        axis.plot([0, 1], [0, 1], ":", color="grey")
        axis.bar(np.asarray(confidence)[used], np.asarray(accuracy)[used], width=1 / 15, alpha=0.7, edgecolor="k")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("confidence (top class)")
        axis.set_ylabel("accuracy")
        axis.set_title(f"{label}: ECE {ece:.3f}")
    return _save(figure, path)


def gradcam_grid(items: Sequence[dict], path: Path, columns: int = 4, opacity: float = 0.5) -> Path:
    """Grad-CAM overlays with mask outlines. Each item: rgb (H,W,3) uint8, heatmap (H,W) in [0,1], mask (bool or
    None), caption (str), failure (bool: drawn with a red title)."""
    rows = max(1, int(np.ceil(len(items) / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 2.8 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, item in zip(axes.ravel(), items):
        picture = blend_heatmap(item["rgb"], item["heatmap"], opacity)
        if item.get("mask") is not None and item["mask"].any():
            picture = draw_mask_outline(picture, item["mask"], color=(0, 255, 0), thickness=2)
        axis.imshow(picture)
        axis.set_title(item["caption"], fontsize=7, color="red" if item.get("failure") else "black")
    return _save(figure, path)
