"""Model bundles with a scope guard for tests: fitted on phantom images through the model itself."""

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
from busi_viewer.inference.scope import ScopeGuard, fit_scope_guard


def phantom_rgb(label: str, seed: int, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 synthetic B-mode image."""
    return np.repeat(make_phantom(seed, label, size)[0][..., None], 3, axis=2)


def pooled_by_hand(model, card, images: list[np.ndarray]) -> np.ndarray:
    """(N, C) float32: the mean of the final feature map, straight from the torch model."""
    batch = torch.from_numpy(np.stack([preprocess(rgb, card.preprocess)[0] for rgb in images]))
    with torch.no_grad():
        return model.forward_features(batch).mean(dim=(2, 3)).numpy()


def guarded_copy(bundle: Path, folder: Path, threshold: float | None = None) -> tuple[Path, ScopeGuard]:
    """A copy of ``bundle`` in ``folder`` with a 4-component guard fitted on 12 phantom images; its threshold
    flags at most 5 % of the first six, or is ``threshold`` when given."""
    target = folder / f"guarded-{bundle.name}"
    shutil.copytree(bundle, target)
    loaded = load_bundle(target)
    pooled = pooled_by_hand(loaded.model, loaded.card, [phantom_rgb("benign", k, (96, 112)) for k in range(12)])
    guard = fit_scope_guard(pooled, components=4)
    guard = guard.with_threshold({"us": guard.scores(pooled[:6])})
    if threshold is not None:
        guard = dataclasses.replace(guard, threshold=threshold)

    def change(staged, card):
        return dataclasses.replace(card, scope_guard={"file_sha256": guard.save(staged / SCOPE_FILENAME),
                                                      "threshold": guard.threshold})

    update_bundle(target, change)
    return target, guard
