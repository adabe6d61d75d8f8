"""Drawing explanations onto images with numpy/OpenCV (headless exports; the viewer draws its own layers)."""

from __future__ import annotations

import cv2
import numpy as np

from busi_viewer.core.masks import mask_outline

_COLORMAPS = {"inferno": cv2.COLORMAP_INFERNO, "jet": cv2.COLORMAP_JET, "viridis": cv2.COLORMAP_VIRIDIS}


def colorize(heatmap: np.ndarray, colormap: str = "inferno") -> np.ndarray:
    """(H, W) float map in [0, 1] -> (H, W, 3) uint8 RGB through a perceptual colour map."""
    levels = np.clip(np.nan_to_num(heatmap) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(levels, _COLORMAPS[colormap]), cv2.COLOR_BGR2RGB)


def blend_heatmap(rgb: np.ndarray, heatmap: np.ndarray, opacity: float = 0.45, colormap: str = "inferno") -> np.ndarray:
    """Blend a [0, 1] (H, W) heatmap over an (H, W, 3) uint8 image; opacity 0 leaves the image as it was.

    The colour's weight at each pixel is ``opacity * heatmap``: where the map has no evidence the image shows
    through untouched, so the overlay never hides anatomy it says nothing about.
    """
    if rgb.shape[:2] != heatmap.shape:
        raise ValueError(f"heatmap shape {heatmap.shape} does not match image shape {rgb.shape[:2]}")
    weight = (float(np.clip(opacity, 0.0, 1.0)) * np.clip(np.nan_to_num(heatmap), 0.0, 1.0))[..., None]
    coloured = colorize(heatmap, colormap).astype(np.float32)
    out = rgb.astype(np.float32) * (1.0 - weight) + coloured * weight
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def draw_mask_outline(rgb: np.ndarray, mask: np.ndarray, color=(0, 255, 0), thickness: int = 2) -> np.ndarray:
    """A copy of (H, W, 3) uint8 ``rgb`` with the outline of the bool (H, W) ``mask`` drawn on it."""
    out = np.ascontiguousarray(rgb.copy())
    cv2.polylines(out, mask_outline(mask), isClosed=True, color=color, thickness=thickness, lineType=cv2.LINE_AA)
    return out
