"""The decision rule shared by the app and by training's evaluation: one operating point, one definition."""

from __future__ import annotations

import numpy as np


def apply_operating_point(probabilities: np.ndarray, positive_index: int, threshold: float | None) -> np.ndarray:
    """Class decisions for (N, K) or (K,) probabilities -> (N,) or () int64.

    ``positive_index`` (e.g. malignant) wins whenever its probability >= ``threshold``; otherwise the most
    probable of the other classes. With ``threshold`` None: the plain arg-max.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    if threshold is None:
        return probs.argmax(axis=-1).astype(np.int64)
    others = probs.copy()
    others[..., positive_index] = -np.inf
    return np.where(probs[..., positive_index] >= threshold, positive_index, others.argmax(axis=-1)).astype(np.int64)
