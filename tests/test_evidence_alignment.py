"""The evidence-alignment term (issue #19): its value by hand, what it ignores, that it moves a map's maximum onto
the lesion, that masks travel with their image through augmentation, and that a run trains with it end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from busi_viewer.core.phantoms import write_phantom_dataset
from busi_viewer.inference.architectures import build_classifier
from training.config import apply_overrides, config_hash, load_config
from training.augment import augment_image, augment_pair
from training.evidence import EvidenceAlignedLoss, evidence_alignment, lesion_classes


def _one_channel_map(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 2, 2)


def _top_left_mask(covered_columns: int = 2) -> torch.Tensor:
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)  # the input grid: each feature cell is a 2 x 2 block
    mask[0, :2, :covered_columns] = True
    return mask


def test_value_by_hand():
    # Map [3, 1, 1, 1]: mean 1.5, sample std 1, standardised [1.5, -0.5, -0.5, -0.5]; sharpness 2 gives logits
    # [3, -1, -1, -1], so the mass on the top-left cell is e^3 / (e^3 + 3 e^-1) and the loss log(1 + 3 e^-4).
    loss = evidence_alignment(_one_channel_map([3, 1, 1, 1]), torch.ones(1, 1), _top_left_mask(), sharpness=2.0)
    assert loss.item() == pytest.approx(math.log(1 + 3 * math.exp(-4)), rel=1e-5)
    # A lesion covering half of that cell counts half of its mass: log 2 more.
    half = evidence_alignment(_one_channel_map([3, 1, 1, 1]), torch.ones(1, 1), _top_left_mask(1), sharpness=2.0)
    assert half.item() == pytest.approx(math.log(2) + math.log(1 + 3 * math.exp(-4)), rel=1e-5)
    # The class's weight sets the map's sign: evidence against the class there is far from the lesion.
    negative = evidence_alignment(_one_channel_map([3, 1, 1, 1]), -torch.ones(1, 1), _top_left_mask(), sharpness=2.0)
    assert negative.item() == pytest.approx(-math.log(math.exp(-3) / (math.exp(-3) + 3 * math.exp(1))), rel=1e-5)


def test_images_without_a_lesion_add_nothing():
    maps = torch.cat([_one_channel_map([3, 1, 1, 1]), _one_channel_map([0, 9, 0, 0])])
    masks = torch.cat([_top_left_mask(), torch.zeros(1, 4, 4, dtype=torch.bool)])
    alone = evidence_alignment(maps[:1], torch.ones(1, 1), masks[:1])
    assert evidence_alignment(maps, torch.ones(1, 1), masks).item() == pytest.approx(alone.item())
    none = evidence_alignment(maps.requires_grad_(), torch.ones(1, 1), torch.zeros(2, 4, 4, dtype=torch.bool))
    assert none.item() == 0.0 and none.requires_grad


def test_minimising_it_moves_the_map_s_maximum_onto_the_lesion():
    torch.manual_seed(0)
    feature_map = torch.randn(1, 8, 7, 7)
    feature_map[0, :, 1, 1] += 3.0  # the maximum starts far from the lesion
    feature_map.requires_grad_()
    weight = torch.randn(1, 8)
    mask = torch.zeros(1, 224, 224, dtype=torch.bool)
    mask[0, 160:192, 96:128] = True  # exactly the feature cell (5, 3)
    optimiser = torch.optim.SGD([feature_map], lr=0.5)
    before = evidence_alignment(feature_map, weight, mask).item()
    for _ in range(50):
        optimiser.zero_grad()
        evidence_alignment(feature_map, weight, mask).backward()
        optimiser.step()
    cam = torch.einsum("lc,bchw->bhw", weight, feature_map.detach())[0]
    assert divmod(int(cam.argmax()), 7) == (5, 3)
    assert evidence_alignment(feature_map, weight, mask).item() < before / 4


def test_the_loss_adds_the_term_only_while_training_and_leaves_the_weights_alone():
    torch.manual_seed(0)
    model = build_classifier("tf_efficientnet_lite0", 3).eval()
    keys = list(model.state_dict())
    ce = torch.nn.CrossEntropyLoss()
    loss_fn = EvidenceAlignedLoss(ce, model, [0, 1], weight=0.5, sharpness=2.0)
    assert list(model.state_dict()) == keys  # finding the feature map's module adds no second name
    x, labels = torch.randn(2, 3, 64, 64), torch.tensor([0, 2])
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 8:24, 40:56] = True
    logits = model(x)
    expected_term = evidence_alignment(model.forward_features(x), model.get_classifier().weight[[0, 1]], masks)
    total = loss_fn(logits, (labels, masks))
    assert total.item() == pytest.approx(ce(logits, labels).item() + 0.5 * expected_term.item(), rel=1e-5)
    assert expected_term.item() > 0
    with torch.no_grad():  # validation: classification only, so the best epoch is chosen by it
        logits = model(x)
        assert loss_fn(logits, (labels, masks)).item() == pytest.approx(ce(logits, labels).item(), rel=1e-6)
    assert loss_fn(model(x), labels).item() == pytest.approx(ce(logits, labels).item(), rel=1e-5)
    loss_fn.remove()


def test_lesion_classes_leave_out_normal_only():
    assert lesion_classes(("benign", "malignant", "normal")) == [0, 1]
    assert lesion_classes(("normal", "abnormal")) == [1]
    assert lesion_classes(("benign", "malignant")) == [0, 1]


def test_the_mask_moves_with_its_image_and_the_image_stream_is_unchanged():
    config = apply_overrides(load_config("busi_busbra"), ["augment.hflip_p=0.5", "augment.vflip_p=0.5",
                                                          "augment.rotation_deg=30", "augment.zoom=0.2"])
    image = np.full((64, 64, 3), 20, np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[10:30, 36:58] = True  # off-centre, so a missed flip or warp shows
    image[mask] = 230
    for seed in range(12):
        moved_image, moved_mask = augment_pair(image, mask, config.augment, np.random.default_rng(seed))
        assert np.array_equal(moved_image, augment_image(image, config.augment, np.random.default_rng(seed)))
        assert moved_mask.dtype == bool and moved_mask.shape == mask.shape
        bright = moved_image.mean(axis=2) > 125
        agreement = (bright & moved_mask).sum() / max((bright | moved_mask).sum(), 1)
        assert agreement > 0.8, seed


def test_the_term_is_off_by_default_and_leaves_old_recipes_their_hash():
    config = load_config("busi_busbra")
    assert config.loss.evidence_weight == 0
    on = apply_overrides(config, ["loss.evidence_weight=0.5"])
    assert config_hash(on) != config_hash(config)
    with pytest.raises(ValueError, match="evidence_weight"):
        apply_overrides(config, ["loss.evidence_weight=-1"])


def test_a_run_trains_with_the_term_end_to_end(tmp_path, monkeypatch):
    from training.cli import main as train_main

    data = tmp_path / "busi"
    write_phantom_dataset(data, {"benign": 6, "malignant": 6, "normal": 6}, seed=3, size=(80, 96))
    monkeypatch.setenv("BUSI_VIEWER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BUSI_AUDIT", str(tmp_path / "no-audit"))
    out = tmp_path / "run"
    assert train_main(["fit", "--config", "busi_smoke", "--set", "split.strategy=stratified_random",
                       "--set", "train.max_epochs=1", "--set", "loss.evidence_weight=1.0", "--no-progress",
                       "--data", str(data), "--out", str(out)]) == 0
    assert load_config(out / "config.toml").loss.evidence_weight == 1.0
    train_loss = float((out / "epochs.csv").read_text().splitlines()[1].split(",")[1])
    assert math.isfinite(train_loss) and train_loss > 0
