"""``report.md`` of one evaluated run: what was trained on what, every number with its protocol, the figures."""

from __future__ import annotations

from pathlib import Path

from busi_viewer import RESEARCH_USE_BANNER
from busi_viewer.core.atomic import atomic_write


def _num(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _with_ci(block: dict, key: str) -> str:
    interval = block.get("bootstrap", {}).get("intervals", {}).get(key)
    point = _num(block.get(key))
    if not interval or interval.get("low") is None:
        return point
    return f"{point} [{_num(interval['low'])}, {_num(interval['high'])}]"


def _calibrated_band(block: dict) -> str:
    band = block.get("ece_if_calibrated") or {}
    return "–" if band.get("mean") is None else f"{band['mean']:.3f} (95 %: {band['p95']:.3f})"


def _metrics_table(sets: dict[str, dict], positive: str) -> list[str]:
    keys = ("accuracy", "macro_f1", "auc_macro", f"auc_{positive}", f"sensitivity_{positive}",
            f"specificity_{positive}")
    lines = ["| evaluation set | n | " + " | ".join(keys) + " | ECE | ECE if calibrated | MSE | RMSE | MAE |",
             "|---|---|" + "---|" * (len(keys) + 5)]
    for label, block in sets.items():
        if block.get(f"auc_{positive}") is None and block.get("per_class"):
            block = {**block, f"auc_{positive}": block["per_class"][positive]["auc"]}
        lines.append(f"| {label} | {block['n']} | " + " | ".join(_with_ci(block, k) for k in keys)
                     + f" | {_num(block.get('ece'))} | {_calibrated_band(block)} | {_num(block.get('mse'))}"
                       f" | {_num(block.get('rmse'))}"
                       f" | {_num(block.get('mae'))} |")
    return lines


def write_report(run_dir: Path, results: dict, title: str, *, class_names: tuple[str, ...], positive: str,
                 data: str, groups: str) -> Path:
    """Write ``run_dir/report.md`` from the dict :func:`training.evaluate.run_evaluate` returns.

    ``class_names``: the outputs in order; ``positive``: the class the operating point and the headline
    sensitivity are about; ``data``: the dataset as cited; ``groups``: what a bootstrap resamples together.
    """
    run, point = results["run"], results["operating_point"]
    lines = [f"# {title}", "", f"**{RESEARCH_USE_BANNER}.**", "",
             "## Data and protocol", "",
             # Data sets by name and manifest hash, never by a machine's folder: reports travel with bundles.
             f"- Data: {data}, {run['n_images']} images"
             + (" (" + ", ".join(f"{source} {n}" for source, n in run["images_per_source"].items()) + ")"
                if len(run.get("images_per_source") or {}) > 1 else "") + " "
             f"(manifest SHA-256 `{run['data_manifest_sha256'][:16]}…`); split {split_sizes_text(run['split_sizes'])}; "
             f"{run['train_items_per_epoch']} training items per epoch.",
             f"- Recipe `{run['config']}` (hash `{run['config_hash']}`, resolved in `config.toml`), seed {run['seed']}"
             + (f", fold {run['fold']}" if run.get("fold") is not None else "") + ".",
             f"- Backbone weights: {run['pretrained']}. Trained on {run['device']}, torch {run['torch']}: "
             f"{run['epochs_run']} epochs in {run.get('epochs_seconds', run['fit_seconds']):.0f} s"
             + (f", {run['train_images_per_second']:.1f} training images/s" if run.get("train_images_per_second")
                else "") + f" (best epoch {run['best_epoch']}"
             + (", stopped early" if run["stopped_early"] else "") + ")."
             + (f" Frozen: the first {run['freezing']['frozen_stages']} of {run['freezing']['stages']} backbone "
                f"stages ({run['freezing']['frozen_parameters']:,} of {run['freezing']['backbone_parameters']:,} "
                f"backbone parameters)." if run.get("freezing", {}).get("frozen_stages") else ""),
             f"- Calibration: temperature {point['temperature']:.3f}"
             + (" fitted on validation." if point.get("calibrated_on") else " (not calibrated).")
             + (f" Threshold on p({positive}) {point['threshold']:.3f}, chosen on validation for sensitivity ≥ "
                f"{point['target_sensitivity']} (validation: sensitivity {point['validation_sensitivity']:.3f}, "
                f"specificity {point['validation_specificity']:.3f})." if point.get("threshold") is not None
                else " Decisions: arg-max."),
             *_inference_lines(results.get("inference")),
             "- The test split is read once, by this evaluation; nothing was chosen on it. Intervals are percentile "
             f"bootstrap {int(100 * results['test']['bootstrap']['confidence'])} % CIs over test images "
             f"({results['test']['bootstrap']['n_boot']} resamples"
             + (f", by {groups}" if results["test"]["bootstrap"]["by_group"] else "") + ").",
             "- MSE / RMSE / MAE are computed on the predicted probability vectors against one-hot labels "
             "(mean over images and classes).",
             f"- ECE is top-label, {len(results['test']['reliability']['edges']) - 1} bins. \"ECE if calibrated\" is "
             "what a perfectly calibrated model would show on the same images (labels drawn from its own probabilities): its mean, and its 95th percentile, below "
             "which a measured ECE cannot be told apart from perfect calibration on this many images.", "",
             "## Classification", ""]
    if point.get("calibrated_on"):
        sets = {"test (calibrated)": results["test"], "test (uncalibrated)": results["test_uncalibrated"]}
    else:
        sets = {"test": results["test"]}
    if "test_argmax" in results:
        sets[f"test, arg-max decisions (no {positive} threshold)"] = results["test_argmax"]
    sets["validation"] = results["validation"]
    if "test_overlaid" in results:
        sets["test, images overlaid with their masks (what the paper's pipeline tests)"] = results["test_overlaid"]
    if "test_duplicate_free" in results:
        sets["test without near-duplicates in train/val"] = results["test_duplicate_free"]
    lines += _metrics_table(sets, positive)
    for key, heading in (("test_by_source", "By source (test, calibrated, the operating point above)"),
                         ("validation_by_source", "By source (validation)"),
                         ("test_by_device", "By scanner (test; the sources that record it)"),
                         ("external", "Sources this model never saw (calibration and threshold from its own "
                                      "validation)")):
        if results.get(key):
            lines += ["", f"{heading}:", ""]
            lines += _metrics_table(results[key], positive)
            if key == "test_by_source":  # a source shortcut for "normal" would show in these columns
                lines += [""] + [f"- confusion matrix, {source} (rows true, columns predicted; "
                                 f"{', '.join(class_names)}): `{block['confusion_matrix']}`"
                                 for source, block in results[key].items()]
    duplicates = results.get("duplicates", {})
    if "n_test" in duplicates:
        lines += ["", f"{duplicates['n_test_with_near_duplicate_in_train']} of {duplicates['n_test']} test images "
                      f"have an exact or near-duplicate (audit group) in train or validation."]
    lines += ["", "Per class (test):", "", "| class | precision | recall | F1 | AUC | support |",
              "|---|---|---|---|---|---|"]
    for name in class_names:
        c = results["test"]["per_class"][name]
        lines.append(f"| {name} | {_num(c['precision'])} | {_num(c['recall'])} | {_num(c['f1'])} | {_num(c['auc'])} "
                     f"| {c['support']} |")
    lines += ["", f"Confusion matrix (rows true, columns predicted; {', '.join(class_names)}): "
                  f"`{results['test']['confusion_matrix']}`", ""]
    if "explanations" in results:
        ex = results["explanations"]
        method = ex.get("map", "Grad-CAM")  # runs evaluated before mirror averaging was named: one pass
        lines += [f"## Explanations ({method} of the predicted class vs the lesion mask, test)", "",
                  "A heatmap shows the classifier's evidence; it is not a lesion detection.", "",
                  f"IoU at the fixed level {ex['tuned_level']} of each map's maximum (tuned on validation) and with "
                  "Otsu's threshold; the centre-prior baseline is a Gaussian at the image centre.", "",
                  "| class | n | pointing game | energy in mask | IoU (Otsu) | IoU (tuned) | baseline pointing | "
                  "baseline energy | baseline IoU (Otsu) |", "|---|---|---|---|---|---|---|---|---|"]
        for name, block in {**ex["per_class"], "all lesions": ex["all"]}.items():
            if block.get("n"):
                lines.append(f"| {name} | {block['n']} | {_num(block['pointing_game'])} | {_num(block['energy_in_mask'])} "
                             f"| {_num(block['iou_otsu'])} | {_num(block['iou_tuned'])} | "
                             f"{_num(block['baseline_pointing_game'])} | {_num(block['baseline_energy_in_mask'])} | "
                             f"{_num(block['baseline_iou_otsu'])} |")
        if ex.get("by_source_and_size"):
            lines += ["", f"By source and lesion size ({method} of the predicted class, test lesion images):", ""]
            lines += explanation_breakdown_lines(ex["by_source_and_size"])
        check = ex["randomisation_check"]
        lines += ["", f"Model-randomisation check (classifier and top 3 conv layers re-initialised, {check['n']} test "
                      f"lesion images): mean Spearman correlation between maps {_num(check['mean_spearman'])} "
                      f"(median {_num(check['median_spearman'])}); values near 1 would mean the maps ignore the "
                      "learned weights.", ""]
    lines += ["## Figures", "", "![learning curves](learning_curves.png)", "", "![confusion matrix](confusion_matrix.png)",
              "![ROC](roc.png)", "", "![reliability](reliability.png)", "",
              *(["![reliability per source](reliability_by_source.png)", ""] if results.get("test_by_source") else []),
              "Test-set Grad-CAMs with lesion outlines (failures first, titles in red) are in the run folder only "
              "(`gradcam_test.png`): they show dataset images, which are never redistributed.", "",
              "![Grad-CAM grid](gradcam_test.png)", ""]
    path = Path(run_dir) / "report.md"
    with atomic_write(path, encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    return path


def _inference_lines(inference: dict | None) -> list[str]:
    """How the weights were run for these numbers (reports evaluated before this was recorded: no line)."""
    if not inference:
        return []
    line = ("- Predictions: the mean of each image's and its mirror image's logits." if inference["mirror_averaged"]
            else "- Predictions: one pass per image (no mirror averaging).")
    origin = inference.get("derived_from")
    if origin:
        line += (f" Re-evaluated with the weights of run `{origin['run']}` under "
                 + ", ".join(f"`{item}`" for item in origin["overrides"])
                 + ": validation and test predicted again, temperature and threshold fitted afresh on validation.")
    return [line]


def split_sizes_text(sizes: dict[str, int]) -> str:
    """{"train": 1859, "val": 399, "test": 397} -> "1859 training, 399 validation and 397 test"."""
    words = {"train": "training", "val": "validation", "test": "test"}
    parts = [f"{count} {words.get(name, name)}" for name, count in sizes.items()]
    return ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else "".join(parts)


POINTING_GOAL, LEAD_GOAL = 0.85, 0.10  # issue #19: pointing game >= 0.85 and >= 0.10 above the centre prior


def _percent(fraction: float) -> str:
    return f"{100 * fraction:g} %"


def explanation_breakdown_lines(block: dict) -> list[str]:
    """Markdown table (and goal lines) of :func:`training.explain_eval.breakdown`'s result: one row per source and
    size cell, "model (prior)" pairs, the pointing game's lead over the prior with its bootstrap CI."""
    low_edge, high_edge = block["size_edges"]
    names = {"all": "all sizes", "small": f"small (< {_percent(low_edge)})",
             "medium": f"medium ({_percent(low_edge)} to < {_percent(high_edge)})",
             "large": f"large (≥ {_percent(high_edge)})"}
    boot = block["bootstrap"]
    lines = [f"Lesion size = mask area / image area. Pointing game: the map's maximum lies in the mask; lead = "
             f"model − centre prior on the same images, {int(100 * boot['confidence'])} % paired percentile "
             f"bootstrap CI ({boot['n_boot']} resamples of "
             f"{'groups (patients, near-duplicate groups)' if boot['by_group'] else 'images'}, seed {boot['seed']}).",
             "", "| source | lesion size | n | pointing game | centre prior | lead [CI] | energy in mask (prior) | "
             "IoU Otsu (prior) |", "|---|---|---|---|---|---|---|---|"]
    for source, cells in block["by_source"].items():
        for cell, name in names.items():
            c = cells.get(cell, {"n": 0})
            if not c["n"]:
                lines.append(f"| {source} | {name} | 0 | – | – | – | – | – |")
                continue
            lead = c["pointing_lead"]
            interval = f" [{lead['low']:+.3f}, {lead['high']:+.3f}]" if lead.get("low") is not None else ""
            lines.append(f"| {source} | {name} | {c['n']} | {_num(c['pointing_game'])} | "
                         f"{_num(c['baseline_pointing_game'])} | {lead['estimate']:+.3f}{interval} | "
                         f"{_num(c['energy_in_mask'])} ({_num(c['baseline_energy_in_mask'])}) | "
                         f"{_num(c['iou_otsu'])} ({_num(c['baseline_iou_otsu'])}) |")
    lines += ["", f"Goals (issue #19): pointing game ≥ {POINTING_GOAL:.2f} and ≥ {LEAD_GOAL:.2f} above the centre "
                  "prior on every source, small lesions included:"]
    for source, cells in block["by_source"].items():
        if source == "all" and len(block["by_source"]) > 1:
            continue
        verdicts = []
        for cell in ("all", "small"):
            c = cells.get(cell, {"n": 0})
            if not c["n"]:
                verdicts.append(f"{names[cell]}: no images")
                continue
            met = c["pointing_game"] >= POINTING_GOAL and c["pointing_lead"]["estimate"] >= LEAD_GOAL
            verdicts.append(f"{names[cell]} {'met' if met else 'missed'} ({_num(c['pointing_game'])}, lead "
                            f"{c['pointing_lead']['estimate']:+.3f})")
        lines.append(f"- {source}: " + "; ".join(verdicts) + ".")
    return lines
