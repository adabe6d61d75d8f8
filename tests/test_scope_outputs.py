"""An image the scope guard flags reads as "outside this model's scope" everywhere a user sees it: busi-predict's
columns and errors, the PDF report, the result panel and the thumbnail."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel

from busi_viewer.cli.predict import main as predict_main
from busi_viewer.core.loader import load_image
from busi_viewer.inference.bundle import load_bundle
from tests.helpers.gui import open_window
from tests.helpers.pdf import pdf_text
from busi_viewer.inference.scope import image_statistics
from tests.helpers.scope import guard_score_by_hand, guarded_copy, phantom_rgb, pooled_by_hand

WAIT_MS = 60_000
SHOTS = Path("/tmp/widget_shots")  # looked at by eye


@pytest.fixture
def folder(tmp_path) -> Path:
    cases = tmp_path / "cases"
    cases.mkdir()
    for k, label in enumerate(("benign", "malignant")):
        Image.fromarray(phantom_rgb(label, 70 + k, (100, 130))).save(cases / f"case{k}.png")
    return cases


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _expected_scores(bundle: Path, check, files: list[Path]) -> list[float]:
    loaded = load_bundle(bundle)
    rgbs = [load_image(f).rgb for f in files]
    pooled = pooled_by_hand(loaded.model, loaded.card, rgbs)
    statistics = np.stack([image_statistics(rgb) for rgb in rgbs])
    return list(np.maximum(guard_score_by_hand(check.features, pooled) / check.features.threshold,
                           guard_score_by_hand(check.image, statistics) / check.image.threshold))


@pytest.mark.parametrize(("flag_all", "verdict"), [(True, "no"), (False, "yes")])
def test_busi_predict_writes_in_scope_and_the_score(folder, tiny_bundle, tmp_path, flag_all, verdict):
    bundle, guard = guarded_copy(tiny_bundle, tmp_path, flag_all=flag_all)
    out = tmp_path / "out"
    assert predict_main([str(folder), "--model", str(bundle), "--out", str(out), "--pdf-per-image",
                         "--no-progress"]) == 0
    rows = _rows(out / "predictions.csv")
    assert [r["file"] for r in rows] == ["case0.png", "case1.png"]
    assert [r["in_scope"] for r in rows] == [verdict, verdict]
    expected = _expected_scores(bundle, guard, [folder / "case0.png", folder / "case1.png"])
    assert [float(r["scope_score"]) for r in rows] == pytest.approx(expected, rel=1e-3, abs=1e-9)
    errors = _rows(out / "errors.csv")
    reports = sorted((out / "reports").glob("*.pdf"))
    assert len(reports) == 2
    if verdict == "no":
        assert {r["file"] for r in errors} == {"case0.png", "case1.png"}
        assert all(r["reason"].startswith("Outside this model's scope") for r in errors)
        assert all("Outside this model's scope" in pdf_text(report) for report in reports)
    else:
        assert errors == [] and not any("scope" in pdf_text(report) for report in reports)


def test_a_bundle_without_a_guard_leaves_the_columns_empty(folder, tiny_bundle, tmp_path):
    out = tmp_path / "out"
    assert predict_main([str(folder), "--model", str(tiny_bundle), "--out", str(out), "--no-progress"]) == 0
    assert {(r["in_scope"], r["scope_score"]) for r in _rows(out / "predictions.csv")} == {("", "")}


def test_the_viewer_shows_an_out_of_scope_image_as_such(qtbot, folder, tiny_bundle, tmp_path):
    bundle, _ = guarded_copy(tiny_bundle, tmp_path, flag_all=True)
    window = open_window(qtbot, bundle)
    try:
        with qtbot.waitSignal(window.resultShown, timeout=WAIT_MS):
            assert window.open_folder(folder)
        panel = window.result_panel
        assert panel.findChild(QLabel, "predicted_label").text() == "Out of scope"
        warning = panel.findChild(QLabel, "scope_warning")
        assert warning.isVisible() and "unlike the ultrasound images it was trained on" in warning.text()
        assert window.thumbs[0].out_of_scope
        model = window.thumbnails.thumbnail_model()
        tip = model.data(model.index(0), Qt.ItemDataRole.ToolTipRole)
        assert f"outside its scope (most probable: {window.result.prediction.predicted_class})" in tip
        SHOTS.mkdir(parents=True, exist_ok=True)
        window.grab().save(str(SHOTS / "main_window_out_of_scope.png"))
    finally:
        window.close()
