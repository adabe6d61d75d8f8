"""Metrics against hand-computed values and brute force; calibration and operating points on synthetic data."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from training.metrics import (
    accuracy,
    bootstrap_ci,
    confusion_matrix,
    ece_if_calibrated,
    expected_calibration_error,
    fit_temperature,
    macro_f1,
    negative_log_likelihood,
    precision_recall_f1,
    predict_with_threshold,
    probability_errors,
    reliability_bins,
    roc_auc,
    roc_auc_ovr,
    roc_curve,
    softmax,
    summarise,
    threshold_for_sensitivity,
)

Y_TRUE = np.array([0, 0, 0, 1, 1, 2])
Y_PRED = np.array([0, 0, 1, 1, 2, 2])


def test_decision_metrics_by_hand():
    assert confusion_matrix(Y_TRUE, Y_PRED, 3).tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)
    precision, recall, f1, support = precision_recall_f1(Y_TRUE, Y_PRED, 3)
    assert precision.tolist() == pytest.approx([1.0, 0.5, 0.5])
    assert recall.tolist() == pytest.approx([2 / 3, 0.5, 1.0])
    assert f1.tolist() == pytest.approx([0.8, 0.5, 2 / 3])
    assert support.tolist() == [3, 2, 1]
    assert macro_f1(Y_TRUE, Y_PRED, 3) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # a class never predicted: precision 0 by convention, not NaN
    precision, _, f1, _ = precision_recall_f1(np.array([0, 1]), np.array([0, 0]), 2)
    assert precision[1] == 0.0 and f1[1] == 0.0


def test_probability_errors_are_over_all_entries_of_probability_vs_one_hot():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    y = np.array([0, 1])
    # differences: [-0.3, 0.2, 0.1], [0.1, -0.7, 0.6]
    mse = (0.09 + 0.04 + 0.01 + 0.01 + 0.49 + 0.36) / 6
    mae = (0.3 + 0.2 + 0.1 + 0.1 + 0.7 + 0.6) / 6
    errors = probability_errors(y, probs)
    assert errors["mse"] == pytest.approx(mse)
    assert errors["rmse"] == pytest.approx(math.sqrt(mse))
    assert errors["mae"] == pytest.approx(mae)
    assert negative_log_likelihood(y, probs) == pytest.approx(-(math.log(0.7) + math.log(0.3)) / 2)


def test_auc_by_hand_with_ties():
    # positives 0.35, 0.8; negatives 0.1, 0.4, 0.35 -> pairs won: 0.35 beats 0.1, ties 0.35 (half), loses 0.4;
    # 0.8 beats all three -> (1 + 0.5 + 3) / 6
    scores = np.array([0.1, 0.4, 0.35, 0.35, 0.8])
    positive = np.array([False, False, False, True, True])
    assert roc_auc(scores, positive) == pytest.approx(4.5 / 6)
    assert math.isnan(roc_auc(scores, np.zeros(5, bool)))


def test_auc_equals_brute_force_pair_counting_and_roc_area():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 40))
        scores = rng.integers(0, 6, n) / 5.0  # many ties
        positive = rng.random(n) < 0.4
        if positive.all() or not positive.any():
            continue
        pairs = [(1.0 if p > q else 0.5 if p == q else 0.0)
                 for p, q in itertools.product(scores[positive], scores[~positive])]
        assert roc_auc(scores, positive) == pytest.approx(np.mean(pairs))
        fpr, tpr, thresholds = roc_curve(scores, positive)
        assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
        assert np.all(np.diff(thresholds) < 0)
        assert np.trapezoid(tpr, fpr) == pytest.approx(np.mean(pairs))


def test_ovr_auc_per_class_and_macro():
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]])
    y = np.array([0, 0, 1, 2])
    per_class, macro = roc_auc_ovr(y, probs)
    assert per_class.tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert macro == pytest.approx(1.0)
    per_class, macro = roc_auc_ovr(np.array([0, 0, 1, 1]), probs)  # class 2 absent: NaN, left out of macro
    assert math.isnan(per_class[2]) and not math.isnan(macro)


def test_ece_and_reliability_bins_by_hand():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.4 (right; K=3 so top prob can be 0.4)
    probs = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.4, 0.3, 0.3]])
    y = np.array([0, 1, 0, 0])
    bins = reliability_bins(y, probs, 10)
    assert bins["count"].sum() == 4
    assert bins["count"][8] == 2 and bins["count"][5] == 1 and bins["count"][3] == 1  # (0.8, 0.9] etc.
    expected = 2 / 4 * abs(0.5 - 0.9) + 1 / 4 * abs(1 - 0.6) + 1 / 4 * abs(1 - 0.4)
    assert expected_calibration_error(y, probs, 10) == pytest.approx(expected)
    assert expected_calibration_error(y, probs) == pytest.approx(expected)  # 15 bins: same grouping here


def test_ece_if_calibrated_by_hand():
    # One image, confidence 0.8: a calibrated model is right 80 % of the time (ECE 0.2), wrong 20 % (ECE 0.8).
    one = ece_if_calibrated(np.array([[0.2, 0.8, 0.0]]), draws=4000)
    assert one["mean"] == pytest.approx(0.8 * 0.2 + 0.2 * 0.8, abs=0.015)  # MC sd 0.24 / sqrt(4000) = 0.004
    assert one["p95"] == pytest.approx(0.8)
    # Two images at 0.5 in one bin: ECE |right - 1| / 2 is 0.5 (both right or both wrong, 1/2) or 0.
    same_bin = ece_if_calibrated(np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]), draws=4000)
    assert same_bin["mean"] == pytest.approx(0.25, abs=0.02) and same_bin["p95"] == pytest.approx(0.5)
    # 0.5 and 0.9 in separate bins: (E|r1 - 0.5| + E|r2 - 0.9|) / 2 = (0.5 + 0.9 * 0.1 + 0.1 * 0.9) / 2 = 0.34
    # (one pooled bin would give 0.27).
    two_bins = ece_if_calibrated(np.array([[0.5, 0.5, 0.0], [0.9, 0.05, 0.05]]), draws=4000)
    assert two_bins["mean"] == pytest.approx(0.34, abs=0.015)
    assert ece_if_calibrated(np.eye(3)) == {"mean": 0.0, "p95": 0.0}  # certain and calibrated: no error to draw
    assert ece_if_calibrated(np.zeros((0, 3))) == {"mean": None, "p95": None}


def test_ece_if_calibrated_matches_ece_of_labels_drawn_from_the_probabilities():
    rng = np.random.default_rng(5)
    probs = softmax(rng.normal(0.0, 1.5, size=(150, 3)))
    band = ece_if_calibrated(probs)
    cumulative = probs.cumsum(axis=1)
    measured = np.array([expected_calibration_error((rng.random((150, 1)) > cumulative).sum(axis=1), probs)
                         for _ in range(300)])
    assert band["mean"] == pytest.approx(measured.mean(), abs=0.004)
    assert 0.90 <= np.mean(measured <= band["p95"]) <= 0.99
    assert band["mean"] > 0.03  # on 150 images even a calibrated model shows a clear ECE


def test_summarise_reports_the_calibrated_band_of_its_probabilities_not_its_labels():
    probs = np.eye(3)[[1, 2, 0]]  # certain and always wrong
    result = summarise(np.array([0, 1, 2]), probs, n_boot=0)
    assert result["ece"] == pytest.approx(1.0)
    assert result["ece_if_calibrated"] == {"mean": 0.0, "p95": 0.0}


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0.0, 2.0, size=(6000, 3))
    cumulative = softmax(true_logits).cumsum(axis=1)
    y = (rng.random((6000, 1)) > cumulative).sum(axis=1)  # labels drawn from the calibrated probabilities
    for temperature in (0.5, 2.5):
        fitted = fit_temperature(true_logits * temperature, y)
        assert fitted == pytest.approx(temperature, rel=0.08)
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, int)) == 1.0


def test_threshold_reaches_the_target_sensitivity_and_is_the_largest_that_does():
    rng = np.random.default_rng(3)
    y = rng.random(300) < 0.3
    scores = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1)
    for target in (0.8, 0.9, 0.95, 1.0):
        choice = threshold_for_sensitivity(scores, y, target)
        assert choice.sensitivity >= target
        assert np.mean(scores[y] >= choice.threshold) == pytest.approx(choice.sensitivity)
        above = np.nextafter(choice.threshold, np.inf)
        assert np.mean(scores[y] >= above) < target  # any larger threshold misses the target
        assert choice.specificity == pytest.approx(np.mean(scores[~y] < choice.threshold))
    with pytest.raises(ValueError, match="positive"):
        threshold_for_sensitivity(scores, np.zeros(300, bool), 0.9)


def test_predict_with_threshold():
    probs = np.array([[0.5, 0.3, 0.2], [0.3, 0.2, 0.5], [0.7, 0.25, 0.05]])
    assert predict_with_threshold(probs, 1, 0.25).tolist() == [1, 2, 1]
    assert predict_with_threshold(probs, 1, 0.9).tolist() == [0, 2, 0]


def test_bootstrap_ci_contains_the_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    correct = rng.random(150) < 0.8
    statistic = lambda idx: float(np.mean(correct[idx]))  # noqa: E731
    interval = bootstrap_ci(statistic, correct.size, n_boot=500, seed=1)
    assert interval.low <= interval.estimate <= interval.high
    assert interval.estimate == pytest.approx(correct.mean()) and interval.n_valid == 500
    assert 0.05 < interval.high - interval.low < 0.2  # about 4 standard errors of a proportion
    assert bootstrap_ci(statistic, correct.size, n_boot=500, seed=1) == interval
    # cluster bootstrap: duplicated samples move together, so the interval is wider than pretending independence
    doubled = np.repeat(correct, 4)
    groups = np.repeat(np.arange(correct.size), 4)
    naive = bootstrap_ci(lambda i: float(np.mean(doubled[i])), doubled.size, n_boot=500, seed=1)
    clustered = bootstrap_ci(lambda i: float(np.mean(doubled[i])), doubled.size, n_boot=500, seed=1, groups=groups)
    assert clustered.low <= clustered.estimate <= clustered.high
    assert (clustered.high - clustered.low) > 1.5 * (naive.high - naive.low)


def test_summarise_is_json_serialisable_and_consistent():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [40, 20, 12])
    logits = rng.normal(size=(y.size, 3))
    logits[np.arange(y.size), y] += 1.5
    probs = softmax(logits)
    summary = summarise(y, probs, n_boot=200, groups=np.arange(y.size) // 2)
    text = json.dumps(summary, allow_nan=False)
    assert json.loads(text)["n"] == y.size
    assert summary["accuracy"] == pytest.approx(accuracy(y, probs.argmax(1)))
    assert set(summary["per_class"]) == {"benign", "malignant", "normal"}
    assert np.sum(summary["confusion_matrix"]) == y.size
    assert summary["mse"] == pytest.approx(probability_errors(y, probs)["mse"])
    ci = summary["bootstrap"]["intervals"]["accuracy"]
    assert ci["low"] <= summary["accuracy"] <= ci["high"]
    thresholded = summarise(y, probs, n_boot=0, threshold=0.2)
    assert thresholded["decision"] == {"class": "malignant", "threshold": 0.2}
    assert thresholded["sensitivity_malignant"] >= summary["sensitivity_malignant"]
    assert thresholded["bootstrap"]["intervals"] == {}
