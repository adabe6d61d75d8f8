"""Prediction with explanation through torch: the source install's backend (CPU, CUDA, MPS) and training's."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from busi_viewer.inference.device import describe_device
from busi_viewer.inference.gradcam import (
    fast_gradcam_all_classes,
    gap_linear_forward,
    reference_gradcam,
    supports_fast_gradcam,
)
from busi_viewer.inference.model_card import ModelCard
from busi_viewer.inference.optimise import optimised_copy
from busi_viewer.inference.prediction import PredictorBase


class Predictor(PredictorBase):
    """Runs a loaded torch model on RGB images. Not thread-safe: give each worker thread its own."""

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
        self.description = f"{describe_device(self.device)}, PyTorch"

    def _tensor(self, batch: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(batch).to(self.device).contiguous(memory_format=self.memory_format)

    def _run(self, batch: np.ndarray, explain: bool,
             choose: Callable[[np.ndarray], list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        x = self._tensor(batch)
        if self.uses_fast_cam:
            logits, pooled, all_maps = gap_linear_forward(self.model, x)
            logits = logits.cpu().numpy()
            maps = _maps_of(all_maps, choose(logits)) if explain else None
            return logits, pooled.cpu().numpy(), maps
        with torch.inference_mode():
            feature_map = self.model.forward_features(x)
            pooled = self.model.forward_head(feature_map, pre_logits=True).float().cpu().numpy()
            logits = self.model.forward_head(feature_map).float().cpu().numpy()
        if not explain:
            return logits, pooled, None
        maps = reference_gradcam(self.model, x, targets=choose(logits)).maps.cpu().numpy()
        return logits, pooled, maps

    def _class_maps(self, batch: np.ndarray, targets: list[int]) -> np.ndarray:
        x = self._tensor(batch)
        if self.uses_fast_cam:
            _logits, all_maps = fast_gradcam_all_classes(self.model, x)
            return _maps_of(all_maps, targets)
        return reference_gradcam(self.model, x, targets=targets).maps.cpu().numpy()


def _maps_of(all_maps: torch.Tensor, targets: list[int]) -> np.ndarray:
    """(B, K, h, w) maps of every class -> (B, h, w) NumPy maps of one class per image."""
    index = torch.as_tensor(targets, device=all_maps.device)
    return all_maps[torch.arange(len(targets), device=all_maps.device), index].cpu().numpy()
