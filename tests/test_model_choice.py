"""Several installed bundles: the viewer picks the one trained on the image's modality, lets the user switch,
and warns when a model sees an image of another modality."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtWidgets import QLabel

from busi_viewer.inference.catalogue import image_modality, installed_models, modality_warning, model_for
from tests.helpers.dicom import write_dicom
from tests.helpers.gui import open_window

WAIT_MS = 60_000
SHOTS = Path(os.environ["BUSI_SCREENSHOTS"]) if os.environ.get("BUSI_SCREENSHOTS") else None


@pytest.fixture(scope="session")
def mg_bundle(tmp_path_factory) -> Path:
    """A loadable two-class mammography bundle (random weights) with its ONNX export."""
    import torch

    from busi_viewer.inference.architectures import build_classifier
    from busi_viewer.inference.bundle import save_bundle
    from busi_viewer.inference.model_card import ModelCard, PreprocessSpec
    from busi_viewer.inference.onnx_export import export_onnx

    torch.manual_seed(1)
    card = ModelCard(name="test-mg", version="0.0.1", architecture="tf_efficientnet_lite0",
                     class_names=("normal", "abnormal"), modality="MG",
                     preprocess=PreprocessSpec(input_size=96, equalisation="clahe"))
    folder = tmp_path_factory.mktemp("mg") / "test-mg"
    save_bundle(folder, build_classifier("tf_efficientnet_lite0", 2), card)
    export_onnx(folder)
    return folder


@pytest.fixture
def resources(tmp_path, monkeypatch, tiny_bundle, mg_bundle) -> Path:
    root = tmp_path / "resources"
    shutil.copytree(tiny_bundle, root / "models" / "test-us")
    shutil.copytree(mg_bundle, root / "models" / "test-mg")
    (root / "models" / "not-a-bundle").mkdir()
    monkeypatch.setenv("BUSI_VIEWER_RESOURCES", str(root))
    return root


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    folder = tmp_path / "mixed"
    folder.mkdir()
    rng = np.random.default_rng(0)
    write_dicom(folder / "a_ultrasound.dcm", (rng.random((120, 160)) * 255).astype(np.uint8), Modality="US")
    write_dicom(folder / "b_mammogram.dcm", (rng.random((160, 120)) * 4095).astype(np.uint16), Modality="MG",
                BitsStored=12, ImageLaterality="L", ViewPosition="MLO")
    write_dicom(folder / "c_ultrasound.dcm", (rng.random((120, 160)) * 255).astype(np.uint8), Modality="US")
    return folder


def test_the_catalogue_reads_cards_and_matches_modalities(resources):
    models = installed_models()
    assert [m.card.name for m in models] == ["test-mg", "test-random"]  # the folder without a card is left out
    assert models[0].label == "test-mg 0.0.1 — mammography (normal, abnormal)"
    assert model_for(models, "MG").card.name == "test-mg" and model_for(models, "US").card.name == "test-random"
    assert image_modality("mg") == "MG" and image_modality("OT") is None and image_modality("RG") is None
    assert model_for(models, None) is None
    assert "trained on ultrasound images and this image is mammography" in modality_warning(models[1].card, "MG")
    assert modality_warning(models[1].card, "US") == "" and modality_warning(models[1].card, None) == ""


def _result_of(qtbot, window, name: str) -> None:
    qtbot.waitUntil(lambda: window.result is not None and window.result.path.name == name, timeout=WAIT_MS)


def _warning(window) -> QLabel:
    return window.result_panel.findChild(QLabel, "scope_warning")


def test_the_viewer_switches_to_the_model_of_each_images_modality(qtbot, resources, mixed_folder):
    window = open_window(qtbot, resources / "models" / "test-us")
    try:
        assert window.open_folder(mixed_folder)
        _result_of(qtbot, window, "a_ultrasound.dcm")
        assert window.model.card.name == "test-random" and window.result.prediction.class_names == (
            "benign", "malignant", "normal")
        window.go_to(1)  # the mammogram: the MG bundle loads and the image is classified again by it
        qtbot.waitUntil(lambda: window.model is not None and window.model.card is not None
                        and window.model.card.name == "test-mg", timeout=WAIT_MS)
        _result_of(qtbot, window, "b_mammogram.dcm")
        qtbot.waitUntil(lambda: window.result.prediction.class_names == ("normal", "abnormal"), timeout=WAIT_MS)
        assert not _warning(window).isVisible()
        assert "MG · L MLO · 120×160" in window.view.corner_text("top_right")  # laterality and view from DICOM
        checked = [a.text() for a in window.model_chooser.model_actions if a.isChecked()]
        assert checked == ["test-mg 0.0.1 — mammography (normal, abnormal)"]
        window.go_to(2)
        qtbot.waitUntil(lambda: window.model.card.name == "test-random", timeout=WAIT_MS)
        _result_of(qtbot, window, "c_ultrasound.dcm")
        qtbot.waitUntil(lambda: len(window.result.prediction.class_names) == 3, timeout=WAIT_MS)
    finally:
        window.close()


def test_a_hand_picked_model_stays_and_is_warned_about_outside_its_modality(qtbot, resources, mixed_folder):
    window = open_window(qtbot, resources / "models" / "test-us")
    try:
        assert window.open_folder(mixed_folder)
        _result_of(qtbot, window, "a_ultrasound.dcm")
        us_action = next(a for a in window.model_chooser.model_actions if "test-random" in a.text())
        us_action.trigger()  # chosen by hand: the automatic choice goes off
        assert not window.model_chooser.automatic
        window.go_to(1)
        _result_of(qtbot, window, "b_mammogram.dcm")
        assert window.model.card.name == "test-random"  # no switch
        warning = _warning(window)
        qtbot.waitUntil(warning.isVisible, timeout=WAIT_MS)
        assert "trained on ultrasound images and this image is mammography" in warning.text()
        if SHOTS is not None:
            SHOTS.mkdir(parents=True, exist_ok=True)
            window.grab().save(str(SHOTS / "model_outside_its_modality.png"))
        window.go_to(2)
        _result_of(qtbot, window, "c_ultrasound.dcm")
        qtbot.waitUntil(lambda: not warning.isVisible(), timeout=WAIT_MS)
    finally:
        window.close()


def test_a_model_given_from_outside_the_catalogue_keeps_the_images_of_its_modality(qtbot, resources, mixed_folder,
                                                                                  tiny_bundle, tmp_path):
    """A bundle given with --model but not installed (here a copy of test-us elsewhere) is an ultrasound model: an
    ultrasound image keeps it rather than switching to the installed one of that modality."""
    outside = tmp_path / "elsewhere" / "my-us"
    shutil.copytree(tiny_bundle, outside)
    window = open_window(qtbot, outside)
    try:
        assert window.open_folder(mixed_folder)
        _result_of(qtbot, window, "a_ultrasound.dcm")
        assert window.model.model_dir == outside and window.model_chooser.current == outside
        window.go_to(1)  # a mammogram still switches to the installed MG model
        qtbot.waitUntil(lambda: window.model is not None and window.model.card is not None
                        and window.model.card.name == "test-mg", timeout=WAIT_MS)
    finally:
        window.close()
