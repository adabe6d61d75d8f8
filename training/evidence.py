"""Evidence alignment: a training term that asks the lesion classes' Grad-CAM evidence to sit on the lesion.

For a GAP + linear head, the Grad-CAM of class k at the final feature map A (B, C, h, w) is ``relu(W_k · A) / hw``
(:mod:`busi_viewer.inference.gradcam`); the viewer shows that map and the pointing game asks whether its maximum
lies in the lesion. This term reads each lesion class's map ``W_k · A`` as a distribution over the h·w cells
(softmax of the map standardised per image, times ``sharpness``) and minimises ``-log`` of its mass on the lesion,
where each cell counts by the fraction of it that the mask covers. The explanation stays Grad-CAM by its
definition; only training asks it to land on the lesion.

Lesion masks are training targets here, never inputs. Images without a lesion (BUSI's normal images) add nothing.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from busi_viewer.core.labels import NORMAL
from busi_viewer.inference.architectures import ImageClassifier
from busi_viewer.inference.gradcam import final_feature_module

_MIN_STD = 1e-4  # a flat map has no place to point at; its standardisation must not divide by ~0


def lesion_classes(class_names: Sequence[str]) -> list[int]:
    """Indices of the classes whose evidence should sit on a lesion: every class but "normal"."""
    return [i for i, name in enumerate(class_names) if name != NORMAL]


def evidence_alignment(feature_map: torch.Tensor, class_weight: torch.Tensor, masks: torch.Tensor,
                       sharpness: float = 2.0) -> torch.Tensor:
    """Mean over images with a lesion and over the given classes of ``-log(sum_cells p * coverage)``.

    ``feature_map`` (B, C, h, w); ``class_weight`` (L, C): the classifier rows of the classes to align; ``masks``
    (B, S, S) bool or {0, 1} on the network input's grid. ``p``: softmax over the
    h·w cells of ``sharpness`` times the standardised map ``W_l · A``; ``coverage``: each cell's share inside the
    mask, in [0, 1]. Returns a scalar >= 0 (0 with the graph kept when no image has a lesion).
    """
    h, w = feature_map.shape[-2:]
    coverage = F.adaptive_avg_pool2d(masks[:, None].float(), (h, w))[:, 0].flatten(1)  # (B, h*w)
    has_lesion = coverage.sum(dim=1) > 0
    if not bool(has_lesion.any()):
        return feature_map.sum() * 0.0
    maps = torch.einsum("lc,bchw->blhw", class_weight.to(feature_map.dtype), feature_map[has_lesion]).flatten(2)
    maps = maps.float()
    standard = (maps - maps.mean(dim=2, keepdim=True)) / maps.std(dim=2, keepdim=True).clamp_min(_MIN_STD)
    log_p = torch.log_softmax(sharpness * standard, dim=2)  # (B', L, h*w)
    log_coverage = torch.log(coverage[has_lesion])[:, None, :]  # -inf outside the lesion
    return -torch.logsumexp(log_p + log_coverage, dim=2).mean()


class EvidenceAlignedLoss(nn.Module):
    """Classification loss plus ``weight`` times :func:`evidence_alignment` on the model's final feature map.

    Targets are ``(labels, masks)`` from a dataset that yields masks, or plain labels (classification only).
    The alignment term joins only while gradients are on, so the validation loss that picks the best epoch
    stays the classification loss. The feature map is taken by a forward hook on the module that produces it
    (found by tracing, :func:`~busi_viewer.inference.gradcam.final_feature_module`), so DDP wrapping is fine.
    """

    def __init__(self, classification: nn.Module, model: ImageClassifier, class_indices: Sequence[int],
                 weight: float, sharpness: float = 2.0):
        super().__init__()
        if not class_indices:
            raise ValueError("evidence alignment needs at least one lesion class")
        self.classification = classification
        self.weight, self.sharpness = float(weight), float(sharpness)
        self.class_indices = list(class_indices)
        self._classifier = model.get_classifier()
        self._feature_map: torch.Tensor | None = None
        self._hook = final_feature_module(model).register_forward_hook(self._keep_feature_map)

    def _keep_feature_map(self, _module: nn.Module, _inputs, output: torch.Tensor) -> None:
        self._feature_map = output

    def forward(self, logits: torch.Tensor, targets) -> torch.Tensor:
        labels, masks = targets if isinstance(targets, (list, tuple)) else (targets, None)
        loss = self.classification(logits, labels)
        feature_map, self._feature_map = self._feature_map, None
        if masks is None or not torch.is_grad_enabled() or self.weight == 0:
            return loss
        if feature_map is None:
            raise RuntimeError("no feature map was captured: call the loss right after the model's forward pass")
        rows = self._classifier.weight[self.class_indices]
        return loss + self.weight * evidence_alignment(feature_map, rows, masks, self.sharpness)

    def remove(self) -> None:
        """Detach the forward hook from the model."""
        self._hook.remove()
