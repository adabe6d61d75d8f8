"""A card with ``test_time_flip`` is run as its numbers were measured: logits averaged over the image and its
mirror image, the heatmap the mean of the two Grad-CAMs (mirrored back), named as such on screen and in exports."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from busi_viewer.inference.architectures import build_classifier
from busi_viewer.inference.gradcam import fast_gradcam
from busi_viewer.inference.model_card import CARD_SCHEMA_VERSION, ModelCard, PreprocessSpec
from busi_viewer.inference.prediction import PredictorBase
from busi_viewer.inference.predictor import Predictor
from busi_viewer.inference.preprocessing import preprocess

SIZE = 64


def _predictors(temperature: float = 0.5) -> tuple[Predictor, Predictor]:
    torch.manual_seed(3)
    model = build_classifier("tf_efficientnet_lite0", 3).eval()
    with torch.no_grad():  # a head that separates the classes, so the two passes disagree visibly
        model.get_classifier().weight.mul_(40)
    card = ModelCard("tiny", "0", "tf_efficientnet_lite0", ("benign", "malignant", "normal"),
                     preprocess=PreprocessSpec(input_size=SIZE), calibration_temperature=temperature)
    return Predictor(model, card), Predictor(model, dataclasses.replace(card, test_time_flip=True))


def _image(seed: int) -> np.ndarray:
    rgb = (np.random.default_rng(seed).random((SIZE, SIZE, 3)) * 255).astype(np.uint8)
    rgb[8:24, 40:60] = 250  # off-centre, so the mirror image differs
    return rgb


def test_probabilities_are_those_of_the_mean_logits_of_image_and_mirror():
    plain, flipped = _predictors(temperature=0.5)
    for seed in range(4):
        rgb = _image(seed)
        x = torch.from_numpy(preprocess(rgb, plain.card.preprocess)[0])[None]
        with torch.no_grad():
            mean_logits = (plain.model(x) + plain.model(torch.flip(x, dims=[3]))) / 2
        expected = torch.softmax(mean_logits / 0.5, dim=1)[0].numpy()
        got = flipped.predict(rgb, explain=False)
        assert got.heatmap_raw is None  # not asked for, not computed
        np.testing.assert_allclose(got.logits, mean_logits[0].numpy(), atol=1e-4)
        np.testing.assert_allclose(got.probabilities, expected, atol=1e-5)
        assert got.predicted_index == int(expected.argmax())
    # and the plain card keeps the single pass
    np.testing.assert_allclose(plain.predict(_image(0), explain=False).logits,
                               plain.model(torch.from_numpy(preprocess(_image(0), plain.card.preprocess)[0])[None])
                               .detach()[0].numpy(), atol=1e-4)


def test_the_heatmap_is_the_mean_of_both_grad_cams_mirrored_back():
    plain, flipped = _predictors()
    rgb = _image(1)
    result = flipped.predict(rgb)
    target = result.predicted_index
    x = torch.from_numpy(preprocess(rgb, plain.card.preprocess)[0])[None]
    own = fast_gradcam(plain.model, x, target).maps[0]
    mirror = fast_gradcam(plain.model, torch.flip(x, dims=[3]), target).maps[0].flip(dims=[1])
    assert not torch.allclose(own, mirror)  # the averaging is visible
    geometry = preprocess(rgb, plain.card.preprocess)[1]
    expected = np.maximum(geometry.to_original(((own + mirror) / 2).numpy()), 0)
    np.testing.assert_allclose(result.heatmap_raw, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(flipped.explain_class(rgb, target), expected, rtol=1e-4, atol=1e-6)
    # a plain card explains any class with that class's own Grad-CAM of the image alone
    for other in range(3):
        alone = np.maximum(geometry.to_original(fast_gradcam(plain.model, x, other).maps[0].numpy()), 0)
        np.testing.assert_allclose(plain.explain_class(rgb, other), alone, rtol=1e-4, atol=1e-6)


def test_the_scope_features_stay_those_of_the_image_itself():
    plain, flipped = _predictors()
    rgbs = [_image(0), _image(1)]
    # what the head reads, by hand: the final feature map of each image (not its mirror) averaged over its cells
    x = torch.from_numpy(np.stack([preprocess(rgb, plain.card.preprocess)[0] for rgb in rgbs]))
    with torch.no_grad():
        expected = plain.model.forward_features(x).mean(dim=(2, 3)).numpy()
    for predictor in (plain, flipped):
        pooled = predictor.pooled_features(rgbs)
        assert pooled.shape == expected.shape == (2, plain.model.get_classifier().in_features)
        np.testing.assert_allclose(pooled, expected, rtol=1e-4, atol=1e-5)


def test_the_card_names_the_explanation_and_needs_an_app_that_knows_the_field():
    card = ModelCard("tiny", "0", "tf_efficientnet_lite0", ("benign", "malignant"))
    assert card.explanation_name() == "Grad-CAM" and not card.test_time_flip
    flipped = dataclasses.replace(card, test_time_flip=True)
    assert flipped.explanation_name() != "Grad-CAM" and "mirror" in flipped.explanation_name()
    data = json.loads(flipped.to_json())
    assert data["test_time_flip"] is True and data["schema_version"] == CARD_SCHEMA_VERSION >= 2
    assert ModelCard.from_json(flipped.to_json()) == flipped
    old = {k: v for k, v in json.loads(card.to_json()).items() if k != "test_time_flip"}
    old["schema_version"] = 1
    assert ModelCard.from_json(json.dumps(old)).test_time_flip is False


@pytest.mark.parametrize("bundle", ["busi-us", "mias-mg"])
def test_the_shipped_cards_run_as_their_numbers_were_measured(bundle):
    from busi_viewer.core.paths import resources_dir
    from training.config import load_config

    folder = resources_dir() / "models" / bundle
    card = ModelCard.from_json((folder / "model_card.json").read_text(encoding="utf-8"))
    assert card.test_time_flip == load_config(folder / "config.toml").eval.tta_hflip


def test_the_viewer_names_the_mirror_mean_in_the_heatmap_legend(qtbot, tiny_bundle, tmp_path):
    import shutil

    from PIL import Image

    from busi_viewer.inference.bundle_files import CARD_FILENAME, write_bundle_checksums
    from tests.helpers.gui import open_window

    bundle = tmp_path / "mirrored"
    shutil.copytree(tiny_bundle, bundle)
    card = ModelCard.from_json((bundle / CARD_FILENAME).read_text(encoding="utf-8"))
    (bundle / CARD_FILENAME).write_text(dataclasses.replace(card, test_time_flip=True).to_json(), encoding="utf-8")
    write_bundle_checksums(bundle, accept_changes=True)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(_image(2)).save(images / "case.png")
    window = open_window(qtbot, bundle)
    try:
        with qtbot.waitSignal(window.resultShown, timeout=60_000):
            window.open_folder(images)
        predicted = window.result.prediction.predicted_class
        assert window.view.colorbar.title == f"Grad-CAM, mean with mirror image: evidence for “{predicted}”"
        window.grab().save(str(tmp_path / "mirrored.png"))
    finally:
        window.close()


class _DoublePrecisionRuntime(PredictorBase):
    """A runtime that hands back float64 (a model run in double precision): logits (1, 0.5, 0) for every image,
    pooled features 0, 1, 2, ... per image, and a map of ones times the image's index (+ 1 for a mirror image)."""

    def __init__(self, test_time_flip: bool):
        self.card = ModelCard("double", "0", "tf_efficientnet_lite0", ("benign", "malignant", "normal"),
                              preprocess=PreprocessSpec(input_size=SIZE), test_time_flip=test_time_flip)

    def _run(self, batch, explain, choose):
        n = len(batch)
        logits = np.tile([1.0, 0.5, 0.0], (n, 1))
        maps = np.ones((n, 4, 4)) * np.arange(1, n + 1)[:, None, None] if explain else None
        return logits, np.arange(n * 2, dtype=np.float64).reshape(n, 2), maps

    def _class_maps(self, batch, targets):
        return np.ones((len(batch), 4, 4)) * np.arange(1, len(batch) + 1)[:, None, None]


@pytest.mark.parametrize("flip", [False, True])
def test_what_a_prediction_holds_is_float32_whatever_the_runtime_returns(flip):
    runtime = _DoublePrecisionRuntime(flip)
    images = [_image(1), _image(2)]
    for prediction in runtime.predict_batch(images):
        assert prediction.logits.dtype == prediction.probabilities.dtype == np.float32
        assert prediction.heatmap_raw.dtype == np.float32 and prediction.heatmap_raw.shape == (SIZE, SIZE)
        assert prediction.predicted_index == 0
    # with the mirror pass, image k's map is the mean of k + 1 and its mirror's n + k + 1 (n = 2 images)
    expected_maps = [2.0, 3.0] if flip else [1.0, 2.0]
    for prediction, value in zip(runtime.predict_batch(images), expected_maps):
        np.testing.assert_allclose(prediction.heatmap_raw, value, rtol=1e-6)
    pooled = runtime.pooled_features(images)
    assert pooled.dtype == np.float32 and pooled.tolist() == [[0.0, 1.0], [2.0, 3.0]]
    explained = runtime.explain_class(images[0], 2)
    assert explained.dtype == np.float32
    np.testing.assert_allclose(explained, 1.5 if flip else 1.0, rtol=1e-6)  # image 1 and its mirror 2, or 1
