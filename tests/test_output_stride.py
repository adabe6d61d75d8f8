"""A finer explanation grid from the same weights (issue #19): output stride 16 dilates the last downsampling
stage. The fast Grad-CAM stays exact there, a bundle records and rebuilds it, and its ONNX export keeps parity."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from busi_viewer.core.errors import BundleError
from busi_viewer.core.labels import CLASS_NAMES
from busi_viewer.inference.architectures import build_classifier
from busi_viewer.inference.bundle import load_bundle, save_bundle
from busi_viewer.inference.bundle_files import CARD_FILENAME, write_bundle_checksums
from busi_viewer.inference.gradcam import fast_gradcam, reference_gradcam
from busi_viewer.inference.model_card import ModelCard, PreprocessSpec
from busi_viewer.inference.onnx_export import PARITY_TOLERANCE, export_onnx
from training.config import apply_overrides, load_config


@pytest.mark.parametrize("architecture", ["tf_efficientnet_lite0", "resnet50"])
def test_stride_16_doubles_the_grid_and_fast_grad_cam_stays_exact(architecture):
    torch.manual_seed(0)
    coarse = build_classifier(architecture, 3).eval()
    fine = build_classifier(architecture, 3, output_stride=16).eval()
    fine.load_state_dict(coarse.state_dict())  # the same weights: only the last stage's stride changes
    x = torch.randn(2, 3, 96, 96)
    assert coarse.forward_features(x).shape[-2:] == (3, 3)
    assert fine.forward_features(x).shape[-2:] == (6, 6)
    fast, reference = fast_gradcam(fine, x, 1), reference_gradcam(fine, x, targets=1)
    torch.testing.assert_close(fast.maps, reference.maps, rtol=1e-4, atol=1e-6)
    assert float(fast.maps.max()) > 0


def test_strides_that_timm_cannot_build_are_refused():
    with pytest.raises(ValueError, match="output stride 8"):
        build_classifier("tf_efficientnet_lite0", 3, output_stride=8)
    with pytest.raises(ValueError, match="vgg19"):
        build_classifier("vgg19", 3, output_stride=16)
    config = load_config("busi_busbra")
    assert config.model.output_stride == 32
    with pytest.raises(ValueError, match="output_stride"):
        apply_overrides(config, ["model.output_stride=8"])


def test_a_bundle_rebuilds_its_stride_and_the_onnx_export_keeps_parity(tmp_path):
    torch.manual_seed(1)
    model = build_classifier("tf_efficientnet_lite0", len(CLASS_NAMES), output_stride=16).eval()
    card = ModelCard(name="fine", version="0", architecture="tf_efficientnet_lite0", class_names=CLASS_NAMES,
                     preprocess=PreprocessSpec(input_size=96), output_stride=16, test_time_flip=True)
    save_bundle(tmp_path / "fine", model, card)
    loaded = load_bundle(tmp_path / "fine")
    assert loaded.card.output_stride == 16 and loaded.model.output_stride == 16
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        np.testing.assert_allclose(loaded.model(x).numpy(), model(x).numpy(), atol=1e-5)
    record = export_onnx(tmp_path / "fine")
    assert record.max_abs_difference_probabilities <= PARITY_TOLERANCE
    assert record.max_abs_difference_maps <= PARITY_TOLERANCE


def test_a_card_whose_stride_does_not_fit_its_architecture_is_a_bundle_error(tmp_path):
    model = build_classifier("tf_efficientnet_lite0", len(CLASS_NAMES)).eval()
    card = ModelCard(name="odd", version="0", architecture="tf_efficientnet_lite0", class_names=CLASS_NAMES,
                     preprocess=PreprocessSpec(input_size=64))
    saved = save_bundle(tmp_path / "odd", model, card)
    (tmp_path / "odd" / CARD_FILENAME).write_text(dataclasses.replace(saved, output_stride=8).to_json())
    write_bundle_checksums(tmp_path / "odd", accept_changes=True)
    with pytest.raises(BundleError, match="output stride 8"):
        load_bundle(tmp_path / "odd")


def test_the_shipped_models_heatmap_is_grad_cam_by_the_definition():
    """Whatever stride and weights ship, the viewer's fast map equals autograd Grad-CAM on the shipped model, on a
    grid of input size / output stride cells (busi-us 0.3.2: 224 / 16 = 14)."""
    from busi_viewer.core.paths import resources_dir

    folder = resources_dir() / "models" / "busi-us"
    if not (folder / "weights.safetensors").is_file():
        pytest.skip("the shipped bundle busi-us is not present")
    loaded = load_bundle(folder)
    size, stride = loaded.card.preprocess.input_size, loaded.card.output_stride
    torch.manual_seed(2)
    x = torch.rand(1, 3, size, size) * 2 - 1
    peaks = []
    for target in range(len(loaded.card.class_names)):
        fast, reference = fast_gradcam(loaded.model, x, target), reference_gradcam(loaded.model, x, targets=target)
        assert fast.maps.shape[-2:] == (size // stride, size // stride)
        torch.testing.assert_close(fast.maps, reference.maps, rtol=1e-4, atol=1e-6)
        peaks.append(float(fast.maps.max()))
    assert max(peaks) > 0  # not a comparison of two empty maps
