"""The exact fast Grad-CAM must equal the autograd reference, for every supported architecture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from busi_viewer.inference.architectures import (
    SUPPORTED_ARCHITECTURES,
    build_classifier,
)
from busi_viewer.inference.gradcam import (
    fast_gradcam,
    final_feature_module,
    reference_gradcam,
)
from busi_viewer.inference.prediction import gap_linear_gradcam, normalise_per_image

TOLERANCE = 1e-5


def _randomised_model(architecture: str, seed: int = 0) -> torch.nn.Module:
    """A classifier with non-trivial BatchNorm statistics so the maps are not flat."""
    torch.manual_seed(seed)
    model = build_classifier(architecture, num_classes=3)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    return model.eval()


def _input(size: int = 96, batch: int = 2, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=generator)


@pytest.mark.parametrize("architecture", SUPPORTED_ARCHITECTURES)
@pytest.mark.parametrize("frozen", [False, True], ids=["trainable", "frozen"])
def test_fast_gradcam_equals_autograd_reference(architecture, frozen):
    model = _randomised_model(architecture)
    if frozen:
        for parameter in model.parameters():
            parameter.requires_grad_(False)
    x = _input()
    peaks = []
    for target in (0, 1, 2):
        fast = fast_gradcam(model, x, targets=target)
        reference = reference_gradcam(model, x, targets=target)
        torch.testing.assert_close(fast.logits, reference.logits, rtol=1e-5, atol=1e-5)
        assert fast.maps.shape == reference.maps.shape == (2, 3, 3)
        fast_norm = normalise_per_image(fast.maps.numpy())
        ref_norm = normalise_per_image(reference.maps.numpy())
        assert np.abs(fast_norm - ref_norm).max() <= TOLERANCE
        peaks.append(float(fast.maps.max()))
    # The maps must carry information, otherwise the comparison proves nothing.
    assert max(peaks) > 0


def test_reference_gradcam_on_an_earlier_layer_differs_and_has_its_grid():
    model = _randomised_model("resnet50")
    x = _input(size=64, batch=1)
    earlier = reference_gradcam(model, x, target_layer=model.backbone.layer3, targets=0)
    assert earlier.maps.shape == (1, 4, 4)  # layer3 has stride 16


def test_final_feature_module_is_found_without_layer_names():
    for architecture in SUPPORTED_ARCHITECTURES:
        model = _randomised_model(architecture)
        module = final_feature_module(model)
        x = _input(size=64, batch=1)
        seen = {}
        handle = module.register_forward_hook(lambda _m, _i, out: seen.setdefault("out", out))
        with torch.no_grad():
            expected = model.forward_features(x)
        handle.remove()
        torch.testing.assert_close(seen["out"], expected)


def test_default_target_is_the_argmax_class():
    model = _randomised_model("tf_efficientnet_lite0")
    x = _input()
    output = fast_gradcam(model, x)
    assert torch.equal(output.targets, output.logits.argmax(dim=1))


def test_maps_depend_on_the_explained_class():
    model = _randomised_model("tf_efficientnet_lite0")
    x = _input(size=128, batch=1)
    maps = [normalise_per_image(fast_gradcam(model, x, targets=k).maps.numpy()) for k in range(3)]
    assert not np.allclose(maps[0], maps[1]) or not np.allclose(maps[1], maps[2])


def test_normalise_per_image_keeps_all_zero_maps_zero():
    maps = np.zeros((2, 4, 4), dtype=np.float32)
    maps[1, 2, 3] = 5.0
    out = normalise_per_image(maps)
    assert out[0].max() == 0
    assert out[1].max() == 1.0 and out[1].sum() == 1.0


def test_normalise_per_image_scales_each_map_by_its_own_maximum():
    maps = np.zeros((2, 3, 3), dtype=np.float64)  # float64 in, float32 out (what the viewer's heatmap promises)
    maps[0, 0, 0], maps[0, 1, 1] = 2.0, 1.0
    maps[1, 2, 2], maps[1, 0, 1] = 8.0, 2.0
    out = normalise_per_image(maps)
    assert out.dtype == np.float32
    assert (out[0, 0, 0], out[0, 1, 1]) == (1.0, 0.5)  # 1/2: its own peak, not the batch's 8
    assert (out[1, 2, 2], out[1, 0, 1]) == (1.0, 0.25)
    np.testing.assert_array_equal(normalise_per_image(maps[1]), out[1])  # one (h, w) map alike


def test_gap_linear_gradcam_in_numpy_by_hand():
    """The ONNX backend's closed form: relu(sum_c W[t, c] A[c]) / (h w) per image, for the class asked of each."""
    weight = np.array([[1.0, -2.0], [0.5, 3.0]], dtype=np.float32)  # (K=2, C=2)
    features = np.zeros((2, 2, 2, 3), dtype=np.float32)  # (B=2, C=2, h=2, w=3)
    features[0, 0] = [[1, 2, 0], [0, 4, 1]]
    features[0, 1] = [[0, 1, 1], [2, 0, 0]]
    features[1, 0] = [[2, 0, 0], [0, 0, 6]]
    features[1, 1] = [[1, 1, 0], [0, 0, 1]]
    maps = gap_linear_gradcam(weight, features, [0, 1])
    # image 0, class 0: A0 - 2 A1 = [[1, 0, -2], [-4, 4, 1]] -> relu, / 6
    expected0 = np.array([[1, 0, 0], [0, 4, 1]], dtype=np.float32) / 6
    # image 1, class 1: 0.5 A0 + 3 A1 = [[4, 3, 0], [0, 0, 6]], / 6
    expected1 = np.array([[4, 3, 0], [0, 0, 6]], dtype=np.float32) / 6
    assert maps.dtype == np.float32 and maps.shape == (2, 2, 3)
    np.testing.assert_allclose(maps[0], expected0, rtol=1e-6)
    np.testing.assert_allclose(maps[1], expected1, rtol=1e-6)


def test_gap_linear_gradcam_is_float32_whatever_the_runtime_hands_it_and_takes_an_empty_batch():
    # float64 weights and features (a model run in double precision): the same maps, as float32
    weight = np.array([[1.0, -2.0], [0.5, 3.0]])
    features = np.ones((1, 2, 2, 2))  # class 1: 0.5 + 3 = 3.5 everywhere, / 4
    for w, f in ((weight, features), (weight.astype(np.float32), features), (weight, features.astype(np.float32))):
        maps = gap_linear_gradcam(w, f, [1])
        assert maps.dtype == np.float32
        np.testing.assert_allclose(maps, np.full((1, 2, 2), 3.5 / 4), rtol=1e-6)
    empty = gap_linear_gradcam(weight, np.zeros((0, 2, 5, 3), np.float32), [])  # no image: no map, no error
    assert empty.shape == (0, 5, 3) and empty.dtype == np.float32
