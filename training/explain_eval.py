"""How well explanations agree with the lesion masks, and whether they depend on the model at all.

For every image with a non-empty mask: Grad-CAM of the class the model predicts (what a reader of the app
sees), mapped onto the original image, scored against the mask by pointing game, energy-based pointing game
and IoU (Otsu, and a fixed threshold tuned on validation), next to the centre-prior baseline. The
model-randomisation check (Adebayo et al., 2018) re-initialises the classifier and the last backbone stage and
measures how similar the maps stay: a faithful explanation must change.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from busi_viewer.core.agreement import centre_prior, energy_in_mask, iou, pointing_game, threshold_fixed, threshold_otsu
from busi_viewer.inference.architectures import ImageClassifier
from busi_viewer.inference.predictor import Predictor

THRESHOLD_GRID = tuple(np.round(np.arange(0.1, 0.95, 0.05), 2))


@dataclass
class MapScore:
    """Agreement of one image's heatmap (and of the centre prior) with its lesion mask."""

    label: int
    predicted: int
    pointing_hit: bool
    energy_in_mask: float
    iou_otsu: float
    iou_by_level: dict[float, float]
    baseline_pointing_hit: bool
    baseline_energy_in_mask: float
    baseline_iou_otsu: float


def score_maps(predictor: Predictor, images: Iterable[tuple[np.ndarray, np.ndarray, int]]) -> list[MapScore]:
    """Score every (rgb (H,W,3) uint8, mask bool (H,W), label) with a non-empty mask; others are skipped."""
    scores = []
    for rgb, mask, label in images:
        if not mask.any():
            continue
        prediction = predictor.predict(rgb)
        heatmap = prediction.heatmap_raw
        prior = centre_prior(mask.shape)
        if heatmap.max() <= 0:  # no positive evidence anywhere: nothing is pointed at
            hit, energy, by_level, otsu = False, 0.0, {level: 0.0 for level in THRESHOLD_GRID}, 0.0
        else:
            hit = pointing_game(heatmap, mask)
            energy = energy_in_mask(heatmap, mask)
            by_level = {level: iou(threshold_fixed(heatmap, level), mask) for level in THRESHOLD_GRID}
            otsu = iou(threshold_otsu(heatmap), mask)
        scores.append(MapScore(
            label=label, predicted=prediction.predicted_index, pointing_hit=hit, energy_in_mask=energy,
            iou_otsu=otsu, iou_by_level=by_level, baseline_pointing_hit=pointing_game(prior, mask),
            baseline_energy_in_mask=energy_in_mask(prior, mask), baseline_iou_otsu=iou(threshold_otsu(prior), mask),
        ))
    return scores


def tune_threshold(validation_scores: Sequence[MapScore]) -> float:
    """The fixed heatmap level (fraction of each map's maximum) with the best mean IoU on validation."""
    if not validation_scores:
        raise ValueError("no validation image with a lesion mask to tune the heatmap threshold on")
    means = {level: float(np.mean([s.iou_by_level[level] for s in validation_scores])) for level in THRESHOLD_GRID}
    return max(means, key=lambda level: (means[level], -level))


def summarise_scores(scores: Sequence[MapScore], class_names: Sequence[str], level: float) -> dict:
    """Per-class and overall means: pointing game, energy in mask, IoU (Otsu and tuned level), with baseline."""

    def block(selected: list[MapScore]) -> dict:
        if not selected:
            return {"n": 0}
        return {
            "n": len(selected),
            "pointing_game": float(np.mean([s.pointing_hit for s in selected])),
            "energy_in_mask": float(np.mean([s.energy_in_mask for s in selected])),
            "iou_otsu": float(np.mean([s.iou_otsu for s in selected])),
            "iou_tuned": float(np.mean([s.iou_by_level[level] for s in selected])),
            "baseline_pointing_game": float(np.mean([s.baseline_pointing_hit for s in selected])),
            "baseline_energy_in_mask": float(np.mean([s.baseline_energy_in_mask for s in selected])),
            "baseline_iou_otsu": float(np.mean([s.baseline_iou_otsu for s in selected])),
        }

    per_class = {name: block([s for s in scores if s.label == index]) for index, name in enumerate(class_names)}
    return {"tuned_level": level, "all": block(list(scores)), "per_class": per_class}


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (ties get their average rank); nan if either is constant."""
    ra, rb = _average_ranks(a.ravel()), _average_ranks(b.ravel())
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _average_ranks(values: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - (counts - 1) / 2.0))[inverse].astype(np.float64)


def randomised_copy(model: ImageClassifier, top_layers: int = 3, seed: int = 0) -> ImageClassifier:
    """A copy of ``model`` whose classifier and ``top_layers`` deepest conv layers are re-initialised.

    Cascading randomisation from the top, as Adebayo et al.: weights are redrawn from a normal with each
    layer's own standard deviation, biases zeroed; everything below stays trained.
    """
    clone = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    convs = [module for module in clone.backbone.modules()
             if isinstance(getattr(module, "weight", None), torch.nn.Parameter) and module.weight.ndim == 4]
    with torch.no_grad():
        for module in [clone.get_classifier(), *convs[-top_layers:]]:
            weight = module.weight
            weight.copy_(torch.randn(weight.shape, generator=generator).to(weight) * weight.std())
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
    return clone.eval()


def randomisation_check(predictor: Predictor, images: Sequence[np.ndarray], seed: int = 0) -> dict:
    """Mean Spearman correlation between the maps of the trained model and of a randomised copy.

    Both explain the class the trained model predicts. Values near 1 would mean the map ignores the model's
    learned weights (a red flag); a faithful explanation gives a clearly lower value.
    """
    random_predictor = Predictor(randomised_copy(predictor.model, seed=seed), predictor.card, predictor.device)
    correlations = []
    for rgb in images:
        trained = predictor.predict(rgb)
        random_map = random_predictor.explain_class(rgb, trained.predicted_index)
        correlations.append(spearman(trained.heatmap_raw, random_map))
    values = np.asarray(correlations, dtype=np.float64)
    return {"n": int(values.size), "mean_spearman": float(np.nanmean(values)) if values.size else float("nan"),
            "median_spearman": float(np.nanmedian(values)) if values.size else float("nan")}
