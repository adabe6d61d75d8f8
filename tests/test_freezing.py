"""Selective freezing stops gradients and batch-norm updates for exactly the intended parameters."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from busi_viewer.inference.architectures import SUPPORTED_ARCHITECTURES, build_classifier
from busi_viewer.inference.gradcam import fast_gradcam, reference_gradcam
from training.freezing import backbone_stages, freeze_backbone, freezing_plan, stages_to_freeze

RATIOS = (0.0, 0.25, 0.5, 0.75, 1.0)
EXPECTED_STAGES = {"tf_efficientnet_lite0": 8, "tf_efficientnet_lite1": 8, "tf_efficientnet_lite2": 8,
                   "efficientnet_b0": 8, "resnet50": 5, "vgg19": 16}


def test_ratios_round_half_up_to_whole_stages():
    assert [stages_to_freeze(r, 8) for r in RATIOS] == [0, 2, 4, 6, 8]
    assert [stages_to_freeze(r, 5) for r in RATIOS] == [0, 1, 3, 4, 5]  # 1.25 -> 1, 2.5 -> 3, 3.75 -> 4
    assert [stages_to_freeze(r, 16) for r in RATIOS] == [0, 4, 8, 12, 16]
    with pytest.raises(ValueError):
        stages_to_freeze(1.5, 8)


def _batchnorm_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: buffer.clone() for name, buffer in model.named_buffers() if "running_" in name}


@pytest.mark.slow
@pytest.mark.parametrize("architecture", SUPPORTED_ARCHITECTURES)
@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_one_training_step_moves_exactly_the_unfrozen_parameters(architecture, ratio):
    torch.manual_seed(0)
    model = build_classifier(architecture, 3)
    stages = backbone_stages(model)
    assert len(stages) == EXPECTED_STAGES[architecture]
    keys_before = list(model.state_dict())
    plan = freeze_backbone(model, ratio)
    assert list(model.state_dict()) == keys_before  # frozen batch norms save and load like any other
    frozen = {f"backbone.{name}" for stage in stages[: plan.frozen_stages] for name in stage}
    assert plan.frozen_stages == stages_to_freeze(ratio, len(stages)) and frozen
    assert plan.frozen_parameters == sum(p.numel() for n, p in model.named_parameters() if n in frozen)

    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    statistics = _batchnorm_state(model)
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 64, 64)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    optimiser.step()

    for name, parameter in model.named_parameters():
        moved = not torch.equal(parameter.detach(), before[name])
        if name in frozen:
            assert parameter.grad is None and not moved, name
        elif parameter.grad is not None and parameter.grad.abs().sum() > 0:
            assert moved, name
    assert not torch.equal(model.head.fc.weight.detach(), before["head.fc.weight"])  # the head always learns
    for name, value in _batchnorm_state(model).items():
        module_name = name.rsplit(".", 1)[0]
        in_frozen_stage = f"{module_name}.weight" in frozen
        assert torch.equal(value, statistics[name]) == in_frozen_stage, name


def test_the_plan_reports_parameters_per_ratio():
    model = build_classifier("resnet50", 2)
    plans = [freezing_plan(model, r) for r in RATIOS]
    assert [p.frozen_stages for p in plans] == [0, 1, 3, 4, 5]
    assert plans[0].frozen_parameters == 0
    assert plans[-1].frozen_parameters == plans[-1].backbone_parameters
    fractions = [p.frozen_fraction_of_backbone for p in plans]
    assert fractions == sorted(fractions) and 0 < fractions[1] < 0.01  # ResNet's stem is tiny
    assert all(p.total_parameters == p.backbone_parameters + 2 * 2048 + 2 for p in plans)


def test_frozen_batch_norms_stay_in_eval_mode_and_survive_copying():
    model = build_classifier("tf_efficientnet_lite0", 3)
    freeze_backbone(model, 0.5)
    model.train()
    frozen_bn = model.backbone.bn1
    assert not frozen_bn.training and model.backbone.bn2.training
    clone = copy.deepcopy(model)
    clone.train()
    assert not clone.backbone.bn1.training
    model.eval()
    model.train()
    assert not model.backbone.bn1.training


def test_gradcam_reference_works_and_matches_the_closed_form_with_every_layer_frozen():
    torch.manual_seed(0)
    model = build_classifier("tf_efficientnet_lite0", 3)
    freeze_backbone(model, 1.0)
    for parameter in model.head.parameters():
        parameter.requires_grad_(False)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    reference = reference_gradcam(model, x, targets=[0, 2])
    fast = fast_gradcam(model, x, targets=[0, 2])
    assert torch.allclose(reference.maps, fast.maps, atol=1e-5, rtol=1e-4)
