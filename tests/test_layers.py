"""The three layers import only downward: core (no Qt, no torch) <- inference (no Qt) <- gui.

Beside them: ``reports`` (PDFs with QtGui's writer: no widgets, no torch, nothing from gui) serves both the gui
and the headless cli, which may load it (and so Qt) only when a PDF is asked for.

Checked twice: statically over every import statement, and dynamically by importing every module of a layer
in a fresh interpreter and looking at what got loaded.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "busi_viewer"
QT = ("PySide6", "pyqtgraph", "PyQt5", "PyQt6", "shiboken6")
TORCH = ("torch", "torchvision", "timm")
FORBIDDEN = {
    "core": QT + TORCH + ("busi_viewer.inference", "busi_viewer.gui", "training"),
    "inference": QT + ("busi_viewer.gui", "training"),
    "cli": QT + ("busi_viewer.gui", "training"),
    "reports": ("PySide6.QtWidgets", "pyqtgraph", "PyQt5", "PyQt6") + TORCH
               + ("busi_viewer.inference", "busi_viewer.gui", "busi_viewer.cli", "training"),
}
# Imported inside functions, only for --pdf / --pdf-per-image.
LAZY = {"cli": ("busi_viewer.reports",)}


def _modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


def _imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_upward_or_qt_imports_in_source(layer):
    offenders = []
    for path in _modules(layer):
        for name in _imported_names(path):
            if any(name == ok or name.startswith(ok + ".") for ok in LAZY.get(layer, ())):
                continue
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[layer]):
                offenders.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("layer", ["core", "inference", "cli", "reports"])
def test_importing_a_layer_loads_no_forbidden_package(layer):
    modules = [
        "busi_viewer." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        for path in _modules(layer)
        if path.name != "__init__.py"
    ]
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out)
    bad = [m for m in loaded if any(m == b or m.startswith(b + ".") for b in FORBIDDEN[layer])]
    assert not bad, f"importing busi_viewer.{layer} loaded {bad[:10]}"


def test_the_layer_check_would_catch_a_qt_import(tmp_path):
    """The static check is not vacuous: it sees a Qt import when there is one."""
    sample = tmp_path / "sample.py"
    sample.write_text("from PySide6.QtWidgets import QWidget\nimport numpy\n", encoding="utf-8")
    assert "PySide6.QtWidgets" in _imported_names(sample)


# What the frozen app (built without torch) imports of the inference layer: torch stays out of all of it.
TORCH_FREE_INFERENCE = ("backend", "bundle_files", "cpu", "model_card", "onnx_predictor", "prediction",
                        "preprocessing")


def test_the_frozen_apps_inference_modules_import_without_torch():
    blocked = "import sys\nfor name in ('torch', 'torchvision', 'timm'):\n    sys.modules[name] = None\n"
    imports = "".join(f"import busi_viewer.inference.{name}\n" for name in TORCH_FREE_INFERENCE)
    result = subprocess.run([sys.executable, "-c", blocked + imports], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
