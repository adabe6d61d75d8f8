"""``busi-train cv-summary``: mean ± sd over evaluated cross-validation folds (and seeds) of one recipe.

Each fold's held-out part is a whole set of near-duplicate groups that never reached its training or
validation data, so every fold's test metrics are duplicate-free by construction. Folds are summarised with
the sample standard deviation (ddof = 1); the per-fold bootstrap intervals stay in each run's report.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from busi_viewer.core.atomic import atomic_write
from busi_viewer.core.errors import BusiViewerError
from training.config import config_hash, load_config
from training.data import files_sources
from training.metrics import (ECE_BINS, accuracy, ece_if_calibrated, expected_calibration_error, macro_f1,
                              predict_with_threshold, reliability_bins, softmax)
from training.pipeline import Predictions

# (label, path into metrics.json); the operating point is the validation-chosen malignant threshold.
CV_METRICS = (
    ("accuracy (operating point)", ("test", "accuracy")),
    ("accuracy (arg-max)", ("test_argmax", "accuracy")),
    ("macro-F1 (operating point)", ("test", "macro_f1")),
    ("macro-F1 (arg-max)", ("test_argmax", "macro_f1")),
    ("macro AUC (one-vs-rest)", ("test", "auc_macro")),
    ("malignant sensitivity", ("test", "sensitivity_malignant")),
    ("malignant specificity", ("test", "specificity_malignant")),
    ("ECE before scaling", ("test_uncalibrated", "ece")),
    ("ECE after scaling", ("test", "ece")),
    ("pointing game, benign", ("explanations", "per_class", "benign", "pointing_game")),
    ("pointing game, malignant", ("explanations", "per_class", "malignant", "pointing_game")),
    ("centre-prior pointing game, benign", ("explanations", "per_class", "benign", "baseline_pointing_game")),
    ("centre-prior pointing game, malignant", ("explanations", "per_class", "malignant", "baseline_pointing_game")),
    # What a recipe is chosen on: the validation part, never the held-out test part.
    ("validation macro AUC", ("validation", "auc_macro")),
    ("best validation loss", ("run", "best_val_loss")),
)


# Per source, for runs on several sources (their metrics.json has test_by_source): BUSI three-class, BUS-BRA
# malignant vs benign (it has no normal images), each at the run's operating point.
CV_SOURCE_METRICS = (
    ("BUSI accuracy (operating point)", ("test_by_source", "busi", "accuracy")),
    ("BUSI macro-F1 (operating point)", ("test_by_source", "busi", "macro_f1")),
    ("BUSI malignant AUC", ("test_by_source", "busi", "per_class", "malignant", "auc")),
    ("BUSI malignant sensitivity", ("test_by_source", "busi", "sensitivity_malignant")),
    ("BUSI ECE", ("test_by_source", "busi", "ece")),
    ("BUS-BRA malignant AUC", ("test_by_source", "bus-bra", "per_class", "malignant", "auc")),
    ("BUS-BRA malignant sensitivity", ("test_by_source", "bus-bra", "sensitivity_malignant")),
    ("BUS-BRA malignant specificity", ("test_by_source", "bus-bra", "specificity_malignant")),
    ("BUS-BRA ECE", ("test_by_source", "bus-bra", "ece")),
)


POOLED_RELIABILITY = "reliability_pooled.png"  # cv-summary's figure of the pooled test predictions


class CvSummaryError(BusiViewerError):
    """The run folders cannot be summarised together (missing metrics, different recipes)."""


def _lookup(metrics: dict, path: tuple[str, ...]) -> float | None:
    value = metrics
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _recipe_hash(run_dir: Path, metrics: dict) -> str | None:
    """The recipe's hash under today's rule (:func:`training.config.config_hash`), from the run's resolved
    config.toml: the hash a run recorded when it was made may count fields added since (an export-only one)."""
    path = Path(run_dir) / "config.toml"
    return config_hash(load_config(path)) if path.is_file() else metrics["run"].get("config_hash")


def load_runs(run_dirs: list[Path]) -> list[tuple[Path, dict]]:
    """(run folder, its metrics.json) of each evaluated run; :class:`CvSummaryError` for none or one unevaluated."""
    if not run_dirs:
        raise CvSummaryError("no run folders given")
    loaded = []
    for run_dir in run_dirs:
        path = Path(run_dir) / "metrics.json"
        if not path.is_file():
            raise CvSummaryError(f"{run_dir} has no metrics.json: run `busi-train evaluate {run_dir}` first")
        loaded.append((Path(run_dir), json.loads(path.read_text(encoding="utf-8"))))
    return loaded


def summarise_cv(run_dirs: list[Path]) -> dict:
    """Per-run values and mean / sd / min / max of :data:`CV_METRICS` over evaluated run folders."""
    loaded = load_runs(run_dirs)
    recipes = {_recipe_hash(run_dir, metrics) for run_dir, metrics in loaded}
    if len(recipes) > 1:
        raise CvSummaryError("the runs were trained with different configs; summarise one recipe at a time")
    wanted = CV_METRICS + (CV_SOURCE_METRICS if any("test_by_source" in m for _, m in loaded) else ())
    runs = [{"run": str(run_dir), "fold": metrics["run"].get("fold"), "seed": metrics["run"].get("seed"),
             "n_test": metrics["test"]["n"],
             # every epoch's time, resumes included (older runs: the last process's fitting time only)
             "fit_seconds": metrics["run"].get("epochs_seconds", metrics["run"].get("fit_seconds")),
             "values": {label: _lookup(metrics, key) for label, key in wanted}} for run_dir, metrics in loaded]
    summary = {}
    for label, _ in wanted:
        values = np.array([r["values"][label] for r in runs if r["values"][label] is not None], dtype=float)
        summary[label] = None if values.size == 0 else {
            "mean": float(values.mean()), "sd": float(values.std(ddof=1)) if values.size > 1 else None,
            "min": float(values.min()), "max": float(values.max()), "n_runs": int(values.size)}
    result = {"runs": runs, "summary": summary, "n_test_total": int(sum(r["n_test"] for r in runs))}
    pooled = pooled_test(loaded)
    if pooled:
        result["pooled_test"] = pooled
    return result


@dataclass(frozen=True)
class FoldTest:
    """One fold's held-out test predictions as its run decided them: ``probs`` (N, K) float64 at the fold's own
    validation temperature, ``decided`` (N,) int64 at its own malignant threshold (arg-max without one),
    ``sources`` (N,) str ("" for a single-source run), ``groups`` (N,) str (the split's groups, "" if unknown)."""

    fold: int | None
    files: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    decided: np.ndarray
    sources: np.ndarray
    groups: np.ndarray
    positive: int | None  # index of the threshold's class (malignant), None for arg-max runs

    def reordered(self, order: np.ndarray) -> FoldTest:
        """The same predictions, image ``order[i]`` at position i (every per-image array reordered)."""
        return dataclasses.replace(self, **{f.name: getattr(self, f.name)[order] for f in dataclasses.fields(self)
                                            if isinstance(getattr(self, f.name), np.ndarray)})


def load_fold_test(run_dir: Path, metrics: dict) -> FoldTest:
    """The run's ``predictions_test.npz`` at the operating point recorded in its ``metrics``."""
    path = Path(run_dir) / "predictions_test.npz"
    if not path.is_file():
        raise CvSummaryError(f"{run_dir} keeps no predictions_test.npz (runs published before 2026-12-04 lack it)")
    test = Predictions.load(path)
    point = metrics["operating_point"]
    positive = metrics["test"]["class_names"].index(point["threshold_class"]) if point.get("threshold_class") else None
    probs = softmax(test.logits, point["temperature"])
    threshold = point.get("threshold")
    decided = probs.argmax(axis=1) if threshold is None else predict_with_threshold(probs, positive, threshold)
    return FoldTest(metrics["run"].get("fold"), test.files, np.asarray(test.labels, np.int64), probs, decided,
                    files_sources(test.files), test.groups, positive)


def pooled_test(loaded: list[tuple[Path, dict]]) -> dict:
    """Every fold's held-out test predictions pooled (out-of-fold), per source ("all" and, for a run on several
    sources, each one), each fold at its own validation temperature and threshold: accuracy and macro-F1 at
    the operating point and arg-max, sensitivity and specificity of the threshold's class, and top-label ECE
    with the band a perfectly calibrated model would show on as many images
    (:func:`training.metrics.ece_if_calibrated`) and the reliability bins behind it.

    One fold's test part (about 150 BUSI images) is too small to tell an ECE of 0.05 from perfect calibration;
    the pooled predictions are five times as many. {} unless every run folder keeps ``predictions_test.npz``.
    """
    if not all((Path(run_dir) / "predictions_test.npz").is_file() for run_dir, _ in loaded):
        return {}
    folds = [load_fold_test(run_dir, metrics) for run_dir, metrics in loaded]
    positive = folds[0].positive
    reliability = loaded[0][1]["test"].get("reliability")
    n_bins = len(reliability["edges"]) - 1 if reliability else ECE_BINS  # as the folds' own ECE was binned
    labels, probs, decided, sources = (np.concatenate([getattr(f, name) for f in folds])
                                       for name in ("labels", "probs", "decided", "sources"))
    k = probs.shape[1]
    out = {}
    for source in ["all", *sorted(str(s) for s in set(sources) - {""})]:
        keep = np.ones(labels.size, bool) if source == "all" else sources == source
        y, p, d = labels[keep], probs[keep], decided[keep]
        block = {"n": int(keep.sum()), "accuracy": accuracy(y, d), "macro_f1": macro_f1(y, d, k),
                 "accuracy_argmax": accuracy(y, p.argmax(axis=1)),
                 "macro_f1_argmax": macro_f1(y, p.argmax(axis=1), k),
                 "ece": expected_calibration_error(y, p, n_bins), "ece_if_calibrated": ece_if_calibrated(p, n_bins),
                 "reliability": _reliability_json(reliability_bins(y, p, n_bins))}
        if positive is not None:
            block["sensitivity"] = float(np.mean(d[y == positive] == positive)) if (y == positive).any() else None
            block["specificity"] = float(np.mean(d[y != positive] != positive)) if (y != positive).any() else None
        out[source] = block
    return out


def _reliability_json(bins: dict[str, np.ndarray]) -> dict[str, list]:
    """:func:`training.metrics.reliability_bins` as JSON lists (an empty bin's means as None)."""
    means = {key: [None if np.isnan(v) else float(v) for v in bins[key]] for key in ("confidence", "accuracy")}
    return {"edges": bins["edges"].tolist(), "count": bins["count"].tolist(), **means}


def _fmt(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.3f}"


def cv_markdown(result: dict) -> str:
    """The summary as a Markdown table (mean ± sd [min, max] over runs)."""
    seeds = sorted({r["seed"] for r in result["runs"] if r["seed"] is not None})
    folds = sorted({r["fold"] for r in result["runs"] if r["fold"] is not None})
    where = (f"grouped cross-validation folds {', '.join(map(str, folds))}" if folds else "the single grouped split")
    lines = [f"{len(result['runs'])} runs: {where}, seeds {', '.join(map(str, seeds))}; "
             f"{result['n_test_total']} held-out test predictions in all (each test image once per run).", "",
             "| metric | mean ± sd | min – max |", "|---|---|---|"]
    for label, stats in result["summary"].items():
        if stats is None:
            lines.append(f"| {label} | n/a | |")
            continue
        sd = f" ± {stats['sd']:.3f}" if stats["sd"] is not None else ""
        lines.append(f"| {label} | {stats['mean']:.3f}{sd} | {stats['min']:.3f} – {stats['max']:.3f} |")
    if result.get("pooled_test"):
        lines += ["", "All folds' test predictions pooled (each fold at its own validation temperature and threshold); "
                  "ECE top-label, beside what a perfectly calibrated model would show on as many images (mean and "
                  "95th percentile over label sets drawn from its own probabilities):", "",
                  "| test images | n | accuracy (operating point) | macro-F1 (operating point) | accuracy (arg-max) | "
                  "macro-F1 (arg-max) | sensitivity | specificity | ECE | ECE if calibrated (95 %) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for source, block in result["pooled_test"].items():
            band = block["ece_if_calibrated"]
            lines.append(f"| {source} | {block['n']} | {_fmt(block['accuracy'])} | {_fmt(block['macro_f1'])} | "
                         f"{_fmt(block['accuracy_argmax'])} | {_fmt(block['macro_f1_argmax'])} | "
                         f"{_fmt(block.get('sensitivity'))} | {_fmt(block.get('specificity'))} | "
                         f"{_fmt(block['ece'])} | {_fmt(band['mean'])} ({_fmt(band['p95'])}) |")
        lines += ["", f"![Reliability of the pooled test predictions, per source]({POOLED_RELIABILITY})"]
    return "\n".join(lines) + "\n"


def write_result(out: Path, stem: str, result: dict, markdown: str) -> dict:
    """``result`` as ``out/STEM.json`` and ``markdown`` as ``out/STEM.md``, each written whole; returns ``result``."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / f"{stem}.json", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    with atomic_write(out / f"{stem}.md", encoding="utf-8") as handle:
        handle.write(markdown)
    return result


def write_cv_summary(run_dirs: list[Path], out: Path) -> dict:
    """Write ``cv_summary.json`` and ``cv_summary.md`` into ``out``; returns the summary."""
    result = summarise_cv(run_dirs)
    if result.get("pooled_test"):
        pooled_reliability_plot(result["pooled_test"], out / POOLED_RELIABILITY)
    return write_result(out, "cv_summary", result, cv_markdown(result))


def pooled_reliability_plot(pooled: dict, path: Path) -> Path:
    """Reliability diagrams of the pooled test predictions: one panel per source (or "all" for one source)."""
    from training import plots

    shown = [source for source in pooled if source != "all"] or ["all"]
    panels = {}
    for source in shown:
        bins = pooled[source]["reliability"]
        panels[f"{source}, pooled folds (n = {pooled[source]['n']})"] = tuple(
            np.array([np.nan if v is None else v for v in bins[key]], dtype=np.float64)
            for key in ("confidence", "accuracy", "count")) + (pooled[source]["ece"],)
    path.parent.mkdir(parents=True, exist_ok=True)
    return plots.reliability_plot(panels, path)
