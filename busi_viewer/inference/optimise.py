"""A faster copy of a trained model for inference: batch norm folded into the convolution before it, and the
channels-last memory layout that oneDNN and cuDNN run fastest.

Measured on the project's 2-core CPU VM with the shipped EfficientNet-Lite0 at 224 px: ``busi-bench``'s predict
+ heatmap on a 560×470 image takes 11.9–13.1 ms with this copy against 16.8–18.7 ms with the model as trained
(two runs, 2026-12-01). The copy is checked against the original on a probe batch; a fold that would change
the outputs is refused and the plain copy is kept.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass

import torch
from torch import nn

# Folding reorders floating-point sums; the logits of busi-us 0.1.0 moved by 1.8e-6 (measured).
PROBE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class OptimisedModel:
    """``model`` (eval mode, never the caller's object), how many batch norms were folded, its memory format."""

    model: nn.Module
    folded: int
    memory_format: torch.memory_format


def _batch_norm_parts(module: nn.Module) -> tuple[nn.Module, ...] | None:
    """What remains of a batch-norm module after folding: () for nn.BatchNorm2d; (drop, act) for timm's
    BatchNormAct2d; None for anything else (not foldable)."""
    if type(module) is nn.BatchNorm2d:
        return ()
    if type(module).__name__ == "BatchNormAct2d" and hasattr(module, "act") and hasattr(module, "drop"):
        return (module.drop, module.act)
    return None


def fold_batch_norms(model: nn.Module) -> int:
    """Fold, in place, every eval-mode batch norm that directly follows a Conv2d among its parent's children
    (``conv, bn`` in registration order, as in timm's blocks) into that convolution. Returns the count.

    Registration order is only a hint of data flow: callers must check the result (:func:`optimised_copy`).
    """
    folded = 0
    for parent in list(model.modules()):
        children = list(parent.named_children())
        for (_, conv), (bn_name, bn) in itertools.pairwise(children):
            rest = _batch_norm_parts(bn)
            if rest is None or not isinstance(conv, nn.Conv2d) or not bn.track_running_stats \
                    or bn.running_var is None or conv.out_channels != bn.num_features:
                continue
            with torch.no_grad():
                scale = torch.rsqrt(bn.running_var + bn.eps)
                if bn.affine:
                    scale = scale * bn.weight
                shift = -bn.running_mean * scale + (bn.bias if bn.affine else 0.0)
                conv.weight.mul_(scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype))
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                conv.bias = nn.Parameter((bias * scale + shift).to(conv.weight.dtype), requires_grad=False)
            setattr(parent, bn_name, nn.Sequential(*rest) if rest else nn.Identity())
            folded += 1
    return folded


def optimised_copy(model: nn.Module, device: torch.device | str = "cpu", probe_size: int = 64) -> OptimisedModel:
    """An eval-mode copy of ``model`` on ``device`` with batch norms folded and channels-last weights,
    verified on a random probe batch (outputs within :data:`PROBE_TOLERANCE`); the caller's model is untouched.
    Falls back to the unfolded copy (still channels-last) if folding changed the outputs."""
    device = torch.device(device)
    reference = copy.deepcopy(model).to(device).eval()
    candidate = copy.deepcopy(reference)
    folded = fold_batch_norms(candidate)
    memory_format = torch.channels_last
    candidate = candidate.to(memory_format=memory_format)
    probe = torch.rand(2, 3, probe_size, probe_size, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.inference_mode():
        expected = reference(probe).float()
        got = candidate(probe.contiguous(memory_format=memory_format)).float()
    if folded and not torch.allclose(got, expected, atol=PROBE_TOLERANCE, rtol=PROBE_TOLERANCE):
        return OptimisedModel(reference.to(memory_format=memory_format), 0, memory_format)
    return OptimisedModel(candidate, folded, memory_format)
