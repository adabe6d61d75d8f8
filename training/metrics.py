"""Classification metrics in NumPy only: the paper's set, calibration, operating points and bootstrap CIs.

Conventions: ``y_true`` is (N,) int class indices in [0, K); ``probs`` is (N, K) float rows summing to 1
(softmax outputs); ``logits`` is (N, K) float. Confusion matrices have true classes in rows, predictions in
columns. Quantities that are undefined (a class absent, no predictions of a class) are NaN in arrays, and 0
for precision / recall / F1 of an empty denominator (the common "zero_division=0" convention).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from busi_viewer.core.decision import apply_operating_point
from busi_viewer.core.labels import CLASS_NAMES, MALIGNANT

ECE_BINS = 15
CALIBRATED_DRAWS = 400
BOOTSTRAP_RESAMPLES = 2000


# ------------------------------------------------------------------------------------------- decisions

def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts; entry [t, p] = samples of true class t predicted as p."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of exact matches; NaN for no samples."""
    y_true = np.asarray(y_true)
    return float(np.mean(y_true == np.asarray(y_pred))) if y_true.size else math.nan


def precision_recall_f1(y_true: np.ndarray, y_pred: np.ndarray,
                        num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class (precision, recall, F1, support), each (K,); precision/recall/F1 are float64, support int64."""
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    support = matrix.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denominator = precision + recall
        f1 = np.where(denominator > 0, 2 * precision * recall / denominator, 0.0)
    return precision, recall, f1, support


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of the per-class F1 over classes present in ``y_true``."""
    _, _, f1, support = precision_recall_f1(y_true, y_pred, num_classes)
    present = support > 0
    return float(f1[present].mean()) if present.any() else math.nan


def one_hot(y_true: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, K) float64 indicator matrix."""
    y_true = np.asarray(y_true, dtype=np.int64)
    out = np.zeros((y_true.size, num_classes), dtype=np.float64)
    out[np.arange(y_true.size), y_true] = 1.0
    return out


def probability_errors(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """MSE, RMSE and MAE of the predicted probability vectors against one-hot labels.

    Exactly: with P the (N, K) probabilities and Y the (N, K) one-hot labels, MSE = mean over all N*K entries of
    (P - Y)^2, RMSE = sqrt(MSE), MAE = mean over all N*K entries of |P - Y|. (The multi-class Brier score,
    summed over classes and averaged over samples, is K * MSE.) The paper reports MSE/RMSE/MAE without saying
    on what; errors on class *indices* would depend on the arbitrary class order, so probabilities are used.
    """
    probs = np.asarray(probs, dtype=np.float64)
    diff = probs - one_hot(y_true, probs.shape[1])
    mse = float(np.mean(diff ** 2)) if diff.size else math.nan
    return {"mse": mse, "rmse": math.sqrt(mse) if diff.size else math.nan,
            "mae": float(np.mean(np.abs(diff))) if diff.size else math.nan}


def negative_log_likelihood(y_true: np.ndarray, probs: np.ndarray, eps: float = 1e-12) -> float:
    """Mean -log p(true class), probabilities clipped at ``eps``."""
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    return float(-np.mean(np.log(np.clip(probs[np.arange(y_true.size), y_true], eps, 1.0))))


# ----------------------------------------------------------------------------------------------- ROC

def _midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing the mean of their positions."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start index of each run of equal values, and each element's run.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], sorted_values.size]
    run_rank = (starts + 1 + ends) / 2.0  # mean of positions starts+1 .. ends
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative) + 0.5 P(tie),
    from ranks (Mann-Whitney U). NaN when either class is absent."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _midranks(scores)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_auc_ovr(y_true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, float]:
    """One-vs-rest AUC per class (K,) (NaN for a class absent or alone) and their macro mean over defined ones."""
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    per_class = np.array([roc_auc(probs[:, k], y_true == k) for k in range(probs.shape[1])])
    defined = ~np.isnan(per_class)
    return per_class, float(per_class[defined].mean()) if defined.any() else math.nan


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), float64: one point per distinct score, thresholds descending, starting at
    (0, 0) with threshold +inf; the decision is "positive when score >= threshold"."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_pos = scores[order], positive[order]
    last_of_run = np.r_[sorted_scores[1:] != sorted_scores[:-1], True] if scores.size else np.zeros(0, bool)
    tp = np.cumsum(sorted_pos)[last_of_run]
    fp = np.cumsum(~sorted_pos)[last_of_run]
    n_pos, n_neg = max(int(positive.sum()), 1), max(int((~positive).sum()), 1)
    fpr = np.r_[0.0, fp / n_neg]
    tpr = np.r_[0.0, tp / n_pos]
    thresholds = np.r_[np.inf, sorted_scores[last_of_run]]
    return fpr, tpr, thresholds


# --------------------------------------------------------------------------------------- calibration

def _confidence_bin(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """(N,) int64 bin of each confidence in [0, 1]: b for (b/n, (b+1)/n], 0 also for exactly 0."""
    # The tolerance keeps a confidence on an edge (0.6 * 15 = 9.000000000000002) in the bin it closes.
    return np.clip(np.ceil(confidence * n_bins - 1e-9).astype(np.int64) - 1, 0, n_bins - 1)


def reliability_bins(y_true: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Top-label reliability diagram: ``n_bins`` equal-width confidence bins on [0, 1].

    Bin b holds the samples whose top probability lies in (b/n, (b+1)/n] (bin 0 also takes exactly 0).
    Returns ``edges`` (n+1,), ``count`` (n,) int64, ``confidence`` and ``accuracy`` (n,) means, NaN when empty.
    """
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    confidence = probs.max(axis=1) if probs.size else np.zeros(0)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64) if probs.size else np.zeros(0)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = _confidence_bin(confidence, n_bins)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=confidence, minlength=n_bins) / count
        mean_acc = np.bincount(index, weights=correct, minlength=n_bins) / count
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": mean_acc}


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Top-label ECE: sum over bins of (bin count / N) * |accuracy - mean confidence| (see reliability_bins)."""
    bins = reliability_bins(y_true, probs, n_bins)
    total = bins["count"].sum()
    if total == 0:
        return math.nan
    used = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][used] - bins["confidence"][used])
    return float((bins["count"][used] / total * gaps).sum())


def ece_if_calibrated(probs: np.ndarray, n_bins: int = ECE_BINS, draws: int = CALIBRATED_DRAWS,
                      seed: int = 0) -> dict[str, float | None]:
    """The top-label ECE a perfectly calibrated model would show on these N predictions (consistency
    resampling, Bröcker & Smith 2007): ``draws`` label sets drawn from the rows of ``probs`` (N, K), each
    scored with :func:`expected_calibration_error`.

    ECE on a finite sample is biased upward, by about ``mean``; a measured ECE below ``p95`` cannot be told
    apart from perfect calibration on this sample. Under such draws an image's top label is right with
    probability equal to its confidence, so only the confidences are drawn against. None for N = 0.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[0] == 0:
        return {"mean": None, "p95": None}
    confidence = probs.max(axis=1)
    correct = np.random.default_rng(seed).random((draws, confidence.size)) < confidence
    in_bin = np.eye(n_bins)[_confidence_bin(confidence, n_bins)]  # (N, n_bins) one-hot
    eces = np.abs((correct - confidence) @ in_bin).sum(axis=1) / confidence.size
    return {"mean": float(eces.mean()), "p95": float(np.quantile(eces, 0.95))}


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature, float64, numerically stable."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _nll_at(logits: np.ndarray, y_true: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    z_max = z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z - z_max).sum(axis=1)) + z_max[:, 0]
    return float(np.mean(log_norm - z[np.arange(y_true.size), y_true]))


def fit_temperature(logits: np.ndarray, y_true: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0),
                    tol: float = 1e-5) -> float:
    """Temperature T > 0 minimising the mean NLL of softmax(logits / T) (temperature scaling).

    Golden-section search on log T within ``bounds``: the NLL is convex in 1/T, hence unimodal in log T.
    Returns 1.0 for empty input.
    """
    logits = np.asarray(logits, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    if y_true.size == 0:
        return 1.0
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = _nll_at(logits, y_true, math.exp(a)), _nll_at(logits, y_true, math.exp(b))
    while hi - lo > tol:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = _nll_at(logits, y_true, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = _nll_at(logits, y_true, math.exp(b))
    return float(math.exp((lo + hi) / 2.0))


# ---------------------------------------------------------------------------------- operating point

class ThresholdChoice(NamedTuple):
    """A decision threshold on one class's probability and what it achieves on the data it was chosen on."""

    threshold: float
    sensitivity: float
    specificity: float


def threshold_for_sensitivity(scores: np.ndarray, positive: np.ndarray, target: float) -> ThresholdChoice:
    """The largest threshold t with sensitivity P(score >= t | positive) >= ``target`` (0 < target <= 1).

    That is the k-th largest positive score, k = ceil(target * n_positives): the most specific rule that still
    reaches the target. Raises ValueError when there are no positives.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must lie in (0, 1], got {target}")
    pos_scores = np.sort(scores[positive])[::-1]
    if pos_scores.size == 0:
        raise ValueError("cannot choose a sensitivity threshold without positive samples")
    k = max(1, math.ceil(target * pos_scores.size - 1e-9))
    threshold = float(pos_scores[k - 1])
    sensitivity = float(np.mean(pos_scores >= threshold))
    negatives = scores[~positive]
    specificity = float(np.mean(negatives < threshold)) if negatives.size else math.nan
    return ThresholdChoice(threshold, sensitivity, specificity)


def predict_with_threshold(probs: np.ndarray, class_index: int, threshold: float) -> np.ndarray:
    """(N,) int64 decisions: ``class_index`` when its probability >= threshold, else the argmax of the others
    (the app's rule, :func:`busi_viewer.core.decision.apply_operating_point`)."""
    return apply_operating_point(probs, class_index, threshold)


# ------------------------------------------------------------------------------------------ bootstrap

class Interval(NamedTuple):
    """A point estimate and its percentile bootstrap interval; ``n_valid`` resamples gave a defined value."""

    estimate: float
    low: float
    high: float
    n_valid: int


def cluster_members(groups: Sequence[Any] | np.ndarray) -> list[np.ndarray]:
    """Each group's sample indices (int64), groups in order of first appearance."""
    codes: dict[Any, int] = {}
    group_codes = np.array([codes.setdefault(g, len(codes)) for g in np.asarray(groups).tolist()])
    return [np.flatnonzero(group_codes == c) for c in range(len(codes))]


def cluster_resample(members: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Indices of one cluster-bootstrap resample: as many whole groups as there are, drawn with replacement."""
    if not members:
        return np.zeros(0, np.int64)
    return np.concatenate([members[c] for c in rng.integers(0, len(members), len(members))])


def bootstrap_ci(statistic: Callable[[np.ndarray], float], n_samples: int, *, n_boot: int = BOOTSTRAP_RESAMPLES,
                 confidence: float = 0.95, seed: int = 0, groups: Sequence[Any] | np.ndarray | None = None
                 ) -> Interval:
    """Percentile bootstrap CI of ``statistic(indices)`` over resamples of the ``n_samples`` samples.

    ``statistic`` receives an int64 index array (with repeats) and returns a float. With ``groups`` (one id per
    sample) whole groups are resampled with replacement (cluster bootstrap), so near-duplicates move together.
    NaN resamples (e.g. an AUC with one class missing) are dropped; ``low``/``high`` are NaN when none is left.
    """
    everything = np.arange(n_samples, dtype=np.int64)
    estimate = float(statistic(everything))
    if n_boot <= 0 or n_samples == 0:
        return Interval(estimate, math.nan, math.nan, 0)
    rng = np.random.default_rng(seed)
    if groups is None:
        draws = (rng.integers(0, n_samples, n_samples) for _ in range(n_boot))
    else:
        members = cluster_members(groups)
        draws = (cluster_resample(members, rng) for _ in range(n_boot))
    values = np.array([statistic(indices) for indices in draws], dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return Interval(estimate, math.nan, math.nan, 0)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return Interval(estimate, float(low), float(high), int(values.size))


# ------------------------------------------------------------------------------------------- summary

def _json_float(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def _interval_dict(interval: Interval) -> dict[str, float | int | None]:
    return {"estimate": _json_float(interval.estimate), "low": _json_float(interval.low),
            "high": _json_float(interval.high), "n_valid": interval.n_valid}


def summarise(y_true: np.ndarray, probs: np.ndarray, *, class_names: Sequence[str] = CLASS_NAMES,
              threshold: float | None = None, positive_class: str = MALIGNANT, groups: Sequence[Any] | None = None,
              n_boot: int = BOOTSTRAP_RESAMPLES, confidence: float = 0.95, seed: int = 0,
              ece_bins: int = ECE_BINS) -> dict[str, Any]:
    """Every reported number for one set of predictions, as a JSON-serialisable dict (NaN -> None).

    Decisions are the argmax, or with ``threshold`` the rule of :func:`predict_with_threshold` on
    ``positive_class``. Bootstrap CIs (``n_boot`` > 0; by ``groups`` when given) for accuracy, macro-F1, macro
    AUC and the positive class's AUC, sensitivity and specificity.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    k = len(class_names)
    if probs.ndim != 2 or probs.shape != (y_true.size, k):
        raise ValueError(f"probs must be (N, {k}) for N = {y_true.size} labels, got {probs.shape}")
    pos = list(class_names).index(positive_class)

    def decide(p: np.ndarray) -> np.ndarray:
        return p.argmax(axis=1) if threshold is None else predict_with_threshold(p, pos, threshold)

    y_pred = decide(probs)
    precision, recall, f1, support = precision_recall_f1(y_true, y_pred, k)
    auc_per_class, auc_macro = roc_auc_ovr(y_true, probs)
    matrix = confusion_matrix(y_true, y_pred, k)
    is_pos = y_true == pos
    sensitivity = float(np.mean(y_pred[is_pos] == pos)) if is_pos.any() else math.nan
    specificity = float(np.mean(y_pred[~is_pos] != pos)) if (~is_pos).any() else math.nan
    bins = reliability_bins(y_true, probs, ece_bins)

    statistics: dict[str, Callable[[np.ndarray], float]] = {
        "accuracy": lambda i: accuracy(y_true[i], y_pred[i]),
        "macro_f1": lambda i: macro_f1(y_true[i], y_pred[i], k),
        "auc_macro": lambda i: roc_auc_ovr(y_true[i], probs[i])[1],
        f"auc_{positive_class}": lambda i: roc_auc(probs[i, pos], y_true[i] == pos),
        f"sensitivity_{positive_class}": lambda i: (float(np.mean(y_pred[i][y_true[i] == pos] == pos))
                                                    if np.any(y_true[i] == pos) else math.nan),
        f"specificity_{positive_class}": lambda i: (float(np.mean(y_pred[i][y_true[i] != pos] != pos))
                                                    if np.any(y_true[i] != pos) else math.nan),
    }
    intervals = {name: _interval_dict(bootstrap_ci(fn, y_true.size, n_boot=n_boot, confidence=confidence,
                                                   seed=seed, groups=groups))
                 for name, fn in statistics.items()} if n_boot > 0 else {}

    return {
        "n": int(y_true.size),
        "class_names": list(class_names),
        "decision": "argmax" if threshold is None else {"class": positive_class, "threshold": float(threshold)},
        "accuracy": _json_float(accuracy(y_true, y_pred)),
        "macro_f1": _json_float(macro_f1(y_true, y_pred, k)),
        "per_class": {
            name: {"precision": _json_float(precision[c]), "recall": _json_float(recall[c]),
                   "f1": _json_float(f1[c]), "support": int(support[c]), "auc": _json_float(auc_per_class[c])}
            for c, name in enumerate(class_names)
        },
        "confusion_matrix": matrix.tolist(),
        **{key: _json_float(value) for key, value in probability_errors(y_true, probs).items()},
        "nll": _json_float(negative_log_likelihood(y_true, probs)),
        "auc_macro": _json_float(auc_macro),
        f"sensitivity_{positive_class}": _json_float(sensitivity),
        f"specificity_{positive_class}": _json_float(specificity),
        "ece": _json_float(expected_calibration_error(y_true, probs, ece_bins)),
        "ece_if_calibrated": ece_if_calibrated(probs, ece_bins, seed=seed),
        "reliability": {"edges": bins["edges"].tolist(), "count": bins["count"].tolist(),
                        "confidence": [_json_float(v) for v in bins["confidence"]],
                        "accuracy": [_json_float(v) for v in bins["accuracy"]]},
        "bootstrap": {"n_boot": int(n_boot), "confidence": confidence, "by_group": groups is not None,
                      "seed": seed, "intervals": intervals},
    }
