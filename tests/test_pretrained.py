"""ImageNet weights: the offline Lite0 conversion really classifies photos; other sources load strictly."""

from __future__ import annotations

import functools
import pickle

import cv2
import numpy as np
import pytest
import safetensors.torch
import timm
import torch
from skimage import data as skdata

from busi_viewer.core.errors import BundleError
from busi_viewer.inference.architectures import ImageClassifier
from busi_viewer.inference.pretrained import (
    LITE0_MEAN,
    LITE0_STD,
    imagenet_classifier,
    lite0_imagenet_state_dict,
    load_imagenet_backbone,
)

CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug
PHOTOS = [("chelsea", CAT_CLASSES), ("coffee", COFFEE_CLASSES)]


def _imagenet_input(rgb: np.ndarray) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> (1, 3, 224, 224) float32: bicubic stretch to 224, mean = std = 0.5."""
    resized = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255.0
    normalised = (resized - np.array(LITE0_MEAN, np.float32)) / np.array(LITE0_STD, np.float32)
    return torch.from_numpy(normalised).permute(2, 0, 1).unsqueeze(0).contiguous()


def _top1(net: torch.nn.Module, photo: str) -> int:
    with torch.no_grad():
        return int(net(_imagenet_input(getattr(skdata, photo)())).argmax(dim=1))


@pytest.fixture(scope="module")
def lite0_imagenet() -> torch.nn.Module:
    return imagenet_classifier()


def test_lite0_conversion_loads_strictly_into_timm():
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    result = net.load_state_dict(lite0_imagenet_state_dict(), strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []


def test_lite0_package_source_fills_the_whole_backbone():
    model = ImageClassifier("tf_efficientnet_lite0", num_classes=3)
    head_before = model.head.fc.weight.detach().clone()
    report = load_imagenet_backbone(model)
    assert set(report.loaded) == set(model.backbone.state_dict())
    assert set(report.ignored) == {"classifier.weight", "classifier.bias"}
    assert torch.equal(model.backbone.conv_stem.weight, lite0_imagenet_state_dict()["conv_stem.weight"])
    assert torch.equal(model.head.fc.weight, head_before)
    assert "package" in report.summary()


@pytest.mark.parametrize(("photo", "accepted"), PHOTOS)
def test_lite0_classifies_natural_photos(lite0_imagenet, photo, accepted):
    assert _top1(lite0_imagenet, photo) in accepted


def test_random_weights_fail_the_photo_test():
    torch.manual_seed(0)
    random_net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    assert all(_top1(random_net, photo) not in accepted for photo, accepted in PHOTOS)


@functools.lru_cache(maxsize=1)  # VGG19 with its ImageNet head is ~575 MB: keep one architecture at a time
def _synthetic_imagenet_state(arch: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {k: v.contiguous() for k, v in timm.create_model(arch, pretrained=False).state_dict().items()}


def _write(state: dict[str, torch.Tensor], path, fmt: str):
    if fmt == "safetensors":
        safetensors.torch.save_file(state, path)
    elif fmt == "pth":
        torch.save(state, path)
    else:
        torch.save({fmt: state, "epoch": 3}, path)
    return path


@pytest.mark.parametrize(("arch", "fmt"), [
    pytest.param(arch, fmt, marks=[pytest.mark.slow] if arch == "vgg19" else [])
    for arch in ("efficientnet_b0", "resnet50", "vgg19") for fmt in ("safetensors", "pth")
])
def test_synthetic_imagenet_file_loads_into_backbone(tmp_path, arch, fmt):
    full = _synthetic_imagenet_state(arch)
    path = _write(full, tmp_path / f"{arch}-imagenet.{fmt}", fmt)
    try:
        model = ImageClassifier(arch, num_classes=3)
        report = load_imagenet_backbone(model, path)
    finally:
        path.unlink()  # pytest keeps recent tmp dirs; do not leave ~0.6 GB of VGG weights behind
    backbone = model.backbone.state_dict()
    assert set(report.loaded) == set(backbone)
    assert set(report.ignored) == set(full) - set(backbone)
    assert report.ignored and all(k.startswith(("classifier.", "fc.", "head.", "pre_logits.")) for k in report.ignored)
    first_weight = next(k for k in backbone if k.endswith("weight"))
    assert torch.equal(backbone[first_weight], full[first_weight])


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_wrapped_checkpoint_is_unwrapped(tmp_path, wrapper):
    model = ImageClassifier("efficientnet_b0", num_classes=2)
    full = _synthetic_imagenet_state("efficientnet_b0")
    report = load_imagenet_backbone(model, _write(full, tmp_path / "ckpt.pt", wrapper))
    assert torch.equal(model.backbone.conv_stem.weight, full["conv_stem.weight"])
    assert len(report.loaded) == len(model.backbone.state_dict())


@pytest.fixture
def b0_state() -> dict[str, torch.Tensor]:
    return dict(_synthetic_imagenet_state("efficientnet_b0"))


def test_shape_mismatch_is_reported_and_nothing_is_loaded(tmp_path, b0_state):
    b0_state["conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    model = ImageClassifier("efficientnet_b0", num_classes=3)
    before = model.backbone.bn1.weight.detach().clone()
    with pytest.raises(BundleError, match=r"shape mismatch.*conv_stem\.weight \(16, 3, 3, 3\) vs \(32, 3, 3, 3\)"):
        load_imagenet_backbone(model, _write(b0_state, tmp_path / "bad.safetensors", "safetensors"))
    assert torch.equal(model.backbone.bn1.weight, before)


def test_missing_and_unexpected_keys_are_reported(tmp_path, b0_state):
    del b0_state["bn2.running_var"]
    b0_state["adapter.weight"] = torch.zeros(3)
    model = ImageClassifier("efficientnet_b0", num_classes=3)
    with pytest.raises(BundleError, match=r"missing: bn2\.running_var.*unexpected tensor\(s\): adapter\.weight"):
        load_imagenet_backbone(model, _write(b0_state, tmp_path / "bad.pth", "pth"))


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = _write(lite0_imagenet_state_dict(), tmp_path / "lite0.safetensors", "safetensors")
    with pytest.raises(BundleError, match=r"do not fit the efficientnet_b0 backbone.*missing"):
        load_imagenet_backbone(ImageClassifier("efficientnet_b0", num_classes=3), path)


def test_bad_files_give_clear_errors(tmp_path):
    model = ImageClassifier("efficientnet_b0", num_classes=3)
    with pytest.raises(BundleError, match="does not exist"):
        load_imagenet_backbone(model, tmp_path / "absent.safetensors")
    (tmp_path / "w.npz").write_bytes(b"\0")
    with pytest.raises(BundleError, match="unsupported weights file type"):
        load_imagenet_backbone(model, tmp_path / "w.npz")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BundleError, match="not a readable safetensors file"):
        load_imagenet_backbone(model, tmp_path / "junk.safetensors")


class _Payload:
    """Unpickling this creates ``path``: proof that a loader ran code from the file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_pickled_code_in_a_pth_file_is_never_run(tmp_path):
    pickle.loads(pickle.dumps(_Payload(tmp_path / "payload-is-live")))
    assert (tmp_path / "payload-is-live").exists()
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"conv_stem.weight": _Payload(marker)}, evil)
    with pytest.raises(BundleError, match="not a loadable PyTorch weights file"):
        load_imagenet_backbone(ImageClassifier("efficientnet_b0", num_classes=3), evil)
    assert not marker.exists()


def test_hub_source_fails_cleanly_offline(monkeypatch):
    model = ImageClassifier("resnet50", num_classes=3)
    real_create = timm.create_model

    def offline_create(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co' to load this file")
        return real_create(name, pretrained=pretrained, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline_create)
    with pytest.raises(BundleError, match=r"could not download ImageNet weights for resnet50.*local \.safetensors"):
        load_imagenet_backbone(model, "hub")


def test_hub_source_loads_what_timm_downloads(monkeypatch):
    model = ImageClassifier("resnet50", num_classes=3)
    full = _synthetic_imagenet_state("resnet50")
    real_create = timm.create_model

    def fake_hub(name, pretrained=False, **kwargs):
        net = real_create(name, pretrained=False, **kwargs)
        if pretrained:
            net.load_state_dict(full)
        return net

    monkeypatch.setattr(timm, "create_model", fake_hub)
    report = load_imagenet_backbone(model, "hub")
    assert set(report.ignored) == {"fc.weight", "fc.bias"}
    assert torch.equal(model.backbone.conv1.weight, full["conv1.weight"])


@pytest.mark.parametrize("source", [None, "package"])
def test_package_source_is_lite0_only(source):
    with pytest.raises(BundleError, match=r"ImageNet weights for resnet50 are not obtainable offline.*weights file"):
        load_imagenet_backbone(ImageClassifier("resnet50", num_classes=3), source)
    with pytest.raises(BundleError, match="not obtainable offline"):
        imagenet_classifier("resnet50")
