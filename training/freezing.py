"""Selective layer freezing: a fraction of the backbone frozen from the input side, by whole stages.

The stages are timm's own coarse parameter groups of the backbone, in input-to-output order (found through the
model's ``group_matcher``, not by layer names): EfficientNet-Lite0/1/2 / B0 have 8 (stem, blocks 0-6, head conv),
ResNet50 has 5 (stem, layer1-4), VGG19 has 16 (one per convolution). A freezing ratio r freezes the first
``floor(r * n + 0.5)`` stages (r rounded half up to whole stages): their parameters stop receiving gradients and
their batch-norm layers keep their running statistics (they stay in eval mode even while the model trains).
The new linear head is never frozen. :func:`freezing_plan` reports what a ratio freezes, in stages and in
parameters, so that a ratio's meaning is visible per architecture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

from timm.models import group_parameters
from torch import nn

from busi_viewer.inference.architectures import ImageClassifier


@dataclass(frozen=True)
class FreezingPlan:
    """What a freezing ratio means for one model: stages and parameters frozen, out of how many."""

    architecture: str
    ratio: float
    stages: int
    frozen_stages: int
    frozen_parameters: int
    backbone_parameters: int
    total_parameters: int

    @property
    def frozen_fraction_of_backbone(self) -> float:
        return self.frozen_parameters / self.backbone_parameters if self.backbone_parameters else 0.0


def backbone_stages(model: ImageClassifier) -> list[list[str]]:
    """The backbone's parameter names grouped by stage, input side first (names relative to the backbone)."""
    backbone = model.backbone
    groups = group_parameters(backbone, backbone.group_matcher(coarse=True))
    return [list(names) for _, names in sorted(groups.items())]


def stages_to_freeze(ratio: float, stages: int) -> int:
    """``floor(ratio * stages + 0.5)``: the ratio rounded half up to whole stages; ratio in [0, 1]."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"freezing ratio must lie in [0, 1], got {ratio}")
    return min(stages, math.floor(ratio * stages + 0.5))


def freezing_plan(model: ImageClassifier, ratio: float) -> FreezingPlan:
    """What :func:`freeze_backbone` would freeze at ``ratio``, without changing the model."""
    return _plan(model, ratio, backbone_stages(model))


def _plan(model: ImageClassifier, ratio: float, stages: list[list[str]]) -> FreezingPlan:
    parameters = dict(model.backbone.named_parameters())
    count = stages_to_freeze(ratio, len(stages))
    return FreezingPlan(
        architecture=model.architecture, ratio=ratio, stages=len(stages), frozen_stages=count,
        frozen_parameters=sum(parameters[name].numel() for stage in stages[:count] for name in stage),
        backbone_parameters=sum(p.numel() for p in parameters.values()),
        total_parameters=sum(p.numel() for p in model.parameters()),
    )


def freeze_backbone(model: ImageClassifier, ratio: float) -> FreezingPlan:
    """Freeze the first stages of ``model``'s backbone (see the module docstring); returns the plan applied.

    Call after loading pretrained weights and before building the optimiser (which takes trainable
    parameters only). Frozen batch norms keep eval mode through ``model.train()``.
    """
    stages = backbone_stages(model)
    plan = _plan(model, ratio, stages)
    frozen_names = {name for stage in stages[: plan.frozen_stages] for name in stage}
    for name, parameter in model.backbone.named_parameters():
        if name in frozen_names:
            parameter.requires_grad_(False)
    for name, module in model.backbone.named_modules():
        own = [f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)]
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and own and all(n in frozen_names for n in own):
            module.__class__ = _frozen_statistics_class(type(module))
            module.eval()
    return plan


@cache
def _frozen_statistics_class(batchnorm: type) -> type:
    """A subclass of ``batchnorm`` (BatchNorm2d, timm's BatchNormAct2d, ...) that never leaves eval mode.

    Swapping the instance's class keeps its parameters, buffers and state-dict keys exactly as they were, so
    the trained model saves and loads like any other.
    """

    def train(self, mode: bool = True):
        return super(frozen, self).train(False)

    frozen = type(f"FrozenStatistics{batchnorm.__name__}", (batchnorm,), {"train": train, "__module__": __name__})
    return frozen
