"""Grad-CAM: the autograd reference on any layer, and an exact closed form for GAP + linear heads.

Grad-CAM (Selvaraju et al., 2017) weights each channel c of a layer's activation A (B, C, h, w) by the
spatial mean of d score / d A_c and keeps the positive part of the weighted sum:
``cam = relu(sum_c alpha_c * A_c)`` with ``alpha_c = mean_ij d y_k / d A_c,ij``.

When the layer is the final feature map and the head is global average pooling followed by a linear layer,
``y_k = sum_c W_kc * mean_ij A_c,ij + b_k``, so ``d y_k / d A_c,ij = W_kc / (h w)`` everywhere and
``cam = relu(sum_c W_kc A_c) / (h w)``: one forward pass and one small contraction, no backward pass.
:func:`fast_gradcam` computes exactly that; :func:`reference_gradcam` computes the definition by autograd,
and a test holds the two together for every supported architecture.

Maps are returned "raw" (in logit units, comparable across images of one model) on the layer's grid;
:func:`~busi_viewer.inference.prediction.normalise_per_image` scales each map to [0, 1] by its own maximum.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn

from busi_viewer.inference.architectures import GapLinearHead, ImageClassifier


@dataclass
class CamOutput:
    """``logits`` (B, K) float32; ``targets`` (B,) int64 class explained; ``maps`` (B, h, w) float32 raw, >= 0."""

    logits: torch.Tensor
    targets: torch.Tensor
    maps: torch.Tensor


def _resolve_targets(logits: torch.Tensor, targets: torch.Tensor | list[int] | int | None) -> torch.Tensor:
    if targets is None:
        return logits.argmax(dim=1)
    return torch.as_tensor(targets, device=logits.device, dtype=torch.long).expand(logits.shape[0]).clone()


def supports_fast_gradcam(model: nn.Module) -> bool:
    """True when the model's head is exactly global average pooling + (dropout) + linear."""
    return isinstance(model, ImageClassifier) and type(model.head) is GapLinearHead


@torch.inference_mode()
def fast_gradcam_all_classes(model: ImageClassifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact Grad-CAM of every class at the final feature map, in one forward pass (model in eval mode).

    ``x``: (B, 3, S, S) float32. Returns logits (B, K) and raw maps (B, K, h, w), both float32.
    """
    logits, _pooled, maps = gap_linear_forward(model, x)
    return logits, maps


@torch.inference_mode()
def gap_linear_forward(model: ImageClassifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward pass: logits (B, K), pooled features (B, C) and every class's exact Grad-CAM (B, K, h, w),
    all float32 (see :func:`fast_gradcam_all_classes`)."""
    if not supports_fast_gradcam(model):
        raise TypeError("fast Grad-CAM needs an ImageClassifier whose head is GAP + linear; use reference_gradcam")
    feature_map = model.forward_features(x)
    pooled = model.forward_head(feature_map, pre_logits=True)
    logits = model.forward_head(feature_map)
    weights = model.get_classifier().weight.to(feature_map.dtype)  # (K, C)
    h, w = feature_map.shape[-2:]
    maps = torch.relu(torch.einsum("kc,bchw->bkhw", weights, feature_map)) / (h * w)
    return logits.float(), pooled.float(), maps.float()


def fast_gradcam(
    model: ImageClassifier,
    x: torch.Tensor,
    targets: torch.Tensor | list[int] | int | None = None,
) -> CamOutput:
    """Exact Grad-CAM at the final feature map for one class per image (default: the arg-max class)."""
    logits, maps = fast_gradcam_all_classes(model, x)
    target_idx = _resolve_targets(logits, targets)
    return CamOutput(logits, target_idx, maps[torch.arange(maps.shape[0], device=maps.device), target_idx])


_FINAL_FEATURE_MODULES: "weakref.WeakKeyDictionary[nn.Module, nn.Module]" = weakref.WeakKeyDictionary()


def final_feature_module(model: ImageClassifier) -> nn.Module:
    """The backbone module whose output *is* the final feature map (found by tracing, not by layer names).

    Runs one tiny forward pass with hooks on every backbone module and returns the outermost module that
    finished last with the very tensor ``forward_features`` returned. Cached per model, outside it: a module
    set as an attribute would join the model's state_dict under a second name.
    """
    cached = _FINAL_FEATURE_MODULES.get(model)
    if cached is not None:
        return cached
    produced: list[tuple[nn.Module, torch.Tensor]] = []
    handles = [
        module.register_forward_hook(lambda mod, _inp, out: produced.append((mod, out)))
        for module in model.backbone.modules()
        if module is not model.backbone
    ]
    try:
        parameter = next(model.parameters())
        probe = torch.zeros(1, 3, 64, 64, device=parameter.device, dtype=parameter.dtype)
        with torch.inference_mode():
            feature_map = model.forward_features(probe)
    finally:
        for handle in handles:
            handle.remove()
    matches = [module for module, out in produced if out is feature_map]
    if not matches:
        raise RuntimeError(f"no single module of {model.architecture} outputs its final feature map")
    # Containers finish after their children, so the last match is the outermost module.
    module = matches[-1]
    _FINAL_FEATURE_MODULES[model] = module
    return module


def reference_gradcam(
    model: nn.Module,
    x: torch.Tensor,
    target_layer: nn.Module | None = None,
    targets: torch.Tensor | list[int] | int | None = None,
) -> CamOutput:
    """Grad-CAM by autograd hooks on ``target_layer`` (default: the final feature map of an ImageClassifier).

    Works with frozen parameters and inside ``torch.no_grad`` callers: the hooked activation is made a leaf
    that requires grad when nothing upstream does. ``x``: (B, 3, S, S); returns maps on the layer's grid.
    """
    if target_layer is None:
        if not isinstance(model, ImageClassifier):
            raise TypeError("target_layer is required for models other than ImageClassifier")
        target_layer = final_feature_module(model)
    captured: dict[str, torch.Tensor] = {}

    def keep_activation(_module: nn.Module, _inputs, output: torch.Tensor):
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"Grad-CAM target layer must output a tensor, got {type(output).__name__}")
        if not output.requires_grad:
            output = output.detach().requires_grad_(True)
        captured["activation"] = output
        return output

    handle = target_layer.register_forward_hook(keep_activation)
    try:
        with torch.enable_grad():
            logits = model(x)
            target_idx = _resolve_targets(logits, targets)
            activation = captured["activation"]
            if activation.ndim != 4:
                raise ValueError(f"target layer output must be (B, C, h, w), got shape {tuple(activation.shape)}")
            score = logits.gather(1, target_idx[:, None]).sum()
            (gradient,) = torch.autograd.grad(score, activation)
            alpha = gradient.mean(dim=(2, 3), keepdim=True)
            maps = torch.relu((alpha * activation).sum(dim=1))
    finally:
        handle.remove()
    return CamOutput(logits.detach().float(), target_idx, maps.detach().float())
