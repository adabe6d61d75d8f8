"""``busi-train explain-eval``: heatmap-vs-mask agreement of an existing model, by source and lesion size.

For a model bundle (verified weights, its card's calibration and threshold) or an evaluated run folder (its best
weights and operating point), without retraining: the images of one split of its own ``split_manifest.csv``
(test by default) are found in the data folders, checked against the manifest's SHA-256s, and scored as
``busi-train evaluate`` scores them (:func:`training.explain_eval.score_maps`, Grad-CAM of the decided class),
then broken down by :func:`training.explain_eval.breakdown`. Writes ``<stem>_explanations_<split>.json`` (the
breakdown, the model, data and timing), ``.md`` (the table) and ``_scores.csv`` (one row of numbers per lesion
image; never image data) into the output folder. Nothing of the bundle or run is changed.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from busi_viewer.core.atomic import atomic_write
from busi_viewer.core.errors import BusiViewerError
from busi_viewer.core.hashing import sha256_file
from busi_viewer.inference.architectures import build_classifier
from busi_viewer.inference.device import configure_threads
from busi_viewer.inference.predictor import Predictor
from training.config import TrainConfig, load_config
from training.data import sample_image, sample_mask
from training.explain_eval import MapScore, breakdown, score_maps, size_bin
from training.metrics import roc_auc
from training.pipeline import index_for
from training.report import explanation_breakdown_lines
from training.splits import read_split_manifest

PROGRESS_EVERY = 50


class ExplainMeasureError(BusiViewerError, ValueError):
    """The folder is neither a bundle nor an evaluated run, or the data do not match its split manifest."""


def load_target(target: Path) -> tuple[Predictor, TrainConfig, str]:
    """(CPU predictor, training config, "name version") of a model bundle or an evaluated run folder."""
    target = Path(target)
    if (target / "model_card.json").is_file():
        from busi_viewer.inference.bundle import load_bundle

        loaded = load_bundle(target, "cpu")
        return (Predictor(loaded.model, loaded.card, "cpu"), load_config(target / "config.toml"),
                f"{loaded.card.name} {loaded.card.version}")
    if (target / "metrics.json").is_file() and (target / "config.toml").is_file():
        from training.evaluate import run_predictor

        config = load_config(target / "config.toml")
        point = json.loads((target / "metrics.json").read_text(encoding="utf-8"))["operating_point"]
        return run_predictor(target, config, point["temperature"], point.get("threshold")), config, target.name
    raise ExplainMeasureError(f"{target} is neither a model bundle (model_card.json) nor an evaluated run folder "
                              "(config.toml and metrics.json)")


def with_inference(predictor: Predictor, output_stride: int | None = None, mirror: bool | None = None) -> Predictor:
    """The same weights run another way, to measure what an inference setting would change: another final
    stride (:data:`~busi_viewer.inference.architectures.OUTPUT_STRIDES`) and/or mirror averaging on or off.
    None keeps the card's setting. The card's calibration and threshold stay as they are."""
    card = predictor.card
    stride = card.output_stride if output_stride is None else output_stride
    flip = card.test_time_flip if mirror is None else mirror
    if (stride, flip) == (card.output_stride, card.test_time_flip):
        return predictor
    model = predictor.model
    if stride != card.output_stride:
        model = build_classifier(card.architecture, card.num_classes, output_stride=stride)
        model.load_state_dict(predictor.model.state_dict())
    return Predictor(model, replace(card, output_stride=stride, test_time_flip=flip), predictor.device)


def measure_explanations(target: Path, out: Path, roots: dict[str, Path | str | None] | None = None,
                         split: str = "test", *, progress: bool = True, output_stride: int | None = None,
                         mirror: bool | None = None) -> dict:
    """Score the lesion images of ``split`` of the model at ``target`` and write the breakdown into ``out``.

    ``roots``: data folders by source ("busi", "bus-bra"); a missing or None entry falls back to the config,
    then the environment variables. ``output_stride`` / ``mirror``: run the weights another way than the card
    says (:func:`with_inference`); the output files' names then say how. Raises ExplainMeasureError when a
    manifest image is missing from the data or its bytes differ from the manifest's hash (another copy of the
    data would measure something else).
    """
    started = time.perf_counter()
    target, out = Path(target), Path(out)
    predictor, config, model = load_target(target)
    predictor = with_inference(predictor, output_stride, mirror)
    card = predictor.card
    threads = configure_threads(config.train.num_threads or None)
    roots = roots or {}
    configured = {"busi": roots.get("busi") or config.data.root,
                  "bus-bra": roots.get("bus-bra") or config.data.busbra_root}
    index = index_for(config, {source: str(path) for source, path in configured.items() if path} or None)
    samples = {sample.relpath: sample for sample in index}
    rows = [row for row in read_split_manifest(target / "split_manifest.csv") if row.split == split]
    if not rows:
        raise ExplainMeasureError(f"{target / 'split_manifest.csv'} lists no {split!r} images")
    missing = [row.file for row in rows if row.file not in samples]
    if missing:
        raise ExplainMeasureError(f"{len(missing)} {split} image(s) of the split manifest are not in the data "
                                  f"folders, e.g. {missing[0]}")
    changed = [row.file for row in rows if sha256_file(samples[row.file].path) != row.sha256]
    if changed:
        raise ExplainMeasureError(f"{len(changed)} {split} image(s) differ from the split manifest's SHA-256, "
                                  f"e.g. {changed[0]}: not the data this model was split on")

    scored_files: list[str] = []  # in score order: only images with a lesion mask are yielded, and all are scored

    def images():
        for k, row in enumerate(rows):
            if progress and k % PROGRESS_EVERY == 0:
                print(f"explain-eval: {k}/{len(rows)} {split} images, {time.perf_counter() - started:.0f} s",
                      file=sys.stderr, flush=True)
            sample = samples[row.file]
            rgb = sample_image(sample)
            mask = sample_mask(sample, rgb.shape[:2])
            if mask is not None and mask.any():
                scored_files.append(row.file)
                yield rgb, mask, sample.label_index, row.source, row.group

    scoring_started = time.perf_counter()
    scores = score_maps(predictor, images())
    scoring_seconds = time.perf_counter() - scoring_started
    if not scores:
        raise ExplainMeasureError(f"no {split} image of {model} has a lesion mask")
    result = {
        "model": model, "target": target.name, "split": split, "n_images_in_split": len(rows),
        "n_lesion_images": len(scores), "class_names": list(config.class_names),
        "data": {"sources": sorted({row.source for row in rows if row.source}),
                 "checked": "every image's SHA-256 against the split manifest"},
        "inference": {"output_stride": card.output_stride, "test_time_flip": card.test_time_flip,
                      "explanation": card.explanation_name()},
        "breakdown": breakdown(scores, n_boot=config.eval.bootstrap or 2000, confidence=config.eval.confidence,
                               by_group=config.eval.bootstrap_by_group),
        "positive_class_auc_on_lesion_images": _positive_auc(scores, list(config.class_names),
                                                            config.positive_class),
        "reported": _reported(target),
        "seconds": {"scoring": round(scoring_seconds, 1), "total": round(time.perf_counter() - started, 1),
                    "per_image": round(scoring_seconds / len(rows), 3)},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": threads,
                    "torch": torch.__version__, "python": platform.python_version()},
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }
    out.mkdir(parents=True, exist_ok=True)
    variant = "".join(part for part, changed in (
        (f"_stride{card.output_stride}", output_stride is not None),
        ("_mirror" if card.test_time_flip else "_one-pass", mirror is not None)) if changed)
    stem = f"{model.replace(' ', '-')}_explanations_{split}{variant}"
    with atomic_write(out / f"{stem}.json", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    _write_scores(out / f"{stem}_scores.csv", scored_files, scores)
    with atomic_write(out / f"{stem}.md", encoding="utf-8") as handle:
        handle.write(f"# {model}: explanations vs lesion masks by source and lesion size ({split} split)\n\n"
                     f"Map: {card.explanation_name()}, final stride {card.output_stride}.\n\n"
                     + "\n".join(explanation_breakdown_lines(result["breakdown"])) + "\n")
    return result


def _positive_auc(scores: list[MapScore], class_names: list[str], positive: str) -> dict[str, float | None]:
    """AUC of p(positive class) among the scored lesion images, per source and pooled ("all"): the model's
    classification on the same images, so that a change of the maps can be weighed against it."""
    if positive not in class_names:
        return {}
    k = class_names.index(positive)
    out = {}
    for source in [*sorted({s.source for s in scores if s.source}), "all"]:
        chosen = [s for s in scores if source == "all" or s.source == source]
        value = roc_auc(np.array([s.probabilities[k] for s in chosen]), np.array([s.label == k for s in chosen]))
        out[source] = None if np.isnan(value) else round(value, 4)
    return out


def _reported(target: Path) -> dict | None:
    """The pooled numbers the target's own report gives (metrics.json "explanations" → "all"), to check against."""
    path = target / "metrics.json"
    if not path.is_file():
        return None
    block = json.loads(path.read_text(encoding="utf-8")).get("explanations", {}).get("all")
    return {k: block[k] for k in ("n", "pointing_game", "baseline_pointing_game", "energy_in_mask", "iou_otsu")
            if k in block} if block else None


def _write_scores(path: Path, files: list[str], scores: list[MapScore]) -> None:
    """One row of numbers per scored image (``files[i]`` is the image of ``scores[i]``), for later analysis."""
    fields = ("file", "source", "group", "label", "predicted", "mask_fraction", "size_bin", "pointing_hit",
              "baseline_pointing_hit", "energy_in_mask", "baseline_energy_in_mask", "iou_otsu", "baseline_iou_otsu")
    with atomic_write(path, encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(fields)
        for file, s in zip(files, scores, strict=True):
            writer.writerow([file, s.source, s.group, s.label, s.predicted, f"{s.mask_fraction:.6f}",
                             size_bin(s.mask_fraction), int(s.pointing_hit), int(s.baseline_pointing_hit),
                             f"{s.energy_in_mask:.6f}", f"{s.baseline_energy_in_mask:.6f}", f"{s.iou_otsu:.6f}",
                             f"{s.baseline_iou_otsu:.6f}"])
