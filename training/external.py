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
    configure_threads(config.train.num_threads or None)
    index = index_dataset(source, root, config.data.task)
    spec = config.preprocess_spec()
    cache = load_or_build_cache(index, spec, config.data.cache_dir or None, threads=config.data.decode_threads,
                                progress=progress)
    groups, _ = split_groups(config, index)

    from training.evaluate import _load_model

    device = torch.device("cpu")
    model = _load_model(run_dir, config, device)
    logits = predict_logits(model, BusiDataset(cache, np.arange(len(index)), spec), device,
                            tta_hflip=config.eval.tta_hflip)
    predictions = Predictions(files=np.array(index.relpaths), labels=index.labels, logits=logits,
                              groups=np.array(groups))
    predictions.save(run_dir / f"predictions_{EXTERNAL_PREFIX}{source}.npz")

    probs = softmax(logits, point["temperature"])
    options = dict(class_names=config.class_names, positive_class=config.positive_class,
                   threshold=point.get("threshold"), n_boot=config.eval.bootstrap, confidence=config.eval.confidence,
                   ece_bins=config.eval.ece_bins, seed=0)

    def metrics_of(keep: np.ndarray) -> dict:
        return summarise(index.labels[keep], probs[keep], groups=np.array(groups)[keep], **options)

    devices = np.array([s.device for s in index])
    block = {"source": source, "n": len(index), "data_root": str(index.root),
             "data_manifest_sha256": index.manifest_sha256(),
             "metrics": metrics_of(np.ones(len(index), bool)),
             "by_device": {str(d): metrics_of(devices == d) for d in np.unique(devices[devices != ""])}}
    with atomic_write(run_dir / f"{EXTERNAL_PREFIX}{source}.json", encoding="utf-8") as handle:
        json.dump(block, handle, indent=2)
    _refresh_report(run_dir)
    return block


def _refresh_report(run_dir: Path) -> None:
    """Put the run's external results into its metrics.json and report.md without re-evaluating it."""
    from training.evaluate import write_run_report

    results = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    results["external"] = external_results(run_dir)
    with atomic_write(run_dir / "metrics.json", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
    write_run_report(run_dir, load_config(run_dir / "config.toml"), results)
