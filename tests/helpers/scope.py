"""Model bundles with a scope check for tests: fitted on phantom images through the model itself."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import torch

from busi_viewer.core.phantoms import make_phantom
from busi_viewer.inference.bundle import load_bundle, update_bundle
from busi_viewer.inference.bundle_files import SCOPE_FILENAME
from busi_viewer.inference.preprocessing import preprocess
from busi_viewer.inference.scope import ScopeCheck, ScopeGuard, fit_scope_guard, image_statistics


def phantom_rgb(label: str, seed: int, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 synthetic B-mode image."""
    return np.repeat(make_phantom(seed, label, size)[0][..., None], 3, axis=2)


def pooled_by_hand(model, card, images: list[np.ndarray]) -> np.ndarray:
    """(N, C) float32: the mean of the final feature map, straight from the torch model."""
    batch = torch.from_numpy(np.stack([preprocess(rgb, card.preprocess)[0] for rgb in images]))
    with torch.no_grad():
        return model.forward_features(batch).mean(dim=(2, 3)).numpy()


def guard_score_by_hand(guard: ScopeGuard, values: np.ndarray) -> np.ndarray:
    """The guard's distance written out: half the mean squared whitened projection plus half the relative
    residual energy."""
    centred = np.asarray(values, np.float64) - guard.mean
    projected = centred @ guard.components
    outside = (centred ** 2).sum(1) - (projected ** 2).sum(1)
    return 0.5 * (((projected / guard.scales) ** 2).mean(1) + outside / guard.residual_scale)


def guarded_copy(bundle: Path, folder: Path, flag_all: bool | None = None) -> tuple[Path, ScopeCheck]:
    """A copy of ``bundle`` in ``folder`` with a check fitted on 12 phantom images (4 feature directions); its
    thresholds flag at most 2.5 % of the first six each, or every image (``flag_all``) or none (False)."""
    target = folder / f"guarded-{bundle.name}"
    shutil.copytree(bundle, target)
    loaded = load_bundle(target)
    images = [phantom_rgb("benign", k, (96, 112)) for k in range(12)]
    parts = []
    for values in (pooled_by_hand(loaded.model, loaded.card, images), np.stack([image_statistics(i) for i in images])):
        guard = fit_scope_guard(values, components=4)
        guard = guard.with_threshold({"us": guard.scores(values[:6])}, 0.025)
        if flag_all is not None:
            guard = dataclasses.replace(guard, threshold=1e-12 if flag_all else 1e12)
        parts.append(guard)
    check = ScopeCheck(*parts)

    def change(staged, card):
        return dataclasses.replace(card, scope_guard={"file_sha256": check.save(staged / SCOPE_FILENAME),
                                                      "threshold": check.threshold})

    update_bundle(target, change)
    return target, check
