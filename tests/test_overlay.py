"""Heatmap overlays and mask outlines drawn for exports."""

from __future__ import annotations

import numpy as np
import pytest

from busi_viewer.core.overlay import blend_heatmap, colorize, draw_mask_outline, heatmap_alpha


def test_opacity_zero_leaves_the_image_and_higher_opacity_changes_it_more():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    heatmap = np.zeros((40, 50), np.float32)
    heatmap[10:30, 10:30] = 1.0
    assert np.array_equal(blend_heatmap(image, heatmap, 0.0), image)
    weak = np.abs(blend_heatmap(image, heatmap, 0.3).astype(int) - image).sum()
    strong = np.abs(blend_heatmap(image, heatmap, 0.9).astype(int) - image).sum()
    assert 0 < weak < strong
    # where the map is zero the image shows through untouched
    assert np.array_equal(blend_heatmap(image, heatmap, 0.9)[:5], image[:5])


def test_colorize_is_rgb_and_spans_the_colour_map():
    ramp = np.tile(np.linspace(0, 1, 256, dtype=np.float32), (4, 1))
    coloured = colorize(ramp, "inferno")
    assert coloured.shape == (4, 256, 3) and coloured.dtype == np.uint8
    # inferno: near black at 0, bright yellow at 1 (R and G high, B lower) -> proves RGB, not BGR, order
    assert coloured[0, 0].max() < 20
    r, g, b = coloured[0, -1]
    assert r > 200 and g > 200 and b < r
    # the default, viridis: dark violet (68, 1, 84) at 0, yellow (253, 231, 37) at 1, teal-green halfway
    default = colorize(ramp)
    assert np.abs(default[0, 0].astype(int) - (68, 1, 84)).max() <= 3
    assert np.abs(default[0, -1].astype(int) - (253, 231, 37)).max() <= 3
    r, g, b = default[0, 128]
    assert g > r and g > 120


def test_weak_evidence_is_not_drawn_and_the_rest_ramps_up_to_the_opacity():
    heatmap = np.array([[0.0, 0.1, 0.25, 0.625, 1.0]], np.float32)
    # floor 0.25, opacity 0.8: 0 up to the floor, then 0.8 * (h - 0.25) / 0.75
    assert heatmap_alpha(heatmap, 0.8, 0.25)[0] == pytest.approx([0.0, 0.0, 0.0, 0.4, 0.8])
    assert heatmap_alpha(heatmap, 0.5, 0.0)[0] == pytest.approx([0.0, 0.05, 0.125, 0.3125, 0.5])
    image = np.full((1, 5, 3), 100, np.uint8)
    blended = blend_heatmap(image, heatmap, 0.8, floor=0.25)
    assert np.array_equal(blended[0, :3], image[0, :3])  # below and at the floor: the image untouched
    yellow = np.array([253, 231, 37])
    assert np.abs(blended[0, 4].astype(int) - np.rint(100 * 0.2 + yellow * 0.8)).max() <= 3


def test_mask_outline_is_drawn_on_the_border_only():
    image = np.zeros((50, 50, 3), np.uint8)
    mask = np.zeros((50, 50), bool)
    mask[10:40, 15:35] = True
    out = draw_mask_outline(image, mask, color=(0, 255, 0), thickness=1)
    assert out[10, 20, 1] > 0 and out[25, 15, 1] > 0
    assert out[25, 25].sum() == 0 and out[2, 2].sum() == 0
    assert image.sum() == 0  # the input is not modified


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="does not match"):
        blend_heatmap(np.zeros((10, 10, 3), np.uint8), np.zeros((5, 5), np.float32))
