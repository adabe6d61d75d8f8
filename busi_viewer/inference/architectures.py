"""Classifier networks: a timm backbone's final feature map, global average pooling, one linear layer.

Every supported architecture is wrapped the same way so that the rest of the code never names layers by
string: ``forward_features`` gives the final feature map (B, C, h, w), ``forward_head`` turns it into logits,
``get_classifier()`` is the linear layer. Because the head is exactly GAP + (dropout) + linear, Grad-CAM at the
final feature map has a closed form (see :mod:`busi_viewer.inference.gradcam`).
"""

from __future__ import annotations

import timm
import torch
from torch import nn

SUPPORTED_ARCHITECTURES: tuple[str, ...] = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2",
                                            "efficientnet_b0", "resnet50", "vgg19")
DEFAULT_ARCHITECTURE = "tf_efficientnet_lite0"
# The final feature map's stride: 32 as the networks were designed (7 x 7 at 224 px), or 16 with the last
# downsampling stage dilated instead (14 x 14: a finer explanation grid from the same weights). timm has no
# dilated VGG.
OUTPUT_STRIDES: tuple[int, ...] = (32, 16)


class GapLinearHead(nn.Module):
    """Global average pooling, dropout (identity in eval mode) and a linear classifier."""

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, feature_map: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = feature_map.mean(dim=(2, 3))
        if pre_logits:
            return pooled
        return self.fc(self.drop(pooled))


class ImageClassifier(nn.Module):
    """A timm backbone (its own pooling and classifier removed) followed by :class:`GapLinearHead`.

    Input: (B, 3, H, W) float32, normalised as the model card says. Output: (B, num_classes) logits.
    """

    def __init__(self, architecture: str, num_classes: int, drop_rate: float = 0.0, output_stride: int = 32):
        super().__init__()
        if architecture not in SUPPORTED_ARCHITECTURES:
            raise ValueError(
                f"unsupported architecture {architecture!r}; choose one of {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        if output_stride not in OUTPUT_STRIDES or (output_stride != 32 and architecture == "vgg19"):
            raise ValueError(f"output stride {output_stride} is not available for {architecture}")
        self.architecture = architecture
        self.output_stride = output_stride
        dilation = {} if output_stride == 32 else {"output_stride": output_stride}
        self.backbone = timm.create_model(architecture, pretrained=False, num_classes=0, global_pool="", **dilation)
        if hasattr(self.backbone, "pre_logits"):
            # timm's VGG keeps its fc6/fc7 as a 7x7 "ConvMlp" after the conv features (~120 M parameters);
            # transfer learning on VGG classically replaces them with GAP + a new dense layer, as here.
            self.backbone.pre_logits = nn.Identity()
        self.num_features = int(self.backbone.num_features)
        self.head = GapLinearHead(self.num_features, num_classes, drop_rate)

    @property
    def num_classes(self) -> int:
        return self.head.fc.out_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> final feature map (B, C, h, w)."""
        return self.backbone.forward_features(x)

    def forward_head(self, feature_map: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Final feature map (B, C, h, w) -> logits (B, num_classes), or pooled features if ``pre_logits``."""
        return self.head(feature_map, pre_logits=pre_logits)

    def get_classifier(self) -> nn.Linear:
        return self.head.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_classifier(architecture: str, num_classes: int, drop_rate: float = 0.0,
                     output_stride: int = 32) -> ImageClassifier:
    """A randomly initialised :class:`ImageClassifier`; load weights separately (bundle or pretrained)."""
    return ImageClassifier(architecture, num_classes, drop_rate, output_stride)
