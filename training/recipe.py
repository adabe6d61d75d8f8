"""Turn a TrainConfig into the objects the fit loop needs: model, optimiser, schedule, loss."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from busi_viewer.inference.architectures import ImageClassifier, build_classifier
from busi_viewer.inference.pretrained import LoadReport, load_imagenet_backbone
from training.config import ConfigError, ModelConfig, TrainConfig
from training.data import class_weights


def build_model(config: ModelConfig, num_classes: int) -> tuple[ImageClassifier, LoadReport | None]:
    """A classifier with a new ``num_classes``-way head and the configured ImageNet backbone weights."""
    if config.freeze_ratio:
        raise ConfigError("model.freeze_ratio: selective freezing arrives with the mammography recipe (issue #7); "
                          "use 0.0")
    model = build_classifier(config.arch, num_classes, config.drop_rate)
    report = None if config.pretrained == "none" else load_imagenet_backbone(model, config.pretrained)
    return model, report


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    optim = config.optim
    parameters = [p for p in model.parameters() if p.requires_grad]
    if optim.name == "adam":
        return torch.optim.Adam(parameters, lr=optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay)
    if optim.name == "adamw":
        return torch.optim.AdamW(parameters, lr=optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay)
    if optim.name == "sgd":
        return torch.optim.SGD(parameters, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay,
                               nesterov=optim.momentum > 0)
    raise ConfigError(f"optim.name: unknown optimiser {optim.name!r}")


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-epoch schedule: constant, StepLR, or cosine decay to ``min_lr_ratio`` after linear warm-up."""
    schedule, epochs = config.schedule, config.train.max_epochs
    if schedule.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=schedule.step_size, gamma=schedule.gamma)
    warmup = schedule.warmup_epochs

    def factor(epoch: int) -> float:
        if epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        if schedule.name == "constant":
            return 1.0
        progress = (epoch - warmup) / max(1, epochs - warmup)
        return schedule.min_lr_ratio + (1 - schedule.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    if schedule.name not in ("constant", "cosine"):
        raise ConfigError(f"schedule.name: unknown schedule {schedule.name!r}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_loss(config: TrainConfig, train_labels: np.ndarray, num_classes: int, device: torch.device) -> nn.Module:
    """Cross-entropy with the configured label smoothing and (optionally) class weights from training labels."""
    loss = config.loss
    if loss.name != "cross_entropy":
        raise ConfigError(f"loss.name: unknown loss {loss.name!r}")
    weight = None
    if loss.class_weights == "balanced":
        weight = torch.as_tensor(class_weights(train_labels, num_classes), dtype=torch.float32, device=device)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=loss.label_smoothing)
