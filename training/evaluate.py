"""``busi-train evaluate``: every number and figure of one run, from its run folder alone.

Calibration (temperature) and the malignant operating threshold are fitted on VALIDATION predictions and
applied to test; the test set is only read here, never used to choose anything. Writes ``metrics.json``,
the figures and ``report.md`` into the run folder.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from busi_viewer.core.atomic import atomic_write
from busi_viewer.inference.architectures import build_classifier
from busi_viewer.inference.model_card import ModelCard
from busi_viewer.inference.predictor import Predictor
from training import plots
from training.config import TrainConfig, load_config
from training.data import Sample, files_sources, sample_image, sample_mask
from training.engine import BEST_WEIGHTS
from training.export import DATASET_CITATION, SPLIT_GROUPS
from training.external import external_results
from training.explain_eval import breakdown, randomisation_check, score_maps, summarise_scores, tune_threshold
from training.metrics import fit_temperature, roc_curve, softmax, summarise, threshold_for_sensitivity
from training.pipeline import Predictions, audit_groups_csv, index_for
from training.report import write_report
from training.repredict import derived_from
from training.splits import read_audit_groups, read_split_manifest

RANDOMISATION_IMAGES = 24
GRID_IMAGES = 16


def operating_point(config: TrainConfig, val: Predictions) -> tuple[float, float | None, dict]:
    """(temperature, malignant threshold or None, what was chosen and how), all from validation only.

    With several sources in validation (their files prefixed "busi/", "bus-bra/"), the threshold is the largest
    that reaches the target sensitivity on each source's validation images: a pooled choice could meet the target
    on average while one hospital's cancers fall short of it.
    """
    temperature = fit_temperature(val.logits, val.labels) if config.eval.calibrate else 1.0
    choice: dict = {"temperature": temperature, "calibrated_on": "validation" if config.eval.calibrate else None}
    threshold = None
    if config.eval.threshold == "target_sensitivity":
        positive = config.class_names.index(config.eval.threshold_class)
        scores = softmax(val.logits, temperature)[:, positive]
        is_positive = val.labels == positive
        sources = files_sources(val.files)
        per_source = {source: threshold_for_sensitivity(scores[sources == source], is_positive[sources == source],
                                                        config.eval.target_sensitivity)
                      for source in np.unique(sources) if is_positive[sources == source].any()}
        threshold = min(picked.threshold for picked in per_source.values())
        negatives = scores[~is_positive]
        choice.update(threshold=threshold, threshold_class=config.eval.threshold_class,
                      target_sensitivity=config.eval.target_sensitivity,
                      validation_sensitivity=float(np.mean(scores[is_positive] >= threshold)),
                      validation_specificity=float(np.mean(negatives < threshold)) if negatives.size else float("nan"))
        if len(per_source) > 1:
            choice["per_source_thresholds"] = {str(source): picked.threshold for source, picked in per_source.items()}
    return temperature, threshold, choice


def duplicate_free_mask(run_dir: Path, config: TrainConfig, test: Predictions) -> tuple[np.ndarray | None, str]:
    """(N,) bool: test images with no audit-group member in train or val; None without an audit."""
    if config.data.dataset != "busi":
        return None, "no near-duplicate audit for this dataset (its split keeps patients together)"
    groups_csv = audit_groups_csv(config)
    if not groups_csv.is_file():
        return None, f"no audit groups at {groups_csv}"
    manifest = read_split_manifest(run_dir / "split_manifest.csv")
    files = [row.file for row in manifest]
    groups, _ = read_audit_groups(groups_csv, files)
    split_of = {row.file: row.split for row in manifest}
    seen_in_training = {g for f, g in zip(files, groups) if split_of[f] in ("train", "val")}
    group_of = dict(zip(files, groups))
    return np.array([group_of[str(f)] not in seen_in_training for f in test.files]), str(groups_csv)


def load_run_model(run_dir: Path, config: TrainConfig, device: torch.device):
    """The run's best weights (``best.pt``, read tensors-only) in its architecture, in eval mode on ``device``."""
    model = build_classifier(config.model.arch, len(config.class_names), config.model.drop_rate,
                             config.model.output_stride)
    model.load_state_dict(torch.load(run_dir / BEST_WEIGHTS, map_location="cpu", weights_only=True))
    return model.to(device).eval()


def run_predictor(run_dir: Path, config: TrainConfig, temperature: float, threshold: float | None) -> Predictor:
    """A CPU predictor of the run's best weights deciding as its operating point does (``threshold`` on the
    positive class, None: arg-max) and run as its exported bundle would be (mirror averaging with
    ``eval.tta_hflip``): its maps are those a reader of the app would be shown."""
    device = torch.device("cpu")
    card = ModelCard(name=config.name, version="eval", architecture=config.model.arch, class_names=config.class_names,
                     preprocess=config.preprocess_spec(), calibration_temperature=temperature,
                     thresholds={config.positive_class: threshold} if threshold is not None else {},
                     test_time_flip=config.eval.tta_hflip, output_stride=config.model.output_stride)
    return Predictor(load_run_model(run_dir, config, device), card, device)


def _images_with_masks(samples: dict[str, Sample], predictions: Predictions):
    """(rgb, mask, label, source, group) of every prediction, for :func:`score_maps` (empty mask: no lesion)."""
    sources = files_sources(predictions.files)
    for file, label, source, group in zip(predictions.files, predictions.labels, sources, predictions.groups):
        sample = samples[str(file)]
        rgb = sample_image(sample)
        mask = sample_mask(sample, rgb.shape[:2])
        yield rgb, (mask if mask is not None else np.zeros(rgb.shape[:2], bool)), int(label), str(source), str(group)


def run_evaluate(run_dir: Path, progress: bool = True) -> dict:
    """Compute and write ``metrics.json``, figures and ``report.md`` for the run at ``run_dir``."""
    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.toml")
    fit_info = json.loads((run_dir / "fit.json").read_text(encoding="utf-8"))
    val = Predictions.load(run_dir / "predictions_val.npz")
    test = Predictions.load(run_dir / "predictions_test.npz")
    temperature, threshold, choice = operating_point(config, val)
    options = dict(n_boot=config.eval.bootstrap, confidence=config.eval.confidence, seed=0,
                   ece_bins=config.eval.ece_bins)

    class_names, positive = config.class_names, config.positive_class

    def metrics_of(p: Predictions, t: float = temperature, keep: np.ndarray | None = None,
                   operating_point: bool = True) -> dict:
        keep = np.ones(len(p.labels), bool) if keep is None else keep
        groups = p.groups[keep] if config.eval.bootstrap_by_group and np.all(p.groups != "") else None
        return summarise(p.labels[keep], softmax(p.logits[keep], t), threshold=threshold if operating_point else None,
                         groups=groups, class_names=class_names, positive_class=positive, **options)

    results = {
        "run": fit_info, "operating_point": choice,
        "test": metrics_of(test, temperature),
        "test_uncalibrated": metrics_of(test, 1.0),
        # The sensitivity-first threshold trades accuracy for malignant recall; arg-max shows the other side.
        "test_argmax": metrics_of(test, temperature, operating_point=False),
        "validation": metrics_of(val, temperature),
        "inference": {"mirror_averaged": config.eval.tta_hflip, "derived_from": derived_from(run_dir)},
    }
    overlaid_path = run_dir / "predictions_test_overlaid.npz"
    if overlaid_path.is_file():
        results["test_overlaid"] = metrics_of(Predictions.load(overlaid_path), temperature)
    free, audit_source = duplicate_free_mask(run_dir, config, test)
    results["duplicates"] = {"audit": audit_source}
    if free is not None:
        results["duplicates"].update(n_test=int(free.size), n_test_with_near_duplicate_in_train=int((~free).sum()))
        if free.any():
            results["test_duplicate_free"] = metrics_of(test, temperature, free)

    index = index_for(config, fit_info.get("data_roots") or {config.data.dataset: fit_info["data_root"]})
    samples = {sample.relpath: sample for sample in index}
    results.update(by_source_and_device(test, val, samples, metrics_of))

    predictor = run_predictor(run_dir, config, temperature, threshold)
    level = tune_threshold(score_maps(predictor, _images_with_masks(samples, val)))
    test_scores = score_maps(predictor, _images_with_masks(samples, test))
    results["explanations"] = summarise_scores(test_scores, class_names, level)
    results["explanations"]["map"] = predictor.card.explanation_name()  # as the app shows it
    results["explanations"]["by_source_and_size"] = breakdown(test_scores, n_boot=config.eval.bootstrap,
                                                              confidence=config.eval.confidence,
                                                              by_group=config.eval.bootstrap_by_group)
    lesion_files = [f for f, label in zip(test.files, test.labels) if class_names[int(label)] != "normal"]
    sample = [sample_image(samples[str(f)]) for f in lesion_files[:RANDOMISATION_IMAGES]]
    results["explanations"]["randomisation_check"] = randomisation_check(predictor, sample)

    external = external_results(run_dir)
    if external:
        results["external"] = external
    _figures(run_dir, results, test, temperature, predictor, samples, class_names)
    with atomic_write(run_dir / "metrics.json", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
    write_run_report(run_dir, config, results)
    return results


def write_run_report(run_dir: Path, config: TrainConfig, results: dict) -> Path:
    """report.md of an evaluated run from its results (metrics.json's content)."""
    return write_report(run_dir, results, f"{config.name}: {config.description}", class_names=config.class_names,
                        positive=config.positive_class, data=DATASET_CITATION[config.data.dataset],
                        groups=SPLIT_GROUPS[config.data.dataset])


def by_source_and_device(test: Predictions, val: Predictions, samples: dict[str, Sample], metrics_of) -> dict:
    """Per-source test and validation metrics (a multi-source run), and per-scanner test metrics where the data
    set records the scanner (BUS-BRA); {} for a single source without scanners. ``metrics_of(predictions,
    temperature, keep)`` is the run's summariser; the temperature is the run's (passed by the caller's closure)."""
    out: dict = {}
    for name, predictions in (("test", test), ("validation", val)):
        sources = files_sources(predictions.files)
        if np.unique(sources).size > 1:
            out[f"{name}_by_source"] = {str(source): metrics_of(predictions, keep=sources == source)
                                        for source in np.unique(sources)}
    devices = np.array([samples[str(f)].device for f in test.files])
    if (devices != "").any():
        out["test_by_device"] = {str(device): metrics_of(test, keep=devices == device)
                                 for device in np.unique(devices[devices != ""])}
    return out


def _figures(run_dir: Path, results: dict, test: Predictions, temperature: float, predictor: Predictor,
             samples: dict[str, Sample], class_names: tuple[str, ...]) -> None:
    with (run_dir / "epochs.csv").open(newline="", encoding="utf-8") as handle:
        history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    title = results["run"]["config"]
    plots.learning_curves(history, run_dir / "learning_curves.png", title)
    plots.confusion_matrix_plot(np.array(results["test"]["confusion_matrix"]), class_names,
                                run_dir / "confusion_matrix.png", f"{title}: test")
    probs = softmax(test.logits, temperature)
    curves = {}
    for c, name in enumerate(class_names):
        fpr, tpr, _ = roc_curve(probs[:, c], test.labels == c)
        curves[name] = (fpr, tpr, results["test"]["per_class"][name]["auc"] or float("nan"))
    plots.roc_plot(curves, run_dir / "roc.png", f"{title}: test, one-vs-rest")
    plots.reliability_plot({"before scaling": _reliability(results["test_uncalibrated"]),
                            "after scaling": _reliability(results["test"])}, run_dir / "reliability.png")
    if results.get("test_by_source"):
        plots.reliability_plot({f"{source}, after scaling": _reliability(block)
                                for source, block in results["test_by_source"].items()},
                               run_dir / "reliability_by_source.png")
    plots.gradcam_grid(_grid_items(test, predictor, samples), run_dir / "gradcam_test.png")


def _reliability(block: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(confidence, accuracy, count per bin, ECE) of one metrics block, for plots.reliability_plot."""
    rel = block["reliability"]
    return (np.array([v if v is not None else np.nan for v in rel["confidence"]]),
            np.array([v if v is not None else np.nan for v in rel["accuracy"]]), np.array(rel["count"]), block["ece"])


def _grid_items(test: Predictions, predictor: Predictor, samples: dict[str, Sample]) -> list[dict]:
    """Up to GRID_IMAGES test images: failures first (they teach most), then correct ones, classes mixed."""
    items, wrong, right = [], [], []
    for i, (file, label) in enumerate(zip(test.files, test.labels)):
        predicted = int(np.argmax(test.logits[i]))
        (wrong if predicted != label else right).append(i)
    rng = np.random.default_rng(0)
    chosen = wrong[: GRID_IMAGES // 2] + list(rng.permutation(right)[: GRID_IMAGES - min(len(wrong), GRID_IMAGES // 2)])
    for i in chosen:
        sample = samples[str(test.files[i])]
        rgb = sample_image(sample)
        prediction = predictor.predict(rgb)
        true_name = predictor.card.class_names[int(test.labels[i])]
        items.append({
            "rgb": rgb, "heatmap": prediction.heatmap, "mask": sample_mask(sample, rgb.shape[:2]),
            "caption": f"{Path(str(test.files[i])).name}\ntrue {true_name} / pred {prediction.predicted_class} "
                       f"({prediction.probabilities.max():.2f})",
            "failure": prediction.predicted_class != true_name,
        })
    return items
