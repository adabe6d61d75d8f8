"""``busi-train cv-compare``: two recipes on the same cross-validation folds, image by image.

Folds differ from each other about as much as recipes do (BUSI malignant AUC 0.89–0.94 over one recipe's five
folds), so two recipes' means ± sd over folds cannot tell them apart; the same test images scored by both can.
Each measure is taken per fold on that fold's test images of one source, at each run's own validation
temperature and threshold, and the difference (candidate − reference) is averaged over folds. Its 95 % interval
is a paired cluster bootstrap: every draw resamples each fold's groups (near-duplicate groups, BUS-BRA patients)
with replacement and scores both models on the same draw. It covers which test images were drawn, not
retraining (seed, training images) or the validation images the threshold was chosen on: the count of folds
on which the candidate is higher says how consistent a difference is across those.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from training.config import load_config
from training.cv import CvSummaryError, FoldTest, load_fold_test, load_runs, write_result
from training.metrics import BOOTSTRAP_RESAMPLES, accuracy, cluster_members, cluster_resample, roc_auc

# name -> statistic(fold, indices) on one fold's test images; the threshold's class is malignant.
Statistic = Callable[[FoldTest, np.ndarray], float]


def _malignant_auc(fold: FoldTest, i: np.ndarray) -> float:
    return roc_auc(fold.probs[i, fold.positive], fold.labels[i] == fold.positive)


def _argmax_accuracy(fold: FoldTest, i: np.ndarray) -> float:
    return accuracy(fold.labels[i], fold.probs[i].argmax(axis=1))


def _rate(decided_positive: np.ndarray, among: np.ndarray) -> float:
    return float(decided_positive[among].mean()) if among.any() else math.nan


def _sensitivity(fold: FoldTest, i: np.ndarray) -> float:
    return _rate(fold.decided[i] == fold.positive, fold.labels[i] == fold.positive)


def _specificity(fold: FoldTest, i: np.ndarray) -> float:
    return _rate(fold.decided[i] != fold.positive, fold.labels[i] != fold.positive)


COMPARED: dict[str, Statistic] = {
    "malignant AUC": _malignant_auc,
    "arg-max accuracy": _argmax_accuracy,
    "sensitivity at the threshold": _sensitivity,
    "specificity at the threshold": _specificity,
}


def _recipe_label(run_dir: Path) -> str:
    config = load_config(Path(run_dir) / "config.toml")
    return f"{config.name} ({config.model.arch}, {config.data.input_size} px)"


def paired_folds(candidate_dirs: list[Path], reference_dirs: list[Path]) -> list[tuple[FoldTest, FoldTest]]:
    """(candidate, reference) per fold, the reference's predictions reordered to the candidate's files.

    :class:`CvSummaryError` unless both sides hold the same folds once each, with the same test images each."""
    sides = []
    for dirs in (candidate_dirs, reference_dirs):
        folds = [load_fold_test(run_dir, metrics) for run_dir, metrics in load_runs(dirs)]
        numbers = [fold.fold for fold in folds]
        if None in numbers or len(set(numbers)) != len(numbers):
            raise CvSummaryError(f"each side needs cross-validation folds, each once; got folds {numbers}")
        if any(fold.positive is None for fold in folds):
            raise CvSummaryError("cv-compare needs runs with a malignant operating point (threshold_class)")
        sides.append({fold.fold: fold for fold in folds})
    candidate, reference = sides
    if set(candidate) != set(reference):
        raise CvSummaryError(f"the two sides hold different folds: {sorted(candidate)} against {sorted(reference)}")
    pairs = []
    for number in sorted(candidate):
        ours, theirs = candidate[number], reference[number]
        where = {str(f): i for i, f in enumerate(theirs.files)}
        if len(where) != len(ours.files) or set(where) != {str(f) for f in ours.files}:
            raise CvSummaryError(f"fold {number}: the two sides were tested on different images (another split)")
        order = np.array([where[str(f)] for f in ours.files], dtype=np.int64)
        if not np.array_equal(theirs.labels[order], ours.labels):
            raise CvSummaryError(f"fold {number}: the same images carry different labels on the two sides")
        pairs.append((ours, theirs.reordered(order)))
    return pairs


def _fold_members(groups: np.ndarray) -> list[np.ndarray]:
    """:func:`training.metrics.cluster_members` of one fold's images; an image without a group ("") is its own."""
    return cluster_members(np.where(groups == "", np.char.add("#", np.arange(groups.size).astype(str)), groups))


def compare_cv(candidate_dirs: list[Path], reference_dirs: list[Path], *, n_boot: int = BOOTSTRAP_RESAMPLES,
               confidence: float = 0.95, seed: int = 0) -> dict:
    """Per source and measure of :data:`COMPARED`: each fold's candidate and reference values, the mean over
    folds of their difference (candidate − reference) with its paired cluster-bootstrap interval, and how many
    folds the candidate is higher on."""
    pairs = paired_folds(candidate_dirs, reference_dirs)
    sources = sorted({str(s) for ours, _ in pairs for s in ours.sources})
    rng = np.random.default_rng(seed)
    alpha = (1.0 - confidence) / 2.0
    result: dict = {"candidate": _recipe_label(candidate_dirs[0]), "reference": _recipe_label(reference_dirs[0]),
                    "folds": [ours.fold for ours, _ in pairs], "n_boot": n_boot, "confidence": confidence,
                    "by_source": {}}
    for source in sources:
        keep = [np.flatnonzero(ours.sources == source) for ours, _ in pairs]
        members = [_fold_members(ours.groups[keep_f]) for keep_f, (ours, _) in zip(keep, pairs)]
        draws = [[keep_f[cluster_resample(fold_members, rng)] for keep_f, fold_members in zip(keep, members)]
                 for _ in range(n_boot)]
        block = {}
        for name, statistic in COMPARED.items():
            per_fold = [{"fold": ours.fold, "n": int(keep_f.size), "candidate": statistic(ours, keep_f),
                         "reference": statistic(theirs, keep_f)} for keep_f, (ours, theirs) in zip(keep, pairs)]
            differences = [row["candidate"] - row["reference"] for row in per_fold]
            if any(math.isnan(d) for d in differences):
                block[name] = None  # a measure a source cannot show (no malignant images)
                continue
            boot = np.array([np.mean([statistic(ours, i) - statistic(theirs, i) for i, (ours, theirs)
                                      in zip(draw, pairs)]) for draw in draws], dtype=np.float64)
            boot = boot[~np.isnan(boot)]
            low, high = np.quantile(boot, [alpha, 1.0 - alpha]) if boot.size else (math.nan, math.nan)
            block[name] = {"per_fold": per_fold, "mean_difference": float(np.mean(differences)),
                           "low": float(low), "high": float(high), "n_valid": int(boot.size),
                           "folds_higher": int(sum(d > 0 for d in differences)),
                           "folds_lower": int(sum(d < 0 for d in differences))}
        result["by_source"][source or "all"] = block
    return result


def compare_markdown(result: dict) -> str:
    """The comparison as a Markdown table: per fold "reference → candidate", then the mean difference."""
    folds = result["folds"]
    percent = round(100 * result["confidence"])
    lines = [f"Candidate: {result['candidate']}; reference: {result['reference']}. The same test images of folds "
             f"{', '.join(map(str, folds))}, each run at its own validation temperature and threshold; difference = "
             f"candidate − reference, averaged over folds; {percent} % interval: paired cluster bootstrap "
             f"({result['n_boot']} draws, groups resampled within each fold, both models on the same draw: it covers "
             f"the test images' sampling, not retraining or the validation images behind each threshold).", "",
             "| source | measure | " + " | ".join(f"fold {f}" for f in folds)
             + f" | mean difference [{percent} % CI] | folds higher / lower |",
             "|---|---|" + "---|" * len(folds) + "---|---|"]
    for source, block in result["by_source"].items():
        for name, entry in block.items():
            if entry is None:
                continue
            cells = [f"{row['reference']:.3f} → {row['candidate']:.3f}" for row in entry["per_fold"]]
            lines.append(f"| {source} | {name} | " + " | ".join(cells)
                         + f" | {entry['mean_difference']:+.3f} [{entry['low']:+.3f}, {entry['high']:+.3f}] | "
                         f"{entry['folds_higher']} / {entry['folds_lower']} |")
    return "\n".join(lines) + "\n"


def write_cv_compare(candidate_dirs: list[Path], reference_dirs: list[Path], out: Path) -> dict:
    """Write ``cv_compare.json`` and ``cv_compare.md`` into ``out``; returns the comparison."""
    result = compare_cv(candidate_dirs, reference_dirs)
    return write_result(out, "cv_compare", result, compare_markdown(result))
