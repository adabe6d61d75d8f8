"""The operating-point rule, shared by the app and training."""

from __future__ import annotations

import numpy as np

from busi_viewer.core.decision import apply_operating_point, override_sentence
from busi_viewer.core.labels import CLASS_NAMES
from busi_viewer.inference.model_card import ModelCard
from busi_viewer.inference.prediction import decide


def test_threshold_overrides_argmax_both_ways():
    probs = np.array([[0.5, 0.3, 0.2], [0.2, 0.45, 0.35], [0.1, 0.2, 0.7]])
    assert apply_operating_point(probs, 1, None).tolist() == [0, 1, 2]
    assert apply_operating_point(probs, 1, 0.25).tolist() == [1, 1, 2]  # low threshold: malignant more often
    assert apply_operating_point(probs, 1, 0.5).tolist() == [0, 2, 2]  # high threshold: next best class


def test_app_decision_matches_the_batch_rule():
    card = ModelCard(name="t", version="0", architecture="tf_efficientnet_lite0", class_names=CLASS_NAMES,
                     thresholds={"malignant": 0.3})
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=50)
    assert [decide(p, card) for p in probs] == apply_operating_point(probs, 1, 0.3).tolist()


def test_the_operating_point_may_be_on_any_output_class():
    from busi_viewer.inference.model_card import ModelCard

    card = ModelCard(name="mg", version="1", architecture="tf_efficientnet_lite0", class_names=("normal", "abnormal"),
                     thresholds={"abnormal": 0.3})
    assert card.operating_point() == ("abnormal", 0.3)
    assert decide(np.array([0.65, 0.35]), card) == 1  # abnormal at p >= 0.3 although normal is more probable
    assert decide(np.array([0.75, 0.25]), card) == 0
    assert card.decision_rule().startswith("abnormal when p(abnormal) ≥ 0.30")
    stale = ModelCard(name="mg", version="1", architecture="tf_efficientnet_lite0", class_names=("normal", "abnormal"),
                      thresholds={"malignant": 0.3})  # a threshold for a class this model does not output
    assert stale.operating_point() is None and decide(np.array([0.65, 0.35]), stale) == 0


def test_the_override_is_said_only_when_the_rule_beats_the_most_probable_class():
    names = ("benign", "malignant", "normal")
    assert override_sentence(names, (0.62, 0.31, 0.07), "malignant", ("malignant", 0.05)) == (
        "Malignant although benign is more probable (0.62): the operating rule decides, p(malignant) = 0.31 ≥ 0.05, "
        "the threshold chosen on validation.")
    assert override_sentence(names, (0.40, 0.45, 0.15), "benign", ("malignant", 0.50)) == (
        "Benign although malignant is more probable (0.45): the operating rule decides, p(malignant) = 0.45 < 0.50, "
        "the threshold chosen on validation.")
    assert override_sentence(names, (0.40, 0.45, 0.15), "malignant", ("malignant", 0.05)) == ""
    assert override_sentence(names, (0.62, 0.31, 0.07), "benign", None) == ""
