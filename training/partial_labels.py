"""Training on sources that cannot name every class: a cross-entropy over the classes each source can name.

BUS-BRA holds only biopsied lesions: none of its images is normal, by how it was collected, not because its
images look unlike normal breasts. Trained with the ordinary three-class cross-entropy, a model is pushed to
give BUS-BRA images p(normal) = 0, and it can learn that from what tells the sources apart (frame layout,
burned-in text, scanner texture): "normal" would come to mean "looks like BUSI". Here a BUS-BRA image's loss
is the cross-entropy of the softmax over {benign, malignant} only: it teaches benign against malignant and says
nothing about normal, which only BUSI (the one source with normal images) teaches.

A target carries its label set: ``target = label + K * set_code`` (K classes), set 0 = every class. Plain
labels (all < K) are thus valid targets; ``target % K`` is always the class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from busi_viewer.core.labels import NORMAL

SOURCE_CANNOT_NAME: Mapping[str, frozenset[str]] = {"bus-bra": frozenset({NORMAL})}
"""Classes a source never labels because of how it was collected (not because they are absent from its clinic)."""


def label_sets(sources: Sequence[str], class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(set code per sample (N,) int64, allowed classes per set (S, K) bool); set 0 allows every class.

    Only sources that cannot name a class of ``class_names`` get a set of their own.
    """
    table = [np.ones(len(class_names), dtype=bool)]
    codes = np.zeros(len(sources), dtype=np.int64)
    known: dict[tuple[bool, ...], int] = {tuple(table[0]): 0}
    for i, source in enumerate(sources):
        allowed = tuple(name not in SOURCE_CANNOT_NAME.get(source, ()) for name in class_names)
        if allowed not in known:
            known[allowed] = len(table)
            table.append(np.array(allowed, dtype=bool))
        codes[i] = known[allowed]
    return codes, np.stack(table)


def encode_targets(labels: np.ndarray, set_codes: np.ndarray, num_classes: int) -> np.ndarray:
    """(N,) int64 targets ``label + num_classes * set_code``."""
    return np.asarray(labels, dtype=np.int64) + num_classes * np.asarray(set_codes, dtype=np.int64)


def target_classes(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The class of each encoded target."""
    return targets % num_classes


class PartialLabelCrossEntropy(nn.Module):
    """Cross-entropy of the softmax restricted to each target's allowed classes, with label smoothing spread
    over those classes and optional class weights (weighted mean over the batch, as torch's weighted CE).

    ``allowed``: (S, K) bool from :func:`label_sets`. With every class allowed and no weights this equals
    ``nn.CrossEntropyLoss(label_smoothing=...)``.
    """

    def __init__(self, allowed: np.ndarray, weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.register_buffer("allowed", torch.as_tensor(np.asarray(allowed, dtype=bool)))
        self.weight = weight
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        k = logits.shape[1]
        classes, codes = targets % k, targets // k
        allowed = self.allowed[codes]  # (B, K)
        # A large finite negative rather than -inf: exp() gives exactly 0 and no inf * 0 = nan appears below.
        masked = logits.float().masked_fill(~allowed, -1e9)
        log_probs = torch.log_softmax(masked, dim=1)
        n_allowed = allowed.sum(dim=1, keepdim=True).float()
        soft = allowed.float() * (self.label_smoothing / n_allowed)
        soft = soft + (1.0 - self.label_smoothing) * nn.functional.one_hot(classes, k).float()
        per_item = -(soft * log_probs.masked_fill(~allowed, 0.0)).sum(dim=1)
        if self.weight is None:
            return per_item.mean()
        w = self.weight.to(per_item.device)[classes]
        return (w * per_item).sum() / w.sum()
