"""Report figures are written and show what they claim (checked on the rendered pixels)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from training.plots import confusion_matrix_plot, gradcam_grid, learning_curves, reliability_plot, roc_plot


def _pixels(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_every_plot_writes_a_non_blank_png(tmp_path):
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_accuracy": 0.5 + e / 20,
                "val_accuracy": 0.45 + e / 20} for e in range(1, 6)]
    paths = [
        learning_curves(history, tmp_path / "curves.png", "run"),
        confusion_matrix_plot(np.array([[5, 1, 0], [2, 3, 0], [0, 0, 4]]), ["a", "b", "c"], tmp_path / "cm.png"),
        roc_plot({"a": (np.array([0, 0.2, 1]), np.array([0, 0.8, 1]), 0.9)}, tmp_path / "roc.png"),
        reliability_plot({"before": (np.linspace(0.05, 0.95, 15), np.linspace(0, 1, 15), np.ones(15), 0.08)},
                         tmp_path / "rel.png"),
    ]
    for path in paths:
        pixels = _pixels(path)
        assert pixels.shape[0] > 200 and pixels.std() > 10


def test_gradcam_grid_shows_the_heatmap_and_the_mask_outline(tmp_path):
    rgb = np.full((60, 80, 3), 90, np.uint8)
    heatmap = np.zeros((60, 80), np.float32)
    heatmap[20:40, 30:50] = 1.0
    mask = np.zeros((60, 80), bool)
    mask[10:50, 5:25] = True
    path = gradcam_grid([{"rgb": rgb, "heatmap": heatmap, "mask": mask, "caption": "x"}], tmp_path / "g.png",
                        columns=1)
    pixels = _pixels(path)
    green = (pixels[..., 1] > 200) & (pixels[..., 0] < 80) & (pixels[..., 2] < 80)
    warm = (pixels[..., 0] > 150) & (pixels[..., 0] - pixels[..., 2] > 30)  # inferno yellow blended over grey
    assert green.sum() > 20 and warm.sum() > 20
