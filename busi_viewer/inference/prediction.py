"""What a prediction is, and everything around the forward pass that does not depend on the runtime.

The torch :class:`~busi_viewer.inference.predictor.Predictor` (source install, training, GPU) and the ONNX
Runtime :class:`~busi_viewer.inference.onnx_predictor.OnnxPredictor` (the frozen app) share this: the one
preprocessing function, temperature calibration, the card's operating point, and mapping the explanation
back onto the original image. No torch here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from busi_viewer.core.decision import apply_operating_point
from busi_viewer.core.grid import reduced_grid
from busi_viewer.inference.model_card import ModelCard
from busi_viewer.inference.preprocessing import Geometry, preprocess
from busi_viewer.inference.scope import ScopeCheck, image_statistics


@dataclass
class Prediction:
    """One image's result.

    ``probabilities`` (K,) float32 are calibrated (softmax of logits / the card's temperature) and sum to 1.
    ``heatmap_raw`` (H, W) float32 >= 0 is Grad-CAM for ``predicted_index`` on the original image grid (or the
    reduced grid asked for, see :meth:`PredictorBase.predict_batch`), in the model's logit units (comparable
    across images); ``heatmap`` is the same map scaled to [0, 1] per image, computed when read (one stored copy).
    Both are None when no explanation was asked for. ``scope_score`` (>= 0; above 1 is out of scope) and
    ``in_scope`` come from the bundle's scope check (:mod:`busi_viewer.inference.scope`); None when it has none.
    """

    class_names: tuple[str, ...]
    logits: np.ndarray
    probabilities: np.ndarray
    predicted_index: int
    low_confidence: bool
    heatmap_raw: np.ndarray | None
    seconds: float
    scope_score: float | None = None
    in_scope: bool | None = None

    @property
    def predicted_class(self) -> str:
        return self.class_names[self.predicted_index]

    def probability(self, class_name: str) -> float:
        return float(self.probabilities[self.class_names.index(class_name)])

    @property
    def heatmap(self) -> np.ndarray | None:
        """(H, W) float32 in [0, 1]: ``heatmap_raw`` divided by its maximum (a new array on each read)."""
        return None if self.heatmap_raw is None else normalise_per_image(self.heatmap_raw)


def calibrated_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """(..., K) logits -> (..., K) float32 softmax(logits / temperature)."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def decide(probabilities: np.ndarray, card: ModelCard) -> int:
    """The predicted class index of (K,) probabilities under the card's operating point.

    With a threshold t for one class in the card (e.g. "malignant"): that class whenever its probability
    >= t, otherwise the most probable of the other classes. Without one: the arg-max.
    """
    point = card.operating_point()
    if point is None:
        return int(np.argmax(probabilities))
    return int(apply_operating_point(probabilities, card.class_names.index(point[0]), point[1]))


def normalise_per_image(maps: np.ndarray) -> np.ndarray:
    """(B, h, w) or (h, w) raw maps >= 0 -> each map divided by its own maximum, in [0, 1].

    An all-zero map (no positive evidence for the class) stays all zero rather than being stretched.
    """
    maps = np.asarray(maps, dtype=np.float32)
    peak = maps.max(axis=(-2, -1), keepdims=True)
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)


def gap_linear_gradcam(classifier_weight: np.ndarray, feature_map: np.ndarray, targets) -> np.ndarray:
    """Exact Grad-CAM at the final feature map of a GAP + linear head, in NumPy.

    ``classifier_weight`` (K, C), ``feature_map`` (B, C, h, w), ``targets`` B class indices -> (B, h, w)
    float32 raw maps ``relu(sum_c W[t, c] A_c) / (h w)`` (see :mod:`busi_viewer.inference.gradcam`).
    """
    feature_map = np.asarray(feature_map, dtype=np.float32)
    weights = np.asarray(classifier_weight, dtype=np.float32)[np.asarray(targets, dtype=np.int64)]  # (B, C)
    h, w = feature_map.shape[-2:]
    maps = np.einsum("bc,bchw->bhw", weights, feature_map, optimize=True) / np.float32(h * w)  # float32
    return np.maximum(maps, 0.0, out=maps)


class PredictorBase:
    """Runs a model on RGB images; subclasses supply the forward pass. Not thread-safe: one per thread.

    Subclasses implement :meth:`_run` (logits, pooled features and the decided class's map per image) and
    :meth:`_class_maps` (maps of given classes); ``card`` and ``description`` (device and runtime, for the status
    bar) are set by them. ``scope``: the bundle's scope check, set by whoever loads the bundle (None: no check).
    """

    card: ModelCard
    description: str = ""
    scope: ScopeCheck | None = None

    def predict(self, rgb: np.ndarray, explain: bool = True) -> Prediction:
        """(H, W, 3) uint8 RGB -> :class:`Prediction`."""
        return self.predict_batch([rgb], explain=explain)[0]

    def predict_batch(self, rgbs: list[np.ndarray], explain: bool = True,
                      heatmap_max_side: int | None = None) -> list[Prediction]:
        """Several (H, W, 3) uint8 RGB images (any sizes) in one forward pass.

        ``heatmap_max_side``: heatmaps of images with a longer side go on the image's extent scaled down to it
        (:func:`busi_viewer.core.grid.reduced_grid`); None keeps every image's own grid.
        """
        start = time.perf_counter()
        inputs, geometries = zip(*(preprocess(rgb, self.card.preprocess) for rgb in rgbs))
        logits, pooled, maps = self._run_as_card_says(np.stack(inputs), explain)
        probabilities = calibrated_probabilities(logits, self.card.calibration_temperature)
        scope_scores = ([None] * len(rgbs) if self.scope is None else
                        self.scope.scores(pooled, np.stack([image_statistics(rgb) for rgb in rgbs])))
        elapsed_each = (time.perf_counter() - start) / len(rgbs)
        return [
            self._prediction(logits[i], probabilities[i], None if maps is None else maps[i],
                             replace(geometries[i], original_shape=reduced_grid(geometries[i].original_shape,
                                                                                heatmap_max_side)),
                             elapsed_each, scope_scores[i])
            for i in range(len(rgbs))
        ]

    def explain_class(self, rgb: np.ndarray, class_index: int) -> np.ndarray:
        """Raw Grad-CAM (H, W) float32 >= 0 of any class for one (H, W, 3) uint8 image, on its original grid."""
        tensor, geometry = preprocess(rgb, self.card.preprocess)
        if self.card.test_time_flip:
            maps = self._class_maps(_with_mirror(tensor[None]), [class_index, class_index])
            cam = _mean_with_mirror(maps)[0]
        else:
            cam = self._class_maps(tensor[None], [class_index])[0]
        return np.maximum(geometry.to_original(cam), 0.0)

    def decided_classes(self, logits: np.ndarray) -> list[int]:
        """The class :func:`decide` picks for each row of (B, K) logits: the one the explanation is of."""
        probabilities = calibrated_probabilities(logits, self.card.calibration_temperature)
        return [decide(p, self.card) for p in probabilities]

    def pooled_features(self, rgbs: list[np.ndarray]) -> np.ndarray:
        """(B, C) float32 pooled features (what the linear head reads) of (H, W, 3) uint8 images: what the scope
        guard is fitted on."""
        inputs, _ = zip(*(preprocess(rgb, self.card.preprocess) for rgb in rgbs))
        return np.asarray(self._run(np.stack(inputs), False, self.decided_classes)[1], dtype=np.float32)

    def _run_as_card_says(self, batch: np.ndarray, explain: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """:meth:`_run`, or with the card's ``test_time_flip`` one pass over the batch and its mirror images:
        logits averaged, maps the mean of each image's and its mirror's (mirrored back) of the class the averaged
        logits decide. Pooled features stay the plain images' (what the scope check was fitted on)."""
        if not self.card.test_time_flip:
            return self._run(batch, explain, self.decided_classes)
        n = len(batch)
        both_logits, both_pooled, both_maps = self._run(
            _with_mirror(batch), explain, lambda logits: self.decided_classes(_mean_with_mirror(logits)) * 2)
        return (_mean_with_mirror(both_logits), both_pooled[:n],
                None if both_maps is None else _mean_with_mirror(both_maps))

    def _run(self, batch: np.ndarray, explain: bool,
             choose: Callable[[np.ndarray], list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(B, 3, S, S) float32 -> logits (B, K), pooled features (B, C) and, when explaining, raw maps (B, h, w)
        of the class ``choose(logits)`` picks per image."""
        raise NotImplementedError

    def _class_maps(self, batch: np.ndarray, targets: list[int]) -> np.ndarray:
        """(B, 3, S, S) float32 -> raw maps (B, h, w) of the given class per image."""
        raise NotImplementedError

    def _prediction(self, logits, probabilities, raw_map, geometry: Geometry, seconds: float,
                    scope_score: float | None) -> Prediction:
        predicted = decide(probabilities, self.card)
        # to_original: float32, bilinear (a map >= 0 stays >= 0; the clamp holds the contract whatever the runtime)
        heatmap_raw = None if raw_map is None else np.maximum(geometry.to_original(raw_map), 0.0)
        return Prediction(
            class_names=self.card.class_names,
            logits=np.asarray(logits, dtype=np.float32),
            probabilities=probabilities,
            predicted_index=predicted,
            low_confidence=bool(probabilities.max() < self.card.low_confidence_below),
            heatmap_raw=heatmap_raw,
            seconds=seconds,
            scope_score=None if scope_score is None else float(scope_score),
            in_scope=None if scope_score is None else self.scope.in_scope(scope_score),
        )


def _with_mirror(batch: np.ndarray) -> np.ndarray:
    """(B, 3, S, S) -> (2B, 3, S, S): the batch, then its images mirrored left to right."""
    return np.concatenate([batch, batch[..., ::-1]])


def _mean_with_mirror(both: np.ndarray) -> np.ndarray:
    """(2B, ...) results of :func:`_with_mirror`'s batch -> (B, ...) means; maps (2B, h, w) of the mirrored half
    are mirrored back first, so each pixel averages the evidence found at that place of the image."""
    n = len(both) // 2
    mirrored = both[n:, :, ::-1] if both.ndim == 3 else both[n:]
    return (both[:n] + mirrored) / 2  # float32 in, float32 out; Prediction and to_original cast anyway
