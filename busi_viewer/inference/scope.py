"""The scope guard: the model's own answer to "is this the kind of image I was trained on?".

A classifier gives every input a class, a cardiac echo or a photograph included. The guard measures how far an
image's pooled features (the (C,) vector the linear head reads) lie from those of the training images: a
Mahalanobis distance in the top ``k`` principal directions of the training features, plus the energy left
outside them, each divided by its mean over the training images, so that a typical training image scores
about 1. Its threshold is chosen on validation images of every training source (at most 5 % of each flagged).

Fitted by ``busi-train fit-scope`` and stored in the bundle as ``scope_guard.npz`` (plain arrays, read without
pickle), whose SHA-256 the card records. NumPy only: both runtimes use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from busi_viewer.core.atomic import atomic_write
from busi_viewer.core.errors import BundleError
from busi_viewer.core.hashing import sha256_file
from busi_viewer.inference.bundle_files import SCOPE_FILENAME
from busi_viewer.inference.model_card import ModelCard

DEFAULT_COMPONENTS = 64
MAX_FLAGGED_IN_SCOPE = 0.05  # share of each training source's validation images the threshold may flag
_ARRAYS = ("mean", "components", "scales", "residual_scale", "threshold")


@dataclass(frozen=True)
class ScopeGuard:
    """``mean`` (C,), ``components`` (C, k) orthonormal columns, ``scales`` (k,) the training features' standard
    deviation along them, ``residual_scale`` the training features' mean squared distance from that subspace,
    ``threshold``: a score above it is out of scope (inf until :meth:`with_threshold`)."""

    mean: np.ndarray
    components: np.ndarray
    scales: np.ndarray
    residual_scale: float
    threshold: float = math.inf

    def scores(self, pooled: np.ndarray) -> np.ndarray:
        """(B, C) pooled features -> (B,) float64 scores >= 0; about 1 for a typical training image."""
        centred = np.asarray(pooled, dtype=np.float64) - self.mean
        projected = centred @ self.components
        within = np.mean((projected / self.scales) ** 2, axis=1)
        outside = np.maximum(np.sum(centred ** 2, axis=1) - np.sum(projected ** 2, axis=1), 0.0)
        return 0.5 * (within + outside / self.residual_scale)

    def in_scope(self, score: float) -> bool:
        return bool(score <= self.threshold)

    def with_threshold(self, validation_scores: Mapping[str, np.ndarray],
                       max_flagged: float = MAX_FLAGGED_IN_SCOPE) -> ScopeGuard:
        """This guard with the smallest threshold that flags at most ``max_flagged`` of each source's
        validation images (scores by source name)."""
        arrays = [np.asarray(s, np.float64) for s in validation_scores.values()]
        if any(a.ndim != 1 for a in arrays):
            raise ValueError("validation scores must be one (N,) array per source")
        limits = [_quantile_flagging_at_most(a, max_flagged) for a in arrays if a.size]
        if not limits:
            raise ValueError("the scope threshold needs validation scores of at least one source")
        return ScopeGuard(self.mean, self.components, self.scales, self.residual_scale, float(max(limits)))

    def save(self, path: Path) -> str:
        """Write the guard as an .npz of plain arrays (atomically); returns its SHA-256."""
        with atomic_write(path, "wb") as handle:
            np.savez(handle, mean=self.mean.astype(np.float32), components=self.components.astype(np.float32),
                     scales=self.scales.astype(np.float32), residual_scale=np.float64(self.residual_scale),
                     threshold=np.float64(self.threshold))
        return sha256_file(path)


def fit_scope_guard(pooled: np.ndarray, components: int = DEFAULT_COMPONENTS) -> ScopeGuard:
    """A guard (threshold inf) from (N, C) pooled features of the training images, N >= 2: ``components``
    principal directions, fewer when N - 1 or C is smaller."""
    features = np.asarray(pooled, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2 or features.shape[1] < 1 or components < 1:
        raise ValueError(f"a scope guard needs (N, C) features of at least two images and a positive number of "
                         f"components, got shape {features.shape} and {components}")
    components = min(components, features.shape[0] - 1, features.shape[1])
    mean = features.mean(axis=0)
    centred = features - mean
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    basis = vt[:components].T  # (C, k)
    scales = singular[:components] / math.sqrt(features.shape[0] - 1)
    projected = centred @ basis
    outside = np.sum(centred ** 2, axis=1) - np.sum(projected ** 2, axis=1)
    floor = 1e-12 * max(float(np.sum(centred ** 2)) / features.shape[0], 1e-30)  # a degenerate set keeps scores finite
    return ScopeGuard(mean, basis, np.maximum(scales, math.sqrt(floor)), max(float(outside.mean()), floor))


def read_scope_guard(folder: Path, expected_sha256: str) -> ScopeGuard:
    """The guard at ``folder``/scope_guard.npz, once its SHA-256 matches the card's; BundleError otherwise."""
    path = Path(folder) / SCOPE_FILENAME
    if not path.is_file():
        raise BundleError(f"{path.parent.name}: the model card names a scope guard but {SCOPE_FILENAME} is missing")
    if sha256_file(path) != expected_sha256.strip().lower():
        raise BundleError(f"{path.parent.name}: {SCOPE_FILENAME} does not match its model card; the file was "
                          "modified or corrupted after the bundle was written")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: np.asarray(data[name]) for name in _ARRAYS}
    except (OSError, KeyError, ValueError) as exc:
        raise BundleError(f"{path.parent.name}: {SCOPE_FILENAME} is not a valid scope guard ({exc})") from exc
    guard = ScopeGuard(arrays["mean"].astype(np.float64), arrays["components"].astype(np.float64),
                       arrays["scales"].astype(np.float64), float(arrays["residual_scale"]),
                       float(arrays["threshold"]))
    c, k = guard.components.shape if guard.components.ndim == 2 else (0, 0)
    if guard.mean.shape != (c,) or guard.scales.shape != (k,) or not k or not guard.residual_scale > 0 \
            or not np.all(guard.scales > 0):
        raise BundleError(f"{path.parent.name}: {SCOPE_FILENAME} holds inconsistent arrays")
    return guard


def bundle_scope_guard(folder: Path, card: ModelCard) -> ScopeGuard | None:
    """The verified scope guard of the bundle at ``folder``, or None when its card names none."""
    expected = str(card.scope_guard.get("file_sha256", "")) if card.scope_guard else ""
    if not expected:
        return None
    return read_scope_guard(folder, expected)


def _quantile_flagging_at_most(scores: np.ndarray, share: float) -> float:
    """The smallest observed score t with #(scores > t) <= floor(share * n)."""
    ordered = np.sort(scores)
    allowed = math.floor(share * ordered.size)
    return float(ordered[ordered.size - 1 - allowed])
