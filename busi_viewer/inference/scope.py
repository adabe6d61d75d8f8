"""The scope check: the model's own answer to "is this the kind of image I was trained on?".

A classifier gives every input a class, a cardiac echo or a photograph included. The check has two guards, each
a distance from the training images fitted on them (:class:`ScopeGuard`: a Mahalanobis distance in the top ``k``
principal directions plus the energy left outside them, each relative to its mean on the training images):

* on the model's pooled features (the (C,) vector its linear head reads), and
* on six statistics of the image itself (:func:`image_statistics`: colourfulness, edge strength, speckle).

The fine-tuned features alone proved unreliable: a model retrained on another split placed mammograms and CT
inside its training distribution. Each guard's threshold flags at most 2.5 % of every training source's
validation images, so the two together flag at most 5 %. Fitted that tightly, the check of a model trained on one
hospital flagged half of another hospital's breast ultrasound; so both thresholds are then widened by a margin
(:meth:`ScopeCheck.widened`) chosen leave-one-source-out: the factor at which a check fitted on one training source
flags at most 10 % of the other. The check's score is the larger of the two distances, each divided by its
threshold: above 1 is out of scope.

Fitted by ``busi-train fit-scope`` and stored in the bundle as ``scope_guard.npz`` (plain arrays, read without
pickle), whose SHA-256 the card records. NumPy and OpenCV only: both runtimes use it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from busi_viewer.core.atomic import atomic_write
from busi_viewer.core.errors import BundleError
from busi_viewer.core.hashing import sha256_file
from busi_viewer.inference.bundle_files import SCOPE_FILENAME
from busi_viewer.inference.model_card import ModelCard

DEFAULT_COMPONENTS = 64
MAX_FLAGGED_IN_SCOPE = 0.05  # share of each training source's validation images the check may flag
PARTS = ("features", "image")  # the two guards of a ScopeCheck; each may flag half of MAX_FLAGGED_IN_SCOPE
_ARRAYS = ("mean", "components", "scales", "residual_scale", "threshold")
_STATS_SIZE = 128  # image statistics are taken on a 128 x 128 grey copy
_SPECKLE_BLOCK = 8


def image_statistics(rgb: np.ndarray) -> np.ndarray:
    """(6,) float64 of an (H, W, 3) uint8 image, on a 128 x 128 area-resized copy: colourfulness (mean |R - G| and
    mean |(R + G) / 2 - B|, / 255), edge strength (mean and 90th percentile of the Sobel gradient magnitude / 255)
    and speckle (median and 90th percentile of std / mean over 8 x 8 blocks whose mean is above 20)."""
    small = cv2.resize(np.asarray(rgb), (_STATS_SIZE, _STATS_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
    red, green, blue = small[..., 0], small[..., 1], small[..., 2]
    grey = small.mean(axis=2)
    gradient = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)) / 255.0
    n = _STATS_SIZE // _SPECKLE_BLOCK
    blocks = grey.reshape(n, _SPECKLE_BLOCK, n, _SPECKLE_BLOCK).transpose(0, 2, 1, 3).reshape(n * n, -1)
    means, stds = blocks.mean(axis=1), blocks.std(axis=1)
    lit = means > 20  # a dark block's ratio is noise
    ratio = stds[lit] / means[lit] if lit.any() else np.zeros(1)
    return np.array([np.mean(np.abs(red - green)) / 255.0, np.mean(np.abs(0.5 * (red + green) - blue)) / 255.0,
                     gradient.mean(), np.percentile(gradient, 90), np.median(ratio), np.percentile(ratio, 90)])


@dataclass(frozen=True)
class ScopeGuard:
    """``mean`` (C,), ``components`` (C, k) orthonormal columns, ``scales`` (k,) the training features' standard
    deviation along them, ``residual_scale`` the training features' mean squared distance from that subspace,
    ``threshold``: a score above it is out of scope (inf until :meth:`with_threshold`). ``residual_scale`` is
    inf when the components span every direction (nothing lies outside them)."""

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
        return dataclasses.replace(self, threshold=float(max(limits)))

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The guard as plain float64 arrays, names prefixed (what :meth:`ScopeCheck.save` writes).

        float64, not float32: when the training features barely leave the components' span (grey images have no
        colour), ``residual_scale`` is tiny and float32 rounding of the components alone would score a training
        image thousands of times out of scope."""
        return {f"{prefix}_mean": self.mean.astype(np.float64),
                f"{prefix}_components": self.components.astype(np.float64),
                f"{prefix}_scales": self.scales.astype(np.float64),
                f"{prefix}_residual_scale": np.float64(self.residual_scale),
                f"{prefix}_threshold": np.float64(self.threshold)}


@dataclass(frozen=True)
class ScopeCheck:
    """The two guards (see the module docstring); ``scores`` of images are their larger relative distance."""

    features: ScopeGuard
    image: ScopeGuard

    @property
    def threshold(self) -> float:
        return 1.0

    def scores(self, pooled: np.ndarray, statistics: np.ndarray) -> np.ndarray:
        """(B, C) pooled features and (B, 6) :func:`image_statistics` -> (B,) float64 >= 0; above 1: out of scope."""
        return np.maximum(self.features.scores(pooled) / self.features.threshold,
                          self.image.scores(statistics) / self.image.threshold)

    def in_scope(self, score: float) -> bool:
        return bool(score <= self.threshold)

    def widened(self, margin: float) -> ScopeCheck:
        """This check with both guards' thresholds multiplied by ``margin`` >= 1: every score divided by it."""
        if not margin >= 1.0:
            raise ValueError(f"a scope margin widens the check: it must be >= 1, got {margin}")
        return ScopeCheck(*(dataclasses.replace(guard, threshold=guard.threshold * margin)
                            for guard in (self.features, self.image)))

    def save(self, path: Path) -> str:
        """Write the check as an .npz of plain arrays (atomically); returns its SHA-256."""
        with atomic_write(path, "wb") as handle:
            np.savez(handle, **self.features.arrays("features"), **self.image.arrays("image"))
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
    # A set that (almost) never leaves the components' span (grey images have no colour) keeps scores finite, and
    # its residual term above rounding noise (~1e-16 of the energy): a training image then scores as fitted.
    floor = 1e-9 * max(float(np.sum(centred ** 2)) / features.shape[0], 1e-30)
    # With every direction kept, what is "outside" is rounding error: infinite scale drops that term.
    residual_scale = math.inf if components == features.shape[1] else max(float(outside.mean()), floor)
    return ScopeGuard(mean, basis, np.maximum(scales, math.sqrt(floor)), residual_scale)


def read_scope_guard(folder: Path, expected_sha256: str) -> ScopeCheck:
    """The check at ``folder``/scope_guard.npz, once its SHA-256 matches the card's; BundleError otherwise."""
    path = Path(folder) / SCOPE_FILENAME
    if not path.is_file():
        raise BundleError(f"{path.parent.name}: the model card names a scope guard but {SCOPE_FILENAME} is missing")
    if sha256_file(path) != expected_sha256.strip().lower():
        raise BundleError(f"{path.parent.name}: {SCOPE_FILENAME} does not match its model card; the file was "
                          "modified or corrupted after the bundle was written")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {f"{part}_{name}": np.asarray(data[f"{part}_{name}"]) for part in PARTS for name in _ARRAYS}
    except (OSError, KeyError, ValueError) as exc:
        raise BundleError(f"{path.parent.name}: {SCOPE_FILENAME} is not a valid scope guard ({exc})") from exc
    guards = [_guard_from(arrays, part, path.parent.name) for part in PARTS]
    return ScopeCheck(*guards)


def _guard_from(arrays: dict[str, np.ndarray], part: str, bundle: str) -> ScopeGuard:
    guard = ScopeGuard(arrays[f"{part}_mean"].astype(np.float64), arrays[f"{part}_components"].astype(np.float64),
                       arrays[f"{part}_scales"].astype(np.float64), float(arrays[f"{part}_residual_scale"]),
                       float(arrays[f"{part}_threshold"]))
    c, k = guard.components.shape if guard.components.ndim == 2 else (0, 0)
    if guard.mean.shape != (c,) or guard.scales.shape != (k,) or not k or not guard.residual_scale > 0 \
            or not np.all(guard.scales > 0) or not guard.threshold > 0:
        raise BundleError(f"{bundle}: {SCOPE_FILENAME} holds inconsistent arrays")
    return guard


def bundle_scope_guard(folder: Path, card: ModelCard) -> ScopeCheck | None:
    """The verified scope check of the bundle at ``folder``, or None when its card names none."""
    expected = str(card.scope_guard.get("file_sha256", "")) if card.scope_guard else ""
    if not expected:
        return None
    return read_scope_guard(folder, expected)


def margin_flagging_at_most(scores: np.ndarray, share: float) -> float:
    """The smallest margin >= 1 (see :meth:`ScopeCheck.widened`) at which at most ``share`` of (N,) check scores
    would be out of scope: how far the check must widen to accept a set of images it should accept."""
    scores = np.asarray(scores, np.float64)
    return max(1.0, _quantile_flagging_at_most(scores, share)) if scores.size else 1.0


def _quantile_flagging_at_most(scores: np.ndarray, share: float) -> float:
    """The smallest observed score t with #(scores > t) <= floor(share * n)."""
    ordered = np.sort(scores)
    allowed = math.floor(share * ordered.size)
    return float(ordered[ordered.size - 1 - allowed])
