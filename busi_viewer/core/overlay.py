"""Drawing explanations onto images with numpy/OpenCV (headless exports; the viewer draws its own layers)."""

from __future__ import annotations

import cv2
import numpy as np

from busi_viewer.core.masks import mask_outline

_COLORMAPS = {"viridis": cv2.COLORMAP_VIRIDIS, "inferno": cv2.COLORMAP_INFERNO, "jet": cv2.COLORMAP_JET,
              "hot": cv2.COLORMAP_HOT}
# Viridis by default: its visible part (teal, green, yellow) is not colour Doppler's red and blue, and it stays
# ordered for colour-blind readers; inferno, jet and hot (red to yellow) look like Doppler flow.
DEFAULT_COLORMAP = "viridis"
# Evidence below this share of the image's peak is not drawn at all: the image shows through untouched.
DEFAULT_EVIDENCE_FLOOR = 0.25


def heatmap_alpha(heatmap: np.ndarray, opacity: float, floor: float = DEFAULT_EVIDENCE_FLOOR) -> np.ndarray:
    """Per-pixel weight of the colour over the image, float32 in [0, opacity], for a [0, 1] heatmap: 0 up to
    ``floor``, then rising linearly to ``opacity`` at 1, so weak evidence leaves the image as it was."""
    floor = float(np.clip(floor, 0.0, 0.99))
    values = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    ramp = np.clip((values - floor) / (1.0 - floor), 0.0, 1.0)
    return (float(np.clip(opacity, 0.0, 1.0)) * ramp).astype(np.float32)


def colorize(heatmap: np.ndarray, colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """(H, W) float map in [0, 1] -> (H, W, 3) uint8 RGB through a perceptual colour map."""
    levels = np.clip(np.nan_to_num(heatmap) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(levels, _COLORMAPS[colormap]), cv2.COLOR_BGR2RGB)


def blend_heatmap(rgb: np.ndarray, heatmap: np.ndarray, opacity: float = 0.45, colormap: str = DEFAULT_COLORMAP,
                  floor: float = DEFAULT_EVIDENCE_FLOOR) -> np.ndarray:
    """Blend a [0, 1] (H, W) heatmap over an (H, W, 3) uint8 image; opacity 0 leaves the image as it was.

    The colour's weight at each pixel is :func:`heatmap_alpha`: where the map has little or no evidence the
    image shows through untouched, so the overlay never hides anatomy it says nothing about.
    """
    if rgb.shape[:2] != heatmap.shape:
        raise ValueError(f"heatmap shape {heatmap.shape} does not match image shape {rgb.shape[:2]}")
    weight = heatmap_alpha(heatmap, opacity, floor)[..., None]
    coloured = colorize(heatmap, colormap).astype(np.float32)
    out = rgb.astype(np.float32) * (1.0 - weight) + coloured * weight
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def colour_ramp(colormap: str, floor: float, width: int = 256, height: int = 1, background: int = 255) -> np.ndarray:
    """(height, width, 3) uint8 legend of the heatmap as drawn at full opacity over a ``background`` grey, low
    (left) to high (right): the part below ``floor`` shows the background."""
    ramp = np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :], (height, 1))
    return blend_heatmap(np.full((height, width, 3), background, np.uint8), ramp, 1.0, colormap, floor)


def draw_mask_outline(rgb: np.ndarray, mask: np.ndarray, color=(0, 255, 0), thickness: int = 2) -> np.ndarray:
    """A copy of (H, W, 3) uint8 ``rgb`` with the outline of the bool (H, W) ``mask`` drawn on it."""
    out = np.ascontiguousarray(rgb.copy())
    cv2.polylines(out, mask_outline(mask), isClosed=True, color=color, thickness=thickness, lineType=cv2.LINE_AA)
    return out
