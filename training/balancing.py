"""Class balancing for training: minority oversampling, balanced loss weights and balanced draw weights."""

from __future__ import annotations

import numpy as np

from busi_viewer.core.labels import CLASS_NAMES


def oversample_minority(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The paper's targeted balancing: repeat samples of every smaller class until all classes have as many
    items as the largest. Returns (item -> sample index (M,) int64, is_copy (M,) bool); originals come first,
    each sample of a class gets the same number of copies give or take one (a seeded choice of which)."""
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels) if labels.size else np.zeros(0, np.int64)
    target = int(counts.max()) if counts.size else 0
    copies = []
    for cls, count in enumerate(counts):
        if count == 0 or count == target:
            continue
        members = np.flatnonzero(labels == cls)
        extra = target - int(count)
        full, rest = divmod(extra, int(count))
        copies.append(np.tile(members, full))
        copies.append(np.sort(rng.permutation(members)[:rest]))
    extra_items = np.concatenate(copies).astype(np.int64) if copies else np.empty(0, np.int64)
    items = np.concatenate([np.arange(labels.size, dtype=np.int64), extra_items])
    is_copy = np.r_[np.zeros(labels.size, bool), np.ones(extra_items.size, bool)]
    return items, is_copy


def minority_classes(labels: np.ndarray) -> np.ndarray:
    """Class indices present with fewer samples than the largest class."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    return np.flatnonzero((counts > 0) & (counts < counts.max())) if counts.size else np.empty(0, np.int64)


def class_weights(labels: np.ndarray, num_classes: int = len(CLASS_NAMES)) -> np.ndarray:
    """"Balanced" loss weights (K,) float32: n / (K_present * n_c); 0 for a class without samples."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes, dtype=np.float64)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)


def balanced_sample_weights(labels: np.ndarray) -> np.ndarray:
    """Per-item draw weights (N,) float64 = 1 / (its class's count): every class is drawn equally often
    (for a weighted sampler, e.g. the engine's ``FitSettings.sample_weights``)."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels)
    return 1.0 / counts[labels].astype(np.float64)
