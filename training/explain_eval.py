"""How well explanations agree with the lesion masks, and whether they depend on the model at all.

For every image with a non-empty mask: Grad-CAM of the class the model predicts (what a reader of the app
sees), mapped onto the original image, scored against the mask by pointing game, energy-based pointing game
and IoU (Otsu, and a fixed threshold tuned on validation), next to the centre-prior baseline. The
model-randomisation check (Adebayo et al., 2018) re-initialises the classifier and the last backbone stage and
measures how similar the maps stay: a faithful explanation must change. :func:`breakdown` splits the same scores
by source and lesion size, with a paired bootstrap CI of the pointing game's lead over the centre prior.
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
# Lesion size bins by the mask's share of the image area: small < 4 %, medium 4-10 %, large >= 10 %. The edges
# are the tertiles of the lesion masks of busi-us 0.3.1's TRAINING split (both sources pooled: 3.8 % and 10.0 %),
# rounded, chosen before any map was scored; they are fixed here so that every model is binned alike. Fixed
# clinical-style edges (1 % / 5 %) would leave ~2 % of BUS-BRA's lesions in "small": no bin to measure.
SIZE_EDGES = (0.04, 0.10)
SIZE_BINS = ("small", "medium", "large")


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
    mask_fraction: float = float("nan")  # lesion mask area / image area, (0, 1]
    source: str = ""  # "busi", "bus-bra"; "" in a single-source run
    group: str = ""  # what a bootstrap resamples together (patient, near-duplicate group); "" = the image alone
    probabilities: tuple[float, ...] = ()  # the model's calibrated probabilities of the image, in class order


def score_maps(predictor: Predictor, images: Iterable[tuple]) -> list[MapScore]:
    """Score every (rgb (H,W,3) uint8, mask bool (H,W), label[, source[, group]]) with a non-empty mask; others
    are skipped. ``source`` and ``group`` (str) are carried into the scores for :func:`breakdown`."""
    scores = []
    for rgb, mask, label, *meta in images:
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
            mask_fraction=float(mask.mean()), source=str(meta[0]) if meta else "",
            group=str(meta[1]) if len(meta) > 1 else "",
            probabilities=tuple(float(p) for p in prediction.probabilities),
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


def size_bin(mask_fraction: float) -> str:
    """"small", "medium" or "large" for a lesion mask covering ``mask_fraction`` (0, 1] of the image
    (:data:`SIZE_EDGES`; a lower edge belongs to the bin above it)."""
    if not 0 < mask_fraction <= 1:  # also rejects nan: a score without its mask area cannot be binned
        raise ValueError(f"mask fraction must lie in (0, 1], got {mask_fraction}")
    return SIZE_BINS[int(np.searchsorted(SIZE_EDGES, mask_fraction, side="right"))]


def pointing_lead_ci(scores: Sequence[MapScore], n_boot: int = 2000, confidence: float = 0.95, seed: int = 0,
                     by_group: bool = True) -> dict:
    """Pointing game of the map minus that of the centre prior on the same images, with a paired percentile
    bootstrap CI: {"estimate", "low", "high"} in [-1, 1] (low/high None for fewer than 2 resampling units or
    ``n_boot`` 0).

    Both hits of an image are resampled together (paired). With ``by_group`` and every score carrying a group,
    whole groups are resampled (a BUS-BRA patient's two views are not two independent images); else images.
    """
    diff = np.array([float(s.pointing_hit) - float(s.baseline_pointing_hit) for s in scores])
    out: dict = {"estimate": float(diff.mean()) if diff.size else None, "low": None, "high": None}
    groups = [s.group for s in scores]
    units = groups if by_group and all(groups) else [str(i) for i in range(len(scores))]
    _, unit_of = np.unique(units, return_inverse=True)
    sums, counts = np.bincount(unit_of, diff), np.bincount(unit_of)
    if counts.size < 2 or n_boot <= 0:
        return out
    drawn = np.random.default_rng(seed).integers(0, counts.size, size=(n_boot, counts.size))
    means = sums[drawn].sum(axis=1) / counts[drawn].sum(axis=1)
    tail = 100 * (1 - confidence) / 2
    out["low"], out["high"] = (float(v) for v in np.percentile(means, [tail, 100 - tail]))
    return out


def breakdown(scores: Sequence[MapScore], n_boot: int = 2000, confidence: float = 0.95, seed: int = 0,
              by_group: bool = True) -> dict:
    """Agreement by source and lesion size: ``{"size_edges", "size_bins", "bootstrap", "by_source"}`` where
    ``by_source[source][cell]`` (source: each named source, plus "all" pooled; cell: "all" or a size bin) holds n,
    the model's and the centre prior's pointing game / mean energy in mask / mean IoU (Otsu), the median mask
    fraction, and ``pointing_lead`` (:func:`pointing_lead_ci`, same seed in every cell). Empty cells: {"n": 0}."""

    def block(selected: list[MapScore]) -> dict:
        if not selected:
            return {"n": 0}
        means = {key: float(np.mean([getattr(s, field) for s in selected])) for key, field in (
            ("pointing_game", "pointing_hit"), ("baseline_pointing_game", "baseline_pointing_hit"),
            ("energy_in_mask", "energy_in_mask"), ("baseline_energy_in_mask", "baseline_energy_in_mask"),
            ("iou_otsu", "iou_otsu"), ("baseline_iou_otsu", "baseline_iou_otsu"))}
        return {"n": len(selected), **means,
                "pointing_lead": pointing_lead_ci(selected, n_boot, confidence, seed, by_group),
                "median_mask_fraction": float(np.median([s.mask_fraction for s in selected]))}

    bins = [size_bin(s.mask_fraction) for s in scores]
    sources = sorted({s.source for s in scores if s.source})
    by_source = {}
    for source in [*sources, "all"] if len(sources) > 1 else ["all"]:
        members = [i for i, s in enumerate(scores) if source == "all" or s.source == source]
        by_source[source] = {"all": block([scores[i] for i in members]),
                             **{b: block([scores[i] for i in members if bins[i] == b]) for b in SIZE_BINS}}
    return {"size_edges": list(SIZE_EDGES), "size_bins": list(SIZE_BINS),
            "bootstrap": {"n_boot": n_boot, "confidence": confidence, "seed": seed,
                          "by_group": bool(by_group and scores and all(s.group for s in scores))},
            "by_source": by_source}


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
