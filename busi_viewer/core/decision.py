"""The decision rule shared by the app and by training's evaluation: one operating point, one definition."""

from __future__ import annotations

from collections.abc import Sequence

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


def override_sentence(class_names: Sequence[str], probabilities: Sequence[float], predicted: str,
                      operating_point: tuple[str, float] | None) -> str:
    """"" when ``predicted`` is the most probable class; otherwise one sentence saying that the operating point
    (class, threshold) overrode the most probable class, with the numbers, for the screen and the reports."""
    probs = [float(p) for p in probabilities]
    top = class_names[int(np.argmax(probs))]
    if predicted == top or operating_point is None:
        return ""
    name, threshold = operating_point
    p = probs[list(class_names).index(name)]
    relation = "≥" if predicted == name else "<"
    return (f"{predicted.capitalize()} although {top} is more probable ({max(probs):.2f}): the operating rule decides, "
            f"p({name}) = {p:.2f} {relation} {threshold:.2f}, the threshold chosen on validation.")
