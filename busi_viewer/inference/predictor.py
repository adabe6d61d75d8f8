"""Prediction with explanation for whole images: preprocess, classify, calibrate, decide, explain, map back."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from busi_viewer.core.decision import apply_operating_point
from busi_viewer.core.labels import MALIGNANT
from busi_viewer.inference.gradcam import (
    fast_gradcam,
    fast_gradcam_all_classes,
    normalise_per_image,
    reference_gradcam,
    supports_fast_gradcam,
)
from busi_viewer.inference.model_card import ModelCard
from busi_viewer.inference.optimise import optimised_copy
from busi_viewer.inference.preprocessing import Geometry, preprocess


@dataclass
class Prediction:
    """One image's result.

    ``probabilities`` (K,) float32 are calibrated (softmax of logits / the card's temperature) and sum to 1.
    ``heatmap_raw`` (H, W) float32 >= 0 is Grad-CAM for ``predicted_index`` on the original image grid, in
    the model's logit units (comparable across images); ``heatmap`` is the same map scaled to [0, 1] per
    image. Both are None when no explanation was asked for.
    """

    class_names: tuple[str, ...]
    logits: np.ndarray
    probabilities: np.ndarray
    predicted_index: int
    low_confidence: bool
    heatmap_raw: np.ndarray | None
    heatmap: np.ndarray | None
    seconds: float

    @property
    def predicted_class(self) -> str:
        return self.class_names[self.predicted_index]

    def probability(self, class_name: str) -> float:
        return float(self.probabilities[self.class_names.index(class_name)])


def calibrated_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """(..., K) logits -> (..., K) float32 softmax(logits / temperature)."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def decide(probabilities: np.ndarray, card: ModelCard) -> int:
    """The predicted class index of (K,) probabilities under the card's operating point.

    With a "malignant" threshold t in the card: malignant whenever p(malignant) >= t, otherwise the most
    probable of the other classes. Without one: the arg-max.
    """
    threshold = card.thresholds.get(MALIGNANT)
    if MALIGNANT not in card.class_names:
        threshold = None
    positive = card.class_names.index(MALIGNANT) if threshold is not None else 0
    return int(apply_operating_point(probabilities, positive, threshold))


class Predictor:
    """Runs a loaded model on RGB images. Not thread-safe: give each worker thread its own."""

    def __init__(self, model: torch.nn.Module, card: ModelCard, device: torch.device | str = "cpu", *,
                 optimise: bool = False):
        """``optimise``: run a verified copy with batch norms folded and channels-last layout
        (:func:`~busi_viewer.inference.optimise.optimised_copy`; the caller's model is left as it is),
        for the viewer and busi-predict. Without it, the model itself runs (training's evaluation)."""
        self.device = torch.device(device)
        self.memory_format = torch.contiguous_format
        if optimise:
            optimised = optimised_copy(model, self.device)
            model, self.memory_format = optimised.model, optimised.memory_format
        self.model = model.to(self.device).eval()
        self.card = card
        self.uses_fast_cam = supports_fast_gradcam(self.model)

    def predict(self, rgb: np.ndarray, explain: bool = True) -> Prediction:
        """(H, W, 3) uint8 RGB -> :class:`Prediction`."""
        return self.predict_batch([rgb], explain=explain)[0]

    def predict_batch(self, rgbs: list[np.ndarray], explain: bool = True) -> list[Prediction]:
        """Several (H, W, 3) uint8 RGB images (any sizes) in one forward pass."""
        start = time.perf_counter()
        inputs, geometries = zip(*(preprocess(rgb, self.card.preprocess) for rgb in rgbs))
        batch = torch.from_numpy(np.stack(inputs)).to(self.device).contiguous(memory_format=self.memory_format)
        logits, maps = self._run(batch, explain)
        probabilities = calibrated_probabilities(logits, self.card.calibration_temperature)
        elapsed_each = (time.perf_counter() - start) / len(rgbs)
        return [
            self._prediction(logits[i], probabilities[i], maps, i, geometries[i], elapsed_each)
            for i in range(len(rgbs))
        ]

    def explain_class(self, rgb: np.ndarray, class_index: int) -> np.ndarray:
        """Raw Grad-CAM (H, W) float32 >= 0 of any class for one (H, W, 3) uint8 image, on its original grid."""
        tensor, geometry = preprocess(rgb, self.card.preprocess)
        batch = torch.from_numpy(tensor[None]).to(self.device).contiguous(memory_format=self.memory_format)
        explain = fast_gradcam if self.uses_fast_cam else reference_gradcam
        cam = explain(self.model, batch, targets=class_index)
        return np.maximum(geometry.to_original(cam.maps[0].cpu().numpy()), 0.0)

    def _run(self, batch: torch.Tensor, explain: bool) -> tuple[np.ndarray, list[torch.Tensor] | None]:
        """Logits (B, K) and, when explaining, one raw map (h, w) per image for the class :func:`decide` picks."""
        if self.uses_fast_cam and explain:
            logits, all_maps = fast_gradcam_all_classes(self.model, batch)
            logits = logits.cpu().numpy()
        else:
            with torch.inference_mode():
                logits = self.model(batch).float().cpu().numpy()
            if not explain:
                return logits, None
        # Explain the class the operating point decides, which may differ from the arg-max.
        probabilities = calibrated_probabilities(logits, self.card.calibration_temperature)
        targets = [decide(p, self.card) for p in probabilities]
        if self.uses_fast_cam:
            return logits, [all_maps[i, t].cpu() for i, t in enumerate(targets)]
        cam = reference_gradcam(self.model, batch, targets=targets)
        return logits, list(cam.maps.cpu())

    def _prediction(self, logits, probabilities, maps, index: int, geometry: Geometry, seconds: float) -> Prediction:
        predicted = decide(probabilities, self.card)
        heatmap_raw = heatmap = None
        if maps is not None:
            heatmap_raw = geometry.to_original(maps[index].numpy())
            np.maximum(heatmap_raw, 0.0, out=heatmap_raw)  # bilinear resampling of a >= 0 map stays >= 0
            heatmap = normalise_per_image(heatmap_raw)
        return Prediction(
            class_names=self.card.class_names,
            logits=np.asarray(logits, dtype=np.float32),
            probabilities=probabilities,
            predicted_index=predicted,
            low_confidence=bool(probabilities.max() < self.card.low_confidence_below),
            heatmap_raw=heatmap_raw,
            heatmap=heatmap,
            seconds=seconds,
        )
