"""Shared test fixtures. Tests never touch the real user's settings or data, and never need a network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
if "MUTANT_UNDER_TEST" in os.environ:
    # mutmut's fork server imports OpenCV once and forks a worker per mutant; OpenCV's thread pool does not survive
    # a fork (the worker hung in its first parallel call and was counted as a timeout), so it runs single-threaded.
    os.environ.setdefault("OPENCV_FOR_THREADS_NUM", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BUSI_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True, scope="session")
def _one_qapplication(qapp):
    """The widget QApplication exists before any test runs: headless PDF writing (busi-predict --pdf called
    in-process) would otherwise create a plain QGuiApplication, and a later widget test would abort."""
    return qapp


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Point every platformdirs location at a throw-away folder."""
    monkeypatch.setenv("BUSI_VIEWER_HOME", str(tmp_path_factory.mktemp("busi-home")))


@pytest.fixture
def home_is_a_file(tmp_path, monkeypatch) -> Path:
    """BUSI_VIEWER_HOME naming a regular file, so no user folder can be made under it (even as root, which a
    read-only folder would not stop), and temporary folders made in ``tmp_path / "tmp"``. Returns the file."""
    import tempfile

    home = tmp_path / "home-is-a-file"
    home.write_text("not a folder")
    monkeypatch.setenv("BUSI_VIEWER_HOME", str(home))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return home


def _shared(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent (set BUSI_SHARED_DATA to where ../shared/data lives)")
    return path


@pytest.fixture
def dicom_dir() -> Path:
    """../shared/data/dicom (real DICOM test files); skips when absent."""
    return _shared("dicom")


@pytest.fixture
def busi_dir() -> Path:
    """../shared/data/busi (the BUSI dataset); skips when absent."""
    return _shared("busi")


@pytest.fixture
def mias_dir() -> Path:
    """../shared/data/mini-mias; skips when absent."""
    return _shared("mini-mias")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A real, loadable model bundle with random weights and its ONNX export (tests only; never shipped)."""
    import torch

    from busi_viewer.core.labels import CLASS_NAMES
    from busi_viewer.inference.architectures import build_classifier
    from busi_viewer.inference.bundle import save_bundle
    from busi_viewer.inference.model_card import ModelCard, PreprocessSpec
    from busi_viewer.inference.onnx_export import export_onnx

    torch.manual_seed(0)
    model = build_classifier("tf_efficientnet_lite0", len(CLASS_NAMES))
    card = ModelCard(
        name="test-random", version="0.0.1", architecture="tf_efficientnet_lite0", class_names=CLASS_NAMES,
        preprocess=PreprocessSpec(input_size=128), protocol="random weights for tests", low_confidence_below=0.5,
    )
    folder = tmp_path_factory.mktemp("bundles") / "tiny"
    save_bundle(folder, model, card)
    export_onnx(folder)  # what the viewer runs on the CPU, as the frozen app's bundles carry it
    return folder


# The calibrated test bundle: its head ignores the image (zero weights), so its raw logits are the bias below for
# every input, and every number the user sees can be worked out by hand (see test_calibrated_bundle.py).
CALIBRATED_LOGITS = {"benign": 1.0, "malignant": 0.5, "normal": 0.0}
CALIBRATED_TEMPERATURE = 0.5
CALIBRATED_THRESHOLD = ("malignant", 0.2)
CALIBRATED_LOW_CONFIDENCE_BELOW = 0.7


@pytest.fixture(scope="session")
def calibrated_bundle(tmp_path_factory) -> Path:
    """A loadable bundle (with ONNX export) whose logits are :data:`CALIBRATED_LOGITS` for any image, with a
    calibration temperature != 1, a malignant operating threshold and a low-confidence bound."""
    import torch

    from busi_viewer.core.labels import CLASS_NAMES
    from busi_viewer.inference.architectures import build_classifier
    from busi_viewer.inference.bundle import save_bundle
    from busi_viewer.inference.model_card import ModelCard, PreprocessSpec
    from busi_viewer.inference.onnx_export import export_onnx

    torch.manual_seed(0)
    model = build_classifier("tf_efficientnet_lite0", len(CLASS_NAMES))
    head = model.get_classifier()
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([CALIBRATED_LOGITS[name] for name in CLASS_NAMES]))
    card = ModelCard(
        name="test-calibrated", version="0.0.1", architecture="tf_efficientnet_lite0", class_names=CLASS_NAMES,
        preprocess=PreprocessSpec(input_size=128), protocol="fixed logits for tests",
        calibration_temperature=CALIBRATED_TEMPERATURE, thresholds=dict([CALIBRATED_THRESHOLD]),
        low_confidence_below=CALIBRATED_LOW_CONFIDENCE_BELOW,
    )
    folder = tmp_path_factory.mktemp("bundles") / "calibrated"
    save_bundle(folder, model, card)
    export_onnx(folder)
    return folder
