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
from busi_viewer.inference.scope import ScopeGuard, bundle_scope_guard, fit_scope_guard, read_scope_guard
from tests.helpers.scope import guarded_copy, phantom_rgb, pooled_by_hand


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
    bundle, guard = guarded_copy(tiny_bundle, tmp_path)
    predictor, _ = load_predictor(bundle, "cpu", backend)
    images = [phantom_rgb("malignant", seed=50 + k, size=(80, 100)) for k in range(3)]
    images.append(np.full((90, 90, 3), 255, np.uint8))  # a blank white page
    results = predictor.predict_batch(images)
    pooled = pooled_by_hand(load_bundle(bundle).model, predictor.card, images)
    centred = pooled.astype(np.float64) - guard.mean
    within = ((centred @ guard.components) / guard.scales) ** 2
    outside = (centred ** 2).sum(1) - ((centred @ guard.components) ** 2).sum(1)
    expected = 0.5 * (within.mean(1) + outside / guard.residual_scale)
    assert [r.scope_score for r in results] == pytest.approx(expected, rel=1e-3)
    assert [r.in_scope for r in results] == [bool(s <= guard.threshold) for s in expected]


def test_a_bundle_without_a_guard_predicts_without_scope(tiny_bundle):
    predictor, _ = load_predictor(tiny_bundle, "cpu", "onnx")
    result = predictor.predict(phantom_rgb("benign", seed=1, size=(80, 80)))
    assert result.scope_score is None and result.in_scope is None
    assert bundle_scope_guard(tiny_bundle, predictor.card) is None


def test_a_modified_or_missing_guard_is_refused(tiny_bundle, tmp_path):
    bundle, guard = guarded_copy(tiny_bundle, tmp_path)
    card = json.loads((bundle / "model_card.json").read_text())
    assert read_scope_guard(bundle, card["scope_guard"]["file_sha256"]).threshold == guard.threshold
    tampered = dataclasses.replace(guard, threshold=guard.threshold * 100)
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
