"""``busi-train evaluate RUN --set eval.KEY=VALUE --out DIR``: a trained run evaluated under another inference
setting, into a new folder.

The weights stay; only how they are run changes, e.g. ``eval.tta_hflip=false``: one pass instead of the mean
with the mirror image, which is what a faster bundle would ship. The new folder gets the run's weights, split
manifest and fit facts, the changed config, validation and test logits predicted again under it (same images,
labels and groups), and a note of where it came from. Its temperature and threshold are then fitted afresh on
the new validation logits by ``busi-train evaluate``: nothing of the first operating point is carried over, and
the run's own folder is never rewritten.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np

from busi_viewer.core.atomic import atomic_write
from busi_viewer.core.errors import BusiViewerError
from busi_viewer.inference.device import configure_threads, select_device
from training.config import apply_overrides, load_config, parse_overrides, to_toml
from training.data import BusiDataset, load_or_build_cache
from training.engine import BEST_WEIGHTS
from training.pipeline import Predictions, index_for, predict_logits

# what a trained run's folder holds apart from its predictions and evaluation (those are made again)
_CARRIED = (BEST_WEIGHTS, "fit.json", "split_manifest.csv", "epochs.csv")
_SPLITS = ("val", "test", "test_overlaid")
DERIVED_FROM = "derived_from.json"


class RepredictError(BusiViewerError, ValueError):
    """The run cannot be re-predicted as asked (a non-``eval`` setting, an occupied folder, images gone)."""


def repredict_run(run_dir: Path, out_dir: Path, overrides: list[str], *, progress: bool = True) -> Path:
    """Copy the trained run at ``run_dir`` to ``out_dir`` with ``overrides`` (``eval.KEY=VALUE`` only) applied
    and its ``predictions_<split>.npz`` predicted again under them; returns ``out_dir``, ready for
    :func:`training.evaluate.run_evaluate`.

    Raises RepredictError for a setting outside ``eval`` (the weights were trained under the others), for an
    ``out_dir`` that exists and is not empty, and for a predicted image the run's data folders no longer hold.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    outside = [f"{section}.{key}" for section, key in parse_overrides(overrides) if section != "eval"]
    if not overrides or outside:
        raise RepredictError("a trained run is re-evaluated only under eval.* settings "
                             f"(the weights were trained under the others): {', '.join(outside) or 'none given'}")
    if out_dir.resolve() == run_dir.resolve() or (out_dir.exists() and any(out_dir.iterdir())):
        raise RepredictError(f"{out_dir} is not empty: give a new folder (the run's own is never rewritten)")
    config = apply_overrides(load_config(run_dir / "config.toml"), overrides)
    # the description travels into reports and model cards: it must not still describe the old setting
    config = dataclasses.replace(config, description=f"{config.description}; re-evaluated under "
                                                     + ", ".join(overrides))

    # Everything is made in a staging folder and moved into place at the end: a failure leaves no half-made run.
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _write_run(run_dir, staging, config, overrides, progress)
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def derived_from(run_dir: Path) -> dict | None:
    """``{"run", "overrides"}`` of a folder made by :func:`repredict_run`; None for a run trained in place."""
    path = Path(run_dir) / DERIVED_FROM
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _write_run(run_dir: Path, out_dir: Path, config, overrides: list[str], progress: bool) -> None:
    """The copied files, the new config and the re-predicted logits of :func:`repredict_run`, into ``out_dir``."""
    from training.evaluate import load_run_model  # evaluate imports this module (derived_from)

    for name in _CARRIED:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, out_dir / name)
    (out_dir / "config.toml").write_text(to_toml(config), encoding="utf-8")
    with atomic_write(out_dir / DERIVED_FROM, encoding="utf-8") as handle:
        # the run's name, not its path: reports travel with bundles and name no machine's folders
        json.dump({"run": run_dir.resolve().name, "overrides": list(overrides)}, handle, indent=2)

    configure_threads(config.train.num_threads or None)
    device = select_device(None if config.train.device == "auto" else config.train.device)
    fit_info = json.loads((run_dir / "fit.json").read_text(encoding="utf-8"))
    index = index_for(config, fit_info.get("data_roots"))
    spec = config.preprocess_spec()
    cache = load_or_build_cache(index, spec, config.data.cache_dir or None, threads=config.data.decode_threads,
                                progress=progress)
    position = {file: i for i, file in enumerate(index.relpaths)}
    model = load_run_model(out_dir, config, device)
    for split in _SPLITS:
        path = run_dir / f"predictions_{split}.npz"
        if not path.is_file():
            continue
        before = Predictions.load(path)
        missing = [str(f) for f in before.files if str(f) not in position]
        if missing:
            raise RepredictError(f"{len(missing)} {split} images of {run_dir.name} are not in its data folders "
                                 f"(first: {missing[0]})")
        positions = np.array([position[str(f)] for f in before.files], dtype=np.int64)
        overlay = config.overlay.strength if split == "test_overlaid" else 0.0
        dataset = BusiDataset(cache, positions, spec, overlay_strength=overlay)
        logits = predict_logits(model, dataset, device, tta_hflip=config.eval.tta_hflip)
        Predictions(before.files, before.labels, logits, before.groups).save(out_dir / path.name)
