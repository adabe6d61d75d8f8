"""``busi-train fit-scope``: give a model bundle its scope guard, fitted on its own training images.

The check (:mod:`busi_viewer.inference.scope`) is fitted on the pooled features and image statistics of the
bundle's training images and its thresholds set on its validation images, source by source (at most 5 % of each
flagged), both read from
the bundle's own split manifest (and checked against its SHA-256s). Its flag rate on every test split is
recorded too: the test images of a source the model trained on, and per scanner where the data set says.
``busi-train scope-eval`` adds the flag rates on folders of images that are not the model's kind, and on another
source's images the margin that would flag at most 10 % of them: run on a leave-one-source-out bundle, that is how
``eval.scope_margin`` of a recipe is chosen (the larger of the two directions).

Works on any bundle with a split manifest, so the shipped bundles are refitted from their training data, and
``busi-train export`` fits the guard of every new bundle.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from busi_viewer.core.errors import BundleError, BusiViewerError
from busi_viewer.core.loader import load_image
from busi_viewer.inference.bundle import load_bundle, update_bundle
from busi_viewer.inference.bundle_files import SCOPE_FILENAME
from busi_viewer.inference.model_card import ModelCard
from busi_viewer.inference.predictor import Predictor
from busi_viewer.inference.scope import (
    DEFAULT_COMPONENTS,
    MAX_FLAGGED_IN_SCOPE,
    PARTS,
    ScopeCheck,
    bundle_scope_guard,
    fit_scope_guard,
    image_statistics,
    margin_flagging_at_most,
)
from training.config import load_config
from training.data import BusiIndex, index_dataset, sample_image
from training.splits import read_split_manifest

BATCH = 16
UNSEEN_SOURCE_MAX_FLAGGED = 0.10  # the margin asked of a source the check never saw (issue #16's goal)


@dataclasses.dataclass(frozen=True)
class ScopeFit:
    """The fitted check, and what the card says of it (``summary``: JSON-ready)."""

    check: ScopeCheck
    summary: dict


def bundle_index(bundle_dir: Path, data: Path | None = None, busbra: Path | None = None
                 ) -> tuple[BusiIndex, dict[str, str]]:
    """The index of the data a bundle was trained on (from its config.toml; ``data``: the folder of its first
    source, ``busbra``: BUS-BRA's; None: the data sets' environment variables), and each manifest file's split.
    Raises BundleError when the manifest names a file the data lacks or whose content differs (SHA-256)."""
    config = load_config(bundle_dir / "config.toml")
    dataset = config.data.dataset
    first = dataset.split("+")[0]
    roots = {first: data, "bus-bra": busbra if busbra is not None or first != "bus-bra" else data}
    index = index_dataset(dataset, roots[first], config.data.task, config.data.lesion_crops, roots=roots)
    rows = read_split_manifest(bundle_dir / "split_manifest.csv")
    position = {relpath: i for i, relpath in enumerate(index.relpaths)}
    missing = [r.file for r in rows if r.file not in position]
    if missing:
        raise BundleError(f"{bundle_dir.name}: its split manifest names {len(missing)} file(s) the data lacks, "
                          f"e.g. {missing[0]!r}")
    hashes = index.sha256s()
    changed = [r.file for r in rows if hashes[position[r.file]] != r.sha256]
    if changed:
        raise BundleError(f"{bundle_dir.name}: {len(changed)} file(s) differ from those it was trained on, "
                          f"e.g. {changed[0]!r}")
    return index, {r.file: r.split for r in rows}


def fit_bundle_scope(bundle_dir: Path, data: Path | None = None, busbra: Path | None = None,
                     components: int = DEFAULT_COMPONENTS, progress: Callable[[int], None] | None = None,
                     margin: float | None = None) -> ScopeFit:
    """Fit and write the scope check of the bundle at ``bundle_dir`` (its card updated; atomic); data folders as
    :func:`bundle_index` takes them. ``margin`` (>= 1) widens both thresholds after calibration; None: the
    bundle's config.toml ``eval.scope_margin``."""
    bundle_dir = Path(bundle_dir)
    if margin is None:
        margin = load_config(bundle_dir / "config.toml").eval.scope_margin
    index, split_of = bundle_index(bundle_dir, data, busbra)
    bundle = load_bundle(bundle_dir)
    predictor = Predictor(bundle.model, bundle.card)
    chosen = [i for i, relpath in enumerate(index.relpaths) if relpath in split_of]
    features, statistics = describe(predictor, [index.samples[i] for i in chosen], progress)
    splits = np.array([split_of[index.relpaths[i]] for i in chosen])
    sources = index.sources[chosen]
    part_share = MAX_FLAGGED_IN_SCOPE / len(PARTS)
    guards = []
    for values in (features, statistics):
        guard = fit_scope_guard(values[splits == "train"], components)
        scores = guard.scores(values)
        validation = {source: scores[(splits == "val") & (sources == source)] for source in dict.fromkeys(sources)}
        guards.append(guard.with_threshold(validation, part_share))
    check = ScopeCheck(*guards).widened(margin)
    scores = check.scores(features, statistics)
    devices = np.array([index.samples[i].device for i in chosen])
    summary = {
        "method": (f"two guards, each a Mahalanobis distance in the top principal directions plus the energy outside "
                   f"them, fitted on the training images: on the model's pooled features "
                   f"({check.features.components.shape[1]} directions) and on six image statistics (colourfulness, "
                   f"edge strength, speckle); each flags at most {part_share:.1%} of every source's validation "
                   f"images, then both thresholds are widened x{margin:.2f} (the margin); the score is the larger "
                   f"distance over its threshold, above 1 is out of scope"),
        "threshold": check.threshold,
        "margin": margin,
        "fitted_on": f"the bundle's {int(np.sum(splits == 'train'))} training images",
        "calibrated_on": f"its validation images of each source: at most {MAX_FLAGGED_IN_SCOPE:.0%} of each flagged "
                         f"before the margin",
        "flagged": {
            "validation": _rates(scores, check.threshold, splits == "val", sources),
            "test": _rates(scores, check.threshold, splits == "test", sources),
            "test_by_device": _rates(scores, check.threshold, (splits == "test") & (devices != ""), devices),
        },
    }
    write_scope(bundle_dir, check, summary)
    return ScopeFit(check, summary)


def describe(predictor: Predictor, samples: Sequence, progress: Callable[[int], None] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) float32 pooled features and (N, 6) image statistics of ``samples``, each decoded as training and the
    app decode it."""
    features, statistics = [], []
    for start in range(0, len(samples), BATCH):
        rgbs = [sample_image(s) for s in samples[start:start + BATCH]]
        features.append(predictor.pooled_features(rgbs))
        statistics.extend(image_statistics(rgb) for rgb in rgbs)
        if progress is not None:
            progress(len(rgbs))
    return np.concatenate(features), np.stack(statistics)


def score_folders(bundle_dir: Path, sets: Mapping[str, Sequence[Path]]) -> dict[str, dict]:
    """Flag rate of the bundle's guard on each named set of image files (decoded by the app's loader), with the
    bundle's own predictor; files that do not load are counted apart. Written into the card."""
    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)
    guard = bundle_scope_guard(bundle_dir, bundle.card)
    if guard is None:
        raise BundleError(f"{bundle_dir.name} has no scope guard yet: run busi-train fit-scope on it first")
    predictor = Predictor(bundle.model, bundle.card)
    results = {}
    for name, files in sets.items():
        scores, unreadable = [], 0
        for start in range(0, len(files), BATCH):
            rgbs = []
            for path in files[start:start + BATCH]:
                try:
                    rgbs.append(load_image(path).rgb)
                except BusiViewerError:  # an unreadable file is counted, not fatal
                    unreadable += 1
            if rgbs:
                statistics = np.stack([image_statistics(rgb) for rgb in rgbs])
                scores.extend(guard.scores(predictor.pooled_features(rgbs), statistics).tolist())
        flagged = sum(not guard.in_scope(s) for s in scores)
        results[name] = {"n": len(scores), "flagged": int(flagged),
                         "rate": flagged / len(scores) if scores else math.nan, "unreadable": unreadable,
                         # for a set the check should accept (another hospital's breast ultrasound): the margin
                         # that would flag at most 10 % of it
                         "margin_to_flag_at_most_10pct": margin_flagging_at_most(np.asarray(scores),
                                                                                 UNSEEN_SOURCE_MAX_FLAGGED)}
    update_bundle(bundle_dir, lambda _staged, card: dataclasses.replace(
        card, scope_guard={**card.scope_guard,
                           "flagged": {**card.scope_guard.get("flagged", {}), "out_of_scope_sets": results}}))
    return results


def write_scope(bundle_dir: Path, guard: ScopeCheck, summary: dict) -> ModelCard:
    """Write ``scope_guard.npz`` and the card naming it into the bundle, atomically."""
    def change(staged: Path, card: ModelCard) -> ModelCard:
        sha256 = guard.save(staged / SCOPE_FILENAME)
        return dataclasses.replace(card, scope_guard={"file_sha256": sha256, **summary})

    return update_bundle(bundle_dir, change)


def _rates(scores: np.ndarray, threshold: float, chosen: np.ndarray, names: np.ndarray) -> dict[str, dict]:
    """{name: {"n", "flagged", "rate"}} over the chosen entries, grouped by ``names``."""
    out = {}
    for name in dict.fromkeys(names[chosen].tolist()):
        member = chosen & (names == name)
        flagged = int(np.sum(scores[member] > threshold))
        out[name] = {"n": int(member.sum()), "flagged": flagged, "rate": flagged / int(member.sum())}
    return out
