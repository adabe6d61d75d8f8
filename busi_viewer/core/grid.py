"""Reduced grids for very large images: what a headless run keeps and draws of a huge image.

A heatmap interpolates a 7x7..16x16 feature map, so drawing it on more than a couple of thousand pixels per side
adds memory, not information: a 10 900 x 10 900 image's float32 map alone is 475 MB. Images up to ``max_side``
keep their own grid; larger ones get the same extent scaled down (aspect ratio kept).
"""

from __future__ import annotations

import cv2
import numpy as np

EXPLANATION_MAX_SIDE = 2048
"""Longest side (pixels) of the grid ``busi-predict`` keeps heatmaps, masks and exported pictures on."""


def reduced_grid(shape: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """(H', W') for an (H, W) image: (H, W) itself when max_side is None or H, W <= max_side, otherwise both
    sides scaled by max_side / max(H, W) (rounded, at least 1)."""
    height, width = int(shape[0]), int(shape[1])
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def rgb_on_grid(rgb: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> (H', W', 3) uint8 area-averaged onto ``grid``; the same array when the grid is its own."""
    if rgb.shape[:2] == tuple(grid):
        return rgb
    return cv2.resize(rgb, (grid[1], grid[0]), interpolation=cv2.INTER_AREA)


def mask_on_grid(mask: np.ndarray | None, grid: tuple[int, int]) -> np.ndarray | None:
    """(H, W) bool -> (H', W') bool on ``grid``: a cell is lesion when any lesion pixel falls in it (a small lesion
    never vanishes from a scaled-down mask); the same array when the grid is its own; None stays None."""
    if mask is None or mask.shape == tuple(grid):
        return mask
    covered = cv2.resize(mask.astype(np.float32), (grid[1], grid[0]), interpolation=cv2.INTER_AREA)
    return covered > 0
