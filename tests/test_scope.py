"""The scope guard: its score and threshold against values computed by hand, its file verified like the weights,
and every prediction of both runtimes carrying it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from busi_viewer.core.errors import BundleError
from busi_viewer.core.hashing import sha256_file
from busi_viewer.inference.backend import load_predictor
from busi_viewer.inference.bundle import load_bundle
from busi_viewer.inference.bundle_files import SCOPE_FILENAME
from busi_viewer.inference.scope import (
    ScopeCheck,
    ScopeGuard,
    bundle_scope_guard,
    fit_scope_guard,
    image_statistics,
    margin_flagging_at_most,
    read_scope_guard,
)
from tests.helpers.scope import guard_score_by_hand, guarded_copy, phantom_rgb, pooled_by_hand


def test_score_is_the_mean_of_the_whitened_and_the_residual_energy():
    # C = 2, one principal direction (x) with standard deviation 2; mean squared residual 4 on training
    guard = ScopeGuard(np.zeros(2), np.array([[1.0], [0.0]]), np.array([2.0]), 4.0, threshold=1.5)
    # (2, 2): whitened (2/2)^2 = 1, residual 2^2 / 4 = 1 -> 1; (4, 0): 4 and 0 -> 2; (0, 4): 0 and 16/4 -> 2
    assert guard.scores(np.array([[2.0, 2.0], [4.0, 0.0], [0.0, 4.0], [0.0, 0.0]])) == pytest.approx([1, 2, 2, 0])
    assert guard.in_scope(1.5) and not guard.in_scope(1.5001)


def test_a_typical_training_image_scores_about_one():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 10)) * np.linspace(5, 0.5, 10) + 3.0
    guard = fit_scope_guard(features, components=4)
    assert guard.components.shape == (10, 4)
    # along the components: mean of z^2 = (N - 1) / N (the scales are sample standard deviations); outside: 1
    assert guard.scores(features).mean() == pytest.approx(0.5 * (199 / 200 + 1))
    assert guard.scales == pytest.approx(np.sort(np.linalg.svd(features - features.mean(0), compute_uv=False))[::-1][:4]
                                         / np.sqrt(199))
    # the mean scores 0; ten standard deviations along the first direction: z = (10, 0, 0, 0) -> 0.5 * 100 / 4
    mean = features.mean(0)
    far = mean + 10 * guard.scales[0] * guard.components[:, 0]
    assert guard.scores(np.stack([mean, far])) == pytest.approx([0.0, 12.5])
    # fewer images than components: as many components as the images span
    assert fit_scope_guard(features[:5], components=64).components.shape == (10, 4)


def test_threshold_flags_at_most_five_percent_of_each_source_s_validation_images():
    guard = ScopeGuard(np.zeros(1), np.ones((1, 1)), np.ones(1), 1.0)
    # 20 images 1..20: one may be flagged -> 19; 10 images: none may be flagged -> their maximum, 5
    fitted = guard.with_threshold({"a": np.arange(1, 21, dtype=float), "b": np.array([0.5] * 9 + [5.0])})
    assert fitted.threshold == 19.0
    fitted = guard.with_threshold({"a": np.arange(1, 21, dtype=float), "b": np.array([0.5] * 9 + [25.0])})
    assert fitted.threshold == 25.0
    # 100 images 1..100: five may be flagged -> 95
    assert guard.with_threshold({"a": np.arange(1, 101, dtype=float)}).threshold == 95.0


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_every_prediction_carries_its_scope_score(tiny_bundle, tmp_path, backend):
    bundle, check = guarded_copy(tiny_bundle, tmp_path)
    predictor, _ = load_predictor(bundle, "cpu", backend)
    images = [phantom_rgb("malignant", seed=50 + k, size=(80, 100)) for k in range(3)]
    images.append(np.full((90, 90, 3), 255, np.uint8))  # a blank white page
    results = predictor.predict_batch(images)
    pooled = pooled_by_hand(load_bundle(bundle).model, predictor.card, images)
    statistics = np.stack([image_statistics(image) for image in images])
    expected = np.maximum(guard_score_by_hand(check.features, pooled) / check.features.threshold,
                          guard_score_by_hand(check.image, statistics) / check.image.threshold)
    assert [r.scope_score for r in results] == pytest.approx(expected, rel=1e-3)
    assert [r.in_scope for r in results] == [bool(s <= 1.0) for s in expected]
    assert results[-1].in_scope is False  # the blank page is nothing like the phantoms


def test_image_statistics_by_hand():
    grey = np.full((64, 64, 3), 100, np.uint8)
    # no colour, no edges, no speckle (std 0 in every block)
    assert image_statistics(grey) == pytest.approx([0, 0, 0, 0, 0, 0])
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 255
    # |R - G| = 255 -> 1; |(R + G) / 2 - B| = 127.5 -> 0.5; dark blocks (grey mean 85 > 20) have std 0
    assert image_statistics(red)[:2] == pytest.approx([1.0, 0.5])
    stripes = np.zeros((128, 128, 3), np.uint8)
    stripes[:, ::2] = 200  # 8 x 8 blocks of alternating columns: mean 100, std 100 -> ratio 1
    assert image_statistics(stripes)[4:] == pytest.approx([1.0, 1.0])


def test_the_check_flags_when_either_guard_does():
    one = ScopeGuard(np.zeros(1), np.ones((1, 1)), np.ones(1), 1.0, threshold=2.0)
    check = ScopeCheck(one, dataclasses.replace(one, threshold=4.0))
    # distances 0.5 * x^2: features x = 2 -> 2 (ratio 1.0), image x = 3 -> 4.5 (ratio 1.125)
    scores = check.scores(np.array([[2.0], [0.0]]), np.array([[0.0], [3.0]]))
    assert scores == pytest.approx([1.0, 1.125])
    assert check.in_scope(scores[0]) and not check.in_scope(scores[1])


def test_a_bundle_without_a_guard_predicts_without_scope(tiny_bundle):
    predictor, _ = load_predictor(tiny_bundle, "cpu", "onnx")
    result = predictor.predict(phantom_rgb("benign", seed=1, size=(80, 80)))
    assert result.scope_score is None and result.in_scope is None
    assert bundle_scope_guard(tiny_bundle, predictor.card) is None


def test_a_modified_or_missing_guard_is_refused(tiny_bundle, tmp_path):
    bundle, check = guarded_copy(tiny_bundle, tmp_path)
    card = json.loads((bundle / "model_card.json").read_text())
    read = read_scope_guard(bundle, card["scope_guard"]["file_sha256"])
    assert read.image.threshold == pytest.approx(check.image.threshold)
    tampered = ScopeCheck(check.features, dataclasses.replace(check.image, threshold=check.image.threshold * 100))
    tampered.save(bundle / SCOPE_FILENAME)
    with pytest.raises(BundleError, match="scope_guard.npz does not match its model card"):
        load_predictor(bundle, "cpu", "torch")
    (bundle / SCOPE_FILENAME).unlink()
    with pytest.raises(BundleError, match="scope_guard.npz is missing"):
        load_predictor(bundle, "cpu", "onnx")


def test_a_guard_file_with_pickled_objects_is_never_unpickled(tiny_bundle, tmp_path):
    bundle, _ = guarded_copy(tiny_bundle, tmp_path)
    with (bundle / SCOPE_FILENAME).open("wb") as handle:
        np.savez(handle, mean=np.array([object()], dtype=object))
    with pytest.raises(BundleError, match="not a valid scope guard"):
        read_scope_guard(bundle, sha256_file(bundle / SCOPE_FILENAME))


def test_a_guard_over_every_direction_scores_the_whitened_distance_alone():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(50, 3)) * (3.0, 1.0, 0.5)
    guard = fit_scope_guard(values, components=64)  # only 3 directions exist
    assert guard.components.shape == (3, 3) and guard.residual_scale == np.inf
    # a point 2 standard deviations along the second direction: z = (0, 2, 0) -> 0.5 * 4 / 3, no residual term
    point = guard.mean + 2 * guard.scales[1] * guard.components[:, 1]
    assert guard.scores(point[None])[0] == pytest.approx(0.5 * 4 / 3)


def test_a_margin_divides_every_score_and_is_never_a_narrowing():
    one = ScopeGuard(np.zeros(1), np.ones((1, 1)), np.ones(1), 1.0, threshold=2.0)
    check = ScopeCheck(one, dataclasses.replace(one, threshold=4.0))
    wide = check.widened(1.5)
    assert (wide.features.threshold, wide.image.threshold) == (3.0, 6.0)
    # as in test_the_check_flags_when_either_guard_does: ratios 1.0 and 1.125 before, / 1.5 after
    assert wide.scores(np.array([[2.0], [0.0]]), np.array([[0.0], [3.0]])) == pytest.approx([2 / 3, 0.75])
    with pytest.raises(ValueError, match=">= 1"):
        check.widened(0.9)


def test_the_margin_that_flags_at_most_a_share_by_hand():
    scores = np.array([0.2, 0.5, 0.8, 0.9, 1.1, 1.3, 1.6, 2.0, 2.4, 5.0])
    # 10 % of 10 may stay above the margin: one score (5.0); the smallest margin with only it above is 2.4
    assert margin_flagging_at_most(scores, 0.10) == pytest.approx(2.4)
    assert margin_flagging_at_most(scores, 0.30) == pytest.approx(1.6)  # three above: 2.0, 2.4, 5.0
    assert margin_flagging_at_most(scores[:4], 0.10) == 1.0  # all within 1 already: no widening


def test_a_saved_check_scores_as_the_fitted_one_when_features_barely_leave_its_span(tmp_path):
    # Grey images: the two colour statistics are 0 for every training image, so 4 components of the 6 statistics
    # leave only rounding outside, and the residual scale is its floor, 1e-9 of the mean energy. A training image
    # must score what it scored before saving: float32 components (rounding ~1e-8) put it at thousands, out of
    # scope, and so did a floor of 1e-12 (rounding noise of ~1e-16 of the energy, divided by it).
    rng = np.random.default_rng(3)
    values = np.zeros((12, 6))
    values[:, 2:] = rng.normal([0.3, 0.7, 0.2, 0.35], [0.02, 0.05, 0.01, 0.03], size=(12, 4))
    fitted = fit_scope_guard(values, components=4)
    mean_energy = ((values - values.mean(axis=0)) ** 2).sum() / 12
    assert fitted.residual_scale == pytest.approx(1e-9 * mean_energy)
    check = ScopeCheck(fitted.with_threshold({"us": fitted.scores(values)}, 0.1),
                       fitted.with_threshold({"us": fitted.scores(values)}, 0.1))
    path = tmp_path / SCOPE_FILENAME
    loaded = read_scope_guard(tmp_path, check.save(path))
    np.testing.assert_allclose(loaded.image.scores(values), guard_score_by_hand(fitted, values), rtol=1e-5)
    assert loaded.image.scores(values).max() < 3  # 0.5 x the mean squared whitened distance, as fitted
    colour = values[:1].copy()
    colour[0, 0] = 0.01  # a little colour: far outside a span fitted on grey images
    assert loaded.image.scores(colour)[0] > 1e4
