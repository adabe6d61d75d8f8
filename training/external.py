"""``busi-train score-external``: an evaluated run scored on a source it never saw (leave-one-source-out).

The honest estimate of what an unseen hospital gets: a model trained on BUSI alone scored on every BUS-BRA
image, or one trained on BUS-BRA alone scored on BUSI's lesion images (a benign-vs-malignant model's task has no
normal class, so BUSI's normal images are not indexed). The run's own temperature and threshold (chosen on its
validation split) are applied unchanged; nothing is fitted on the external images. Results go to
``external_<source>.json`` and into the run's metrics.json and report.md (under "external"), and stay there when
the run is evaluated again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from busi_viewer.core.atomic import atomic_write
from busi_viewer.core.errors import BusiViewerError
from busi_viewer.inference.device import configure_threads
from training.config import load_config
from training.data import BusiDataset, index_dataset, load_or_build_cache
from training.metrics import softmax, summarise
from training.pipeline import Predictions, predict_logits, split_groups

EXTERNAL_PREFIX = "external_"


class ExternalScoreError(BusiViewerError, ValueError):
    """The run cannot be scored on that source (it trained on it, or it was not evaluated yet)."""


def external_results(run_dir: Path) -> dict[str, dict]:
    """Every ``external_<source>.json`` of a run folder, keyed "<source> (never seen)" (for the report)."""
    results = {}
    for path in sorted(Path(run_dir).glob(f"{EXTERNAL_PREFIX}*.json")):
        block = json.loads(path.read_text(encoding="utf-8"))
        results[f"{block['source']} (never seen)"] = block["metrics"]
        for device, metrics in block.get("by_device", {}).items():
            results[f"{block['source']}, {device} (never seen)"] = metrics
    return results


def score_external(run_dir: Path, source: str, root: Path | str | None = None, *, progress: bool = True) -> dict:
    """Score the evaluated run at ``run_dir`` on every image of ``source`` ("busi" or "bus-bra") that its task
    covers; returns (and writes) ``{"source", "n", "metrics", "by_device"}``.

    Raises ExternalScoreError when the run trained on ``source`` itself (that would not be an external test) or
    has no metrics.json yet (its temperature and threshold come from its evaluation).
    """
    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.toml")
    trained_on = json.loads((run_dir / "fit.json").read_text(encoding="utf-8")).get("images_per_source") or {
        config.data.dataset: 0}
    if source in trained_on or source == config.data.dataset:
        raise ExternalScoreError(f"{run_dir.name} was trained on {source}: scoring it there is not an external test")
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise ExternalScoreError(f"{run_dir.name} has no metrics.json: run 'busi-train evaluate {run_dir}' first")
    point = json.loads(metrics_path.read_text(encoding="utf-8"))["operating_point"]

    from training.evaluate import load_run_model

    model = load_run_model(run_dir, config, torch.device("cpu"))
    block, predictions = score_on_source(model, config, point["temperature"], point.get("threshold"), source, root,
                                         progress=progress)
    predictions.save(run_dir / f"predictions_{EXTERNAL_PREFIX}{source}.npz")
    with atomic_write(run_dir / f"{EXTERNAL_PREFIX}{source}.json", encoding="utf-8") as handle:
        json.dump(block, handle, indent=2)
    _refresh_report(run_dir)
    return block


def score_bundle(bundle_dir: Path, source: str, root: Path | str | None, out: Path, *, progress: bool = True) -> dict:
    """Score an installed model bundle (verified weights, its card's temperature and threshold, the recipe in its
    config.toml) on every image of ``source`` its task covers; writes ``out/<bundle>-<version>_<source>.json``.
    Whether the bundle's model saw ``source`` in training is for the caller to know (its card says)."""
    from busi_viewer.inference.bundle import load_bundle

    loaded = load_bundle(bundle_dir, "cpu")
    config = load_config(loaded.folder / "config.toml")
    card = loaded.card
    positive = config.positive_class
    block, predictions = score_on_source(loaded.model, config, card.calibration_temperature,
                                         card.thresholds.get(positive), source, root, progress=progress)
    block["model"] = f"{card.name} {card.version}"
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{card.name}-{card.version}_{source}"
    predictions.save(out / f"{stem}.npz")
    with atomic_write(out / f"{stem}.json", encoding="utf-8") as handle:
        json.dump(block, handle, indent=2)
    return block


def score_on_source(model: torch.nn.Module, config, temperature: float, threshold: float | None, source: str,
                    root: Path | str | None, *, progress: bool = True) -> tuple[dict, Predictions]:
    """Predictions and metrics of ``model`` (trained with ``config``) on every image of ``source`` its task
    covers, calibrated with ``temperature`` and decided with ``threshold`` on the positive class (None: arg-max).
    Bootstrap CIs resample the source's own groups (BUSI: near-duplicate groups, BUS-BRA: patients)."""
    configure_threads(config.train.num_threads or None)
    index = index_dataset(source, root, config.data.task)
    spec = config.preprocess_spec()
    cache = load_or_build_cache(index, spec, config.data.cache_dir or None, threads=config.data.decode_threads,
                                progress=progress)
    groups, _ = split_groups(config, index)
    logits = predict_logits(model.eval(), BusiDataset(cache, np.arange(len(index)), spec), torch.device("cpu"),
                            tta_hflip=config.eval.tta_hflip)
    predictions = Predictions(files=np.array(index.relpaths), labels=index.labels, logits=logits,
                              groups=np.array(groups))
    probs = softmax(logits, temperature)
    options = dict(class_names=config.class_names, positive_class=config.positive_class, threshold=threshold,
                   n_boot=config.eval.bootstrap, confidence=config.eval.confidence, ece_bins=config.eval.ece_bins,
                   seed=0)

    def metrics_of(keep: np.ndarray) -> dict:
        return summarise(index.labels[keep], probs[keep], groups=np.array(groups)[keep], **options)

    devices = np.array([s.device for s in index])
    block = {"source": source, "n": len(index), "data_manifest_sha256": index.manifest_sha256(),
             "metrics": metrics_of(np.ones(len(index), bool)),
             "by_device": {str(d): metrics_of(devices == d) for d in np.unique(devices[devices != ""])}}
    return block, predictions


def _refresh_report(run_dir: Path) -> None:
    """Put the run's external results into its metrics.json and report.md without re-evaluating it."""
    from training.evaluate import write_run_report

    results = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    results["external"] = external_results(run_dir)
    with atomic_write(run_dir / "metrics.json", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
    write_run_report(run_dir, load_config(run_dir / "config.toml"), results)
