"""Calibration, the operating threshold and the low-confidence badge, end to end, against values worked out by hand.

The ``calibrated_bundle`` fixture's head ignores the image: its logits are (benign 1.0, malignant 0.5, normal 0.0)
for every input, its temperature T = 0.5, its rule "malignant when p(malignant) >= 0.20", its low-confidence bound
0.70. By hand, softmax(logits / T) = softmax(2, 1, 0):

    e^2 = 7.389056, e^1 = 2.718282, e^0 = 1, sum = 11.107338
    p(benign) = 0.665241, p(malignant) = 0.244728, p(normal) = 0.090031

so the arg-max (benign) is overruled by the threshold (0.2447 >= 0.20: malignant), and the largest probability
0.665 is below 0.70: low confidence. Temperature applied the wrong way round (logits * T) would give
(0.419, 0.326, 0.254); no calibration (T = 1) would give (0.506, 0.307, 0.186).
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image
from PySide6.QtWidgets import QLabel

from busi_viewer.cli.predict import main as predict_main
from busi_viewer.inference.backend import load_predictor
from tests.helpers.gui import open_window

BY_HAND = {"benign": 0.665241, "malignant": 0.244728, "normal": 0.090031}
DECIDED = "malignant"
WAIT_MS = 60_000


def _speckle(seed: int, size=(160, 200)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, size=size, dtype=np.uint8)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_predictor_applies_temperature_threshold_and_low_confidence(calibrated_bundle, backend):
    predictor, _ = load_predictor(calibrated_bundle, "cpu", backend)
    prediction = predictor.predict(np.stack([_speckle(1)] * 3, axis=-1))
    for name, expected in BY_HAND.items():
        assert prediction.probability(name) == pytest.approx(expected, abs=1e-5), name
    assert prediction.predicted_class == DECIDED  # not the arg-max: the card's threshold decides
    assert prediction.low_confidence is True


def test_busi_predict_writes_the_calibrated_numbers_and_decision(calibrated_bundle, tmp_path):
    folder = tmp_path / "cases"
    folder.mkdir()
    Image.fromarray(_speckle(2)).save(folder / "a.png")
    out = tmp_path / "out"
    assert predict_main([str(folder), "--model", str(calibrated_bundle), "--out", str(out), "--no-progress",
                         "--device", "cpu"]) == 0
    with (out / "predictions.csv").open(newline="", encoding="utf-8") as handle:
        (row,) = list(csv.DictReader(handle))
    for name, expected in BY_HAND.items():
        assert float(row[f"p_{name}"]) == pytest.approx(expected, abs=1e-4), name
    assert row["predicted_class"] == DECIDED
    assert row["low_confidence"] == "1"


def test_viewer_shows_the_calibrated_numbers_badge_and_override(qtbot, calibrated_bundle, tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    Image.fromarray(_speckle(3)).save(folder / "one.png")
    window = open_window(qtbot, calibrated_bundle)
    try:
        with qtbot.waitSignal(window.resultShown, timeout=WAIT_MS):
            assert window.open_folder(folder)
        panel = window.result_panel
        shown = {name: panel.findChild(QLabel, f"prob_value_{name}").text() for name in BY_HAND}
        assert shown == {"benign": "0.67", "malignant": "0.24", "normal": "0.09"}
        assert panel.findChild(QLabel, "predicted_label").text() == DECIDED
        badge = panel.findChild(QLabel, "low_confidence_badge")
        assert badge.isVisible() and "0.70" in badge.text()
        override = panel.findChild(QLabel, "decision_override")
        assert override.isVisible()
        assert override.text() == ("Malignant although benign is more probable (0.67): the operating rule decides, "
                                   "p(malignant) = 0.24 ≥ 0.20, the threshold chosen on validation.")
    finally:
        window.close()


def test_softmax_is_taken_per_image_and_survives_extreme_logits():
    from busi_viewer.inference.prediction import calibrated_probabilities

    expected = [BY_HAND["benign"], BY_HAND["malignant"], BY_HAND["normal"]]
    # one image's logits (K,): softmax(2, 1, 0) / 1
    np.testing.assert_allclose(calibrated_probabilities(np.array([2.0, 1.0, 0.0]), 1.0), expected, atol=1e-6)
    # rows 1000 apart: each row is shifted by its own maximum (shifted by the batch's, the second row's
    # exponentials would all underflow to 0 / 0; shifted the wrong way, the first row's would overflow)
    batch = calibrated_probabilities(np.array([[1000.0, 999.0, 998.0], [0.0, -1.0, -2.0], [1000.0, 0.0, -1000.0]]),
                                     1.0)
    np.testing.assert_allclose(batch[:2], [expected, expected], atol=1e-6)
    np.testing.assert_array_equal(batch[2], [1.0, 0.0, 0.0])
    assert batch.dtype == np.float32  # what Prediction promises, from float64 logits as from float32 ones
    assert calibrated_probabilities(np.zeros((1, 3), np.float32), 0.5).dtype == np.float32


def test_predict_batch_explains_by_default_shares_its_time_and_reduces_heatmaps(calibrated_bundle):
    import time

    predictor, _ = load_predictor(calibrated_bundle, "cpu", "torch")
    images = [np.stack([_speckle(seed)] * 3, axis=-1) for seed in (4, 5)]  # 160 x 200
    start = time.perf_counter()
    predictions = predictor.predict_batch(images)
    took = time.perf_counter() - start
    for prediction in predictions:
        assert prediction.heatmap_raw is not None and prediction.heatmap_raw.shape == (160, 200)
        assert 0 < prediction.seconds <= took / 2  # the batch's time shared by its two images
    # at most 50 px a side: 160 x 200 scaled by 50 / 200
    assert [p.heatmap_raw.shape for p in predictor.predict_batch(images, heatmap_max_side=50)] == [(40, 50)] * 2


def test_predict_batch_scores_each_image_against_the_bundles_scope_check(calibrated_bundle, tmp_path):
    from busi_viewer.inference.bundle import load_bundle
    from busi_viewer.inference.scope import image_statistics
    from tests.helpers.scope import guard_score_by_hand, guarded_copy, phantom_rgb, pooled_by_hand

    guarded, check = guarded_copy(calibrated_bundle, tmp_path)
    loaded = load_bundle(guarded)
    images = [phantom_rgb("benign", 9, (96, 112)), np.stack([_speckle(6)] * 3, axis=-1)]
    by_hand = np.maximum(
        guard_score_by_hand(check.features, pooled_by_hand(loaded.model, loaded.card, images))
        / check.features.threshold,
        guard_score_by_hand(check.image, np.stack([image_statistics(rgb) for rgb in images])) / check.image.threshold)
    predictions = load_predictor(guarded, "cpu", "torch")[0].predict_batch(images)
    for prediction, score in zip(predictions, by_hand):
        assert prediction.scope_score == pytest.approx(score, rel=1e-3)  # float32 features of a folded copy
        assert prediction.in_scope is bool(score <= 1.0)
    assert sorted(p.in_scope for p in predictions) == [False, True]  # both outcomes seen


def test_a_largest_probability_exactly_at_the_bound_is_not_low_confidence(calibrated_bundle, tmp_path):
    import dataclasses
    import shutil

    from busi_viewer.inference.bundle import update_bundle

    rgb = np.stack([_speckle(7)] * 3, axis=-1)
    largest = float(load_predictor(calibrated_bundle, "cpu", "torch")[0].predict(rgb).probabilities.max())
    at_bound = tmp_path / "at-bound"
    shutil.copytree(calibrated_bundle, at_bound)
    update_bundle(at_bound, lambda staged, card: dataclasses.replace(card, low_confidence_below=largest))
    prediction = load_predictor(at_bound, "cpu", "torch")[0].predict(rgb)
    assert float(prediction.probabilities.max()) == largest and prediction.low_confidence is False
