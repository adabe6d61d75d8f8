"""The viewer's faster model copy: batch norms folded, channels-last, verified, the original left alone."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from busi_viewer.inference.architectures import build_classifier
from busi_viewer.inference.optimise import fold_batch_norms, optimised_copy

SHIPPED = Path(__file__).resolve().parents[1] / "resources" / "models" / "busi-us"


def _randomise_batch_norms(model: nn.Module, seed: int = 0) -> None:
    """Trained-looking statistics: with the defaults (mean 0, var 1, weight 1, bias 0) a fold changes nothing."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)


def test_folded_lite0_gives_the_same_outputs_and_leaves_the_original_alone():
    torch.manual_seed(0)
    model = build_classifier("tf_efficientnet_lite0", 3).eval()
    _randomise_batch_norms(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimised = optimised_copy(model)
    assert optimised.folded == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 40
    assert not any(isinstance(m, nn.BatchNorm2d) for m in optimised.model.modules())
    x = torch.rand(3, 3, 96, 96)
    with torch.inference_mode():
        expected_features = model.forward_features(x)
        features = optimised.model.forward_features(x.contiguous(memory_format=optimised.memory_format))
        expected, got = model(x), optimised.model(x.contiguous(memory_format=optimised.memory_format))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    # What Grad-CAM weighs. Float32 rounding of 16 folded blocks reaches ~2e-4 on features up to 6 (ReLU6) with
    # timm 1.0.31 and torch 2.14; a wrong fold is off by 0.1 or more.
    torch.testing.assert_close(features, expected_features, atol=5e-4, rtol=1e-4)
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_plain_batch_norm_after_a_convolution_folds_to_identity():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU()).eval()
    _randomise_batch_norms(model)
    reference = [m for m in model]
    optimised = optimised_copy(model)
    assert optimised.folded == 1 and isinstance(optimised.model[1], nn.Identity)
    x = torch.rand(2, 3, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(optimised.model(x), model(x), atol=1e-5, rtol=1e-5)
    assert [m for m in model] == reference  # the caller's modules are still there


class _NormFirst(nn.Module):
    """Registered conv-then-norm, but runs the norm first: folding by registration order would be wrong."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.norm = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.conv(self.norm(x))


def test_a_fold_that_changes_the_outputs_is_refused():
    model = _NormFirst().eval()
    _randomise_batch_norms(model, seed=3)
    assert fold_batch_norms(_NormFirst().eval()) == 1  # the registration order alone would fold it
    optimised = optimised_copy(model)
    assert optimised.folded == 0 and isinstance(optimised.model.norm, nn.BatchNorm2d)
    x = torch.rand(2, 3, 8, 8)
    with torch.inference_mode():
        torch.testing.assert_close(optimised.model(x), model(x))


@pytest.mark.skipif(not (SHIPPED / "weights.safetensors").is_file(), reason="the shipped bundle is not present")
def test_the_viewer_predictor_agrees_with_the_plain_one_on_the_shipped_model():
    from busi_viewer.inference.bundle import load_bundle
    from busi_viewer.inference.predictor import Predictor

    bundle = load_bundle(SHIPPED, torch.device("cpu"))
    plain = Predictor(bundle.model, bundle.card)
    fast = Predictor(bundle.model, bundle.card, optimise=True)
    assert fast.model is not plain.model
    rng = np.random.default_rng(0)
    for shape in ((470, 560, 3), (300, 200, 3)):
        image = rng.integers(0, 256, size=shape, dtype=np.uint8)
        a, b = plain.predict(image), fast.predict(image)
        np.testing.assert_allclose(b.probabilities, a.probabilities, atol=1e-4)
        assert b.predicted_index == a.predicted_index
        np.testing.assert_allclose(b.heatmap, a.heatmap, atol=1e-3)
