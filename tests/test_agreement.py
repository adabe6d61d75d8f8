"""Heatmap-vs-mask agreement on hand-made maps whose answers are known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from busi_viewer.core.agreement import (
    AgreementResult,
    agreement,
    centre_prior,
    energy_in_mask,
    iou,
    pointing_game,
    threshold_fixed,
    threshold_otsu,
    threshold_top_fraction,
)


def _box(shape, y0, y1, x0, x1) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_iou_perfect_disjoint_partial_and_empty():
    a = _box((10, 10), 2, 6, 2, 6)
    assert iou(a, a) == 1.0
    assert iou(a, _box((10, 10), 7, 9, 7, 9)) == 0.0
    assert iou(a, _box((10, 10), 2, 6, 4, 8)) == pytest.approx(8 / 24)
    assert math.isnan(iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)))
    with pytest.raises(ValueError, match=r"\(10, 10\).*\(3, 3\)"):
        iou(a, np.zeros((3, 3), bool))


def test_threshold_fixed_is_relative_to_the_maximum():
    heatmap = np.array([[0.0, 1.0], [2.0, 4.0]]) * 7.5  # any scale
    np.testing.assert_array_equal(threshold_fixed(heatmap, 0.5), [[False, False], [True, True]])
    np.testing.assert_array_equal(threshold_fixed(heatmap, 0.25), [[False, True], [True, True]])
    assert not threshold_fixed(np.zeros((2, 2))).any()
    with pytest.raises(ValueError):
        threshold_fixed(heatmap, 1.5)


def test_otsu_splits_a_bimodal_map():
    rng = np.random.default_rng(0)
    heatmap = rng.uniform(0.0, 0.2, (40, 40))
    blob = _box((40, 40), 10, 20, 5, 25)
    heatmap[blob] = rng.uniform(0.7, 1.0, blob.sum())
    np.testing.assert_array_equal(threshold_otsu(heatmap * 100), blob)


def test_otsu_matches_scikit_image():
    skimage_filters = pytest.importorskip("skimage.filters")
    rng = np.random.default_rng(1)
    heatmap = np.concatenate([rng.normal(0.3, 0.05, 600), rng.normal(0.7, 0.1, 400)]).clip(0.01).reshape(25, 40)
    ours = threshold_otsu(heatmap)
    theirs = heatmap / heatmap.max() > skimage_filters.threshold_otsu(heatmap / heatmap.max(), nbins=256)
    assert np.mean(ours != theirs) < 0.01  # same split up to pixels on the boundary bin


def test_otsu_on_constant_maps_is_empty():
    assert not threshold_otsu(np.full((5, 5), 3.0)).any()
    assert not threshold_otsu(np.zeros((5, 5))).any()


def test_top_fraction_area_is_exact_and_ties_are_row_major():
    heatmap = np.arange(100, dtype=float).reshape(10, 10)
    top = threshold_top_fraction(heatmap, 0.1)
    assert top.sum() == 10 and top[9].all()  # the last row holds the 10 largest values

    flat = np.ones((4, 5))  # all tied: the first pixels in row-major order win
    top = threshold_top_fraction(flat, 0.25)
    assert top.sum() == 5 and top[0].all()

    ties = np.array([[1.0, 5.0, 3.0, 3.0], [3.0, 0.5, 3.0, 2.0]])
    top = threshold_top_fraction(ties, 0.375)  # 3 pixels: the 5, then the first two of the four 3s
    np.testing.assert_array_equal(top, [[False, True, True, True], [False, False, False, False]])


def test_top_fraction_never_selects_zeros():
    heatmap = np.zeros((10, 10))
    heatmap[0, :3] = 1.0
    assert threshold_top_fraction(heatmap, 0.1).sum() == 3
    assert not threshold_top_fraction(np.zeros((4, 4)), 0.5).any()
    with pytest.raises(ValueError):
        threshold_top_fraction(heatmap, 0.0)


def test_pointing_game_in_out_and_tolerance():
    mask = _box((20, 20), 5, 10, 5, 10)
    heatmap = np.zeros((20, 20))
    heatmap[7, 7] = 1.0
    assert pointing_game(heatmap, mask)
    heatmap[7, 7] = 0.0
    heatmap[7, 13] = 1.0  # 4 px right of the mask's last column (x = 9)
    assert not pointing_game(heatmap, mask)
    assert not pointing_game(heatmap, mask, tolerance_px=3.9)
    assert pointing_game(heatmap, mask, tolerance_px=4)
    heatmap[13, 13] = 1.0  # a tie: the first maximum in row-major order, (7, 13), is the one that points
    assert pointing_game(heatmap, mask, tolerance_px=4)
    with pytest.raises(ValueError, match="all zero"):
        pointing_game(np.zeros((20, 20)), mask)


def test_energy_share_exact():
    heatmap = np.array([[1.0, 3.0], [0.0, 4.0]])
    mask = np.array([[True, False], [False, True]])
    assert energy_in_mask(heatmap, mask) == pytest.approx(5 / 8)
    assert energy_in_mask(heatmap, np.ones((2, 2), bool)) == 1.0
    assert energy_in_mask(heatmap, np.zeros((2, 2), bool)) == 0.0
    assert math.isnan(energy_in_mask(np.zeros((2, 2)), mask))


def test_centre_prior():
    prior = centre_prior((5, 9))
    assert prior.dtype == np.float32 and prior.shape == (5, 9)
    assert np.unravel_index(np.argmax(prior), prior.shape) == (2, 4) and prior[2, 4] == 1.0
    np.testing.assert_array_equal(prior, prior[::-1, ::-1])  # symmetric about the centre
    assert prior.min() > 0


def test_agreement_perfect_map_beats_the_baseline():
    mask = _box((40, 60), 2, 10, 3, 15)  # a lesion in the corner, away from the centre prior
    heatmap = mask.astype(float) * 3.0
    result = agreement(heatmap, mask, top_fraction=mask.mean())
    assert result.reason is None
    assert result.iou_fixed == 1.0 and result.iou_otsu == 1.0 and result.iou_top == 1.0
    assert result.pointing_hit is True and result.energy_in_mask == 1.0

    base = result.baseline
    assert isinstance(base, AgreementResult) and base.baseline is None
    assert base.pointing_hit is False
    assert base.iou_fixed < 0.1 and base.energy_in_mask < 0.1
    expected = iou(threshold_fixed(centre_prior(mask.shape), 0.5), mask)
    assert base.iou_fixed == pytest.approx(expected)


def test_agreement_disjoint_map():
    mask = _box((20, 20), 0, 5, 0, 5)
    heatmap = _box((20, 20), 12, 18, 12, 18).astype(float)
    result = agreement(heatmap, mask)
    assert result.iou_fixed == 0.0 and result.iou_otsu == 0.0 and result.iou_top == 0.0
    assert result.pointing_hit is False and result.energy_in_mask == 0.0


def test_agreement_on_an_empty_mask_is_undefined_not_zero():
    result = agreement(np.random.default_rng(2).random((8, 8)), np.zeros((8, 8), bool))
    assert result.reason == "empty mask" and result.baseline is None
    assert result.iou_fixed is None and result.iou_otsu is None and result.iou_top is None
    assert result.pointing_hit is None and result.energy_in_mask is None


def test_agreement_on_an_all_zero_heatmap_keeps_the_baseline():
    mask = _box((8, 8), 3, 5, 3, 5)
    result = agreement(np.zeros((8, 8)), mask)
    assert result.reason == "heatmap is all zero"
    assert result.iou_fixed is None and result.pointing_hit is None
    assert result.baseline is not None and result.baseline.pointing_hit is True


def test_shape_mismatch_and_bad_heatmaps():
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(4, 4\)"):
        agreement(np.ones((4, 4)), np.ones((4, 5), bool))
    with pytest.raises(ValueError, match=">= 0"):
        agreement(-np.ones((4, 4)), np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="NaN"):
        agreement(np.full((4, 4), np.nan), np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="2-D"):
        agreement(np.ones((4, 4, 3)), np.ones((4, 4), bool))


_SHAPES = st.tuples(st.integers(1, 12), st.integers(1, 12))


@st.composite
def _map_and_mask(draw):
    shape = draw(_SHAPES)
    heatmap = draw(arrays(np.float64, shape, elements=st.floats(0, 1e6, allow_subnormal=False)))
    mask = draw(arrays(np.bool_, shape))
    return heatmap, mask


@settings(max_examples=150, deadline=None)
@given(_map_and_mask(), st.floats(0.05, 1.0), st.floats(0.01, 1.0))
def test_scores_are_in_unit_interval(pair, level, fraction):
    heatmap, mask = pair
    result = agreement(heatmap, mask, fixed_level=level, top_fraction=fraction)
    if not mask.any():
        assert result.reason == "empty mask"
        return
    for scores in (result, result.baseline):
        if scores.reason:
            continue
        for value in (scores.iou_fixed, scores.iou_otsu, scores.iou_top, scores.energy_in_mask):
            assert 0.0 <= value <= 1.0
        assert isinstance(scores.pointing_hit, bool)


@given(_map_and_mask(), st.integers(0, 10**6))
def test_iou_is_symmetric(pair, seed):
    _, a = pair
    b = np.random.default_rng(seed).random(a.shape) < 0.5
    first, second = iou(a, b), iou(b, a)
    assert (math.isnan(first) and math.isnan(second)) or first == second
