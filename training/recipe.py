"""Turn a TrainConfig into the objects the fit loop needs: model, optimiser, schedule, loss."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from busi_viewer.inference.architectures import ImageClassifier, build_classifier
from busi_viewer.inference.pretrained import LoadReport, load_imagenet_backbone
from training.config_schema import ConfigError, ModelConfig, TrainConfig
from training.freezing import FreezingPlan, freeze_backbone
from training.balancing import class_weights
from training.partial_labels import PartialLabelCrossEntropy


def build_model(config: ModelConfig, num_classes: int) -> tuple[ImageClassifier, LoadReport | None, FreezingPlan]:
    """A classifier with a new ``num_classes``-way head, the configured ImageNet backbone weights, and the
    first stages of its backbone frozen as ``config.freeze_ratio`` says (see :mod:`training.freezing`)."""
    model = build_classifier(config.arch, num_classes, config.drop_rate, config.output_stride)
    report = None if config.pretrained == "none" else load_imagenet_backbone(model, config.pretrained)
    return model, report, freeze_backbone(model, config.freeze_ratio)


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


def cyclic_learning_rate(iteration: int, base_lr: float, max_lr: float, step_size: int, mode: str) -> float:
    """Smith's cyclical learning rate at ``iteration`` (0-based): triangular, or triangular2 (height halved
    after each cycle). cycle = floor(1 + i / 2s); x = |i / s - 2 cycle + 1|; lr = base + (max - base) max(0, 1 - x)
    times 1 (triangular) or 1 / 2^(cycle - 1) (triangular2)."""
    cycle = math.floor(1 + iteration / (2 * step_size))
    x = abs(iteration / step_size - 2 * cycle + 1)
    scale = 1.0 if mode == "triangular" else 1.0 / 2 ** (cycle - 1)
    return base_lr + (max_lr - base_lr) * max(0.0, 1.0 - x) * scale


def steps_per_batch(config: TrainConfig) -> bool:
    """True when the schedule is stepped after every batch (cyclic) rather than every epoch."""
    return config.schedule.name == "cyclic"


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Constant, StepLR, or cosine decay to ``min_lr_ratio`` after linear warm-up (per epoch); or cyclic between
    ``schedule.base_lr`` and ``optim.lr`` (per batch, :func:`cyclic_learning_rate`)."""
    schedule, epochs = config.schedule, config.train.max_epochs
    if schedule.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=schedule.step_size, gamma=schedule.gamma)
    if schedule.name == "cyclic":
        max_lr = config.optim.lr
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda iteration: cyclic_learning_rate(
            iteration, schedule.base_lr, max_lr, schedule.cycle_step_size, schedule.cyclic_mode) / max_lr)
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


def build_loss(config: TrainConfig, train_labels: np.ndarray, num_classes: int, device: torch.device,
               allowed: np.ndarray | None = None) -> nn.Module:
    """Cross-entropy with the configured label smoothing and (optionally) class weights from training labels.

    ``allowed`` (S, K) bool: the label sets of sources that cannot name every class (see
    :mod:`training.partial_labels`); with more than the all-classes set, the loss is restricted per target.
    """
    loss = config.loss
    if loss.name != "cross_entropy":
        raise ConfigError(f"loss.name: unknown loss {loss.name!r}")
    weight = None
    if loss.class_weights == "balanced":
        weight = torch.as_tensor(class_weights(train_labels, num_classes), dtype=torch.float32, device=device)
    if allowed is not None and len(allowed) > 1:
        return PartialLabelCrossEntropy(allowed, weight, loss.label_smoothing).to(device)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=loss.label_smoothing)
