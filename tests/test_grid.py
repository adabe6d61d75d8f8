"""Reduced grids for huge images (busi-predict keeps heatmaps, masks and pictures of a huge image on one)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from busi_viewer.core.grid import mask_on_grid, reduced_grid, rgb_on_grid
from busi_viewer.core.report_data import ScaleBar


def test_reduced_grid_scales_the_longer_side_down_and_keeps_small_images():
    assert reduced_grid((130, 2600), 2048) == (102, 2048)  # 130 * 2048 / 2600 = 102.4
    assert reduced_grid((3000, 1000), 1500) == (1500, 500)
    assert reduced_grid((2048, 10), 2048) == (2048, 10)
    assert reduced_grid((100, 50), 2048) == (100, 50)
    assert reduced_grid((5000, 4000), None) == (5000, 4000)
    assert reduced_grid((1, 9000), 900) == (1, 900)  # never 0 rows


def test_a_one_pixel_lesion_survives_the_reduction():
    mask = np.zeros((130, 2600), bool)
    mask[60, 1300] = True
    small = mask_on_grid(mask, (102, 2048))
    assert small.shape == (102, 2048) and small.dtype == bool
    assert small[47, 1024] and small.sum() <= 4  # row 60 * 102 / 130 = 47.1, column 1300 * 2048 / 2600 = 1024
    assert mask_on_grid(mask, (130, 2600)) is mask and mask_on_grid(None, (5, 5)) is None


def test_rgb_on_grid_averages_areas():
    rgb = np.zeros((4, 8, 3), np.uint8)
    rgb[:, :4] = 200  # left half bright
    small = rgb_on_grid(rgb, (2, 4))
    assert small.shape == (2, 4, 3) and (small[:, :2] == 200).all() and (small[:, 2:] == 0).all()
    assert rgb_on_grid(rgb, (4, 8)) is rgb


def test_the_scale_bar_follows_the_image_onto_the_grid():
    bar = ScaleBar(0.1, (10, 20, 2599, 129)).on_grid((130, 2600), (102, 2048))
    assert bar.mm_per_pixel == pytest.approx(0.1 * 2600 / 2048)  # 0.126953125 mm per reduced pixel
    assert bar.region == (7, 15, 2047, 101)  # 10 * 0.7877 = 7.9, 20 * 0.7846 = 15.7, clipped to the grid
    same = ScaleBar(0.2, (0, 0, 9, 9))
    assert same.on_grid((10, 10), (10, 10)) is same


def test_the_predictor_draws_a_huge_images_heatmap_on_the_reduced_grid(tiny_bundle):
    from busi_viewer.inference.backend import load_predictor

    predictor, _ = load_predictor(tiny_bundle, "cpu", "onnx")
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    full = predictor.predict(rgb)
    (reduced,) = predictor.predict_batch([rgb], heatmap_max_side=150)
    assert full.heatmap_raw.shape == (200, 300) and reduced.heatmap_raw.shape == (100, 150)
    np.testing.assert_array_equal(reduced.probabilities, full.probabilities)
    # The same 4 x 4 feature map resampled onto a coarser grid: close to the full map averaged down.
    averaged = cv2.resize(full.heatmap_raw, (150, 100), interpolation=cv2.INTER_AREA)
    assert np.abs(reduced.heatmap_raw - averaged).max() <= 0.02 * full.heatmap_raw.max()
    assert reduced.heatmap.max() == pytest.approx(1.0) and reduced.heatmap.min() >= 0.0
