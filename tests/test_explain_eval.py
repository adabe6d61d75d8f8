"""Explanation-vs-mask scoring, threshold tuning and the model-randomisation sanity check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from busi_viewer.core.labels import CLASS_NAMES
from busi_viewer.inference.architectures import build_classifier
from busi_viewer.inference.model_card import ModelCard, PreprocessSpec
from busi_viewer.inference.predictor import Predictor
from busi_viewer.inference.pretrained import load_imagenet_backbone
from training.explain_eval import (
    THRESHOLD_GRID,
    MapScore,
    randomisation_check,
    randomised_copy,
    score_maps,
    spearman,
    summarise_scores,
    tune_threshold,
)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    torch.manual_seed(0)
    model = build_classifier("tf_efficientnet_lite0", 3)
    load_imagenet_backbone(model)
    card = ModelCard(name="t", version="0", architecture="tf_efficientnet_lite0", class_names=CLASS_NAMES,
                     preprocess=PreprocessSpec(input_size=160))
    return Predictor(model, card)


def _phantom(seed: int, lesion: bool):
    rng = np.random.default_rng(seed)
    image = np.clip(rng.rayleigh(50, (150, 200)), 0, 255).astype(np.uint8)
    mask = np.zeros((150, 200), bool)
    if lesion:
        yy, xx = np.mgrid[:150, :200]
        cy, cx = rng.integers(40, 110), rng.integers(50, 150)
        mask = ((yy - cy) / 25) ** 2 + ((xx - cx) / 35) ** 2 <= 1
        image[mask] //= 4
    return np.repeat(image[..., None], 3, -1), mask


def test_spearman_basics():
    a = np.arange(12, dtype=float).reshape(3, 4)
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    tied = np.array([[0, 0, 1, 2]], float)
    assert spearman(tied, np.array([[0, 0, 5, 9]], float)) == pytest.approx(1.0)
    assert np.isnan(spearman(np.zeros((2, 2)), a[:2, :2]))


def test_score_maps_skips_empty_masks_and_scores_the_baseline(predictor):
    images = [(*_phantom(1, True), 0), (*_phantom(2, False), 2), (*_phantom(3, True), 1)]
    scores = score_maps(predictor, images)
    assert [s.label for s in scores] == [0, 1]
    for score in scores:
        assert 0 <= score.energy_in_mask <= 1 and 0 <= score.iou_otsu <= 1
        assert set(score.iou_by_level) == set(THRESHOLD_GRID)
        assert 0 <= score.baseline_energy_in_mask <= 1
    summary = summarise_scores(scores, CLASS_NAMES, level=0.5)
    assert summary["all"]["n"] == 2
    assert summary["per_class"]["normal"] == {"n": 0}
    assert summary["per_class"]["benign"]["n"] == 1


def _score(ious: dict) -> MapScore:
    by_level = {level: ious.get(level, 0.0) for level in THRESHOLD_GRID}
    return MapScore(0, 0, True, 0.5, 0.3, by_level, True, 0.4, 0.2)


def test_tune_threshold_picks_the_best_mean_iou_on_validation():
    scores = [_score({0.3: 0.6, 0.5: 0.5}), _score({0.3: 0.4, 0.5: 0.7})]
    assert tune_threshold(scores) == 0.5
    with pytest.raises(ValueError, match="no validation image"):
        tune_threshold([])


def test_randomised_copy_changes_only_the_top(predictor):
    model = predictor.model
    clone = randomised_copy(model, top_layers=2)
    changed = [name for name, p in model.state_dict().items()
               if p.dtype.is_floating_point and not torch.equal(p, clone.state_dict()[name])]
    assert "head.fc.weight" in changed
    assert any(name.startswith("backbone.conv_head") for name in changed)
    assert not any(name.startswith("backbone.conv_stem") or name.startswith("backbone.blocks.0") for name in changed)
    assert torch.equal(model.get_classifier().weight, predictor.model.get_classifier().weight)


def test_randomisation_check_reports_maps_that_change(predictor):
    images = [_phantom(seed, True)[0] for seed in range(3)]
    result = randomisation_check(predictor, images)
    assert result["n"] == 3
    assert -1.0 <= result["mean_spearman"] < 0.9
