"""cv-summary joins the folds of one recipe, even when a field added since (export-only) sits in some configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.config import apply_overrides, load_config, to_toml
from training.cv import CvSummaryError, cv_markdown, summarise_cv
from training.pipeline import Predictions


def _run(folder: Path, overrides: list[str], fold: int, auc: float, recorded_hash: str) -> Path:
    folder.mkdir()
    (folder / "config.toml").write_text(to_toml(apply_overrides(load_config("busi_busbra"), overrides)))
    metrics = {"run": {"fold": fold, "seed": 0, "config_hash": recorded_hash, "fit_seconds": 10.0,
                       "epochs_seconds": 25.0 + fold},
               "test": {"n": 50, "malignant_auc": {"estimate": auc}}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_folds_differing_only_in_an_export_field_summarise_together(tmp_path):
    # The hashes the runs recorded differ (one was made when scope_margin counted); the recipe is the same.
    a = _run(tmp_path / "fold0", ["eval.scope_margin=1.0"], 0, 0.80, "aaaa")
    b = _run(tmp_path / "fold1", ["eval.scope_margin=1.45", "data.busbra_root=/x"], 1, 0.90, "bbbb")
    result = summarise_cv([a, b])
    assert [r["fold"] for r in result["runs"]] == [0, 1]
    assert result["n_test_total"] == 100
    assert [r["fit_seconds"] for r in result["runs"]] == [25.0, 26.0]  # every epoch's time, not one stretch


def test_folds_of_different_recipes_are_refused(tmp_path):
    a = _run(tmp_path / "fold0", [], 0, 0.80, "same")
    b = _run(tmp_path / "fold1", ["optim.lr=1e-5"], 1, 0.90, "same")
    with pytest.raises(CvSummaryError, match="different configs"):
        summarise_cv([a, b])


def _with_test_predictions(run: Path, temperature: float, threshold: float | None, files: list[str],
                           labels: list[int], logits: np.ndarray) -> Path:
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["operating_point"] = {"temperature": temperature, "threshold": threshold, "threshold_class": "malignant"}
    metrics["test"].update(class_names=["benign", "malignant", "normal"],
                           reliability={"edges": np.linspace(0, 1, 11).tolist()})  # 10 bins
    (run / "metrics.json").write_text(json.dumps(metrics))
    Predictions(np.array(files), np.array(labels), logits, np.array([""] * len(files))).save(
        run / "predictions_test.npz")
    return run


def _two_folds(tmp_path: Path) -> list[Path]:
    # fold 0 at temperature 1, malignant threshold 0.5: BUSI benign (p 0.9 / 0.05 / 0.05), BUS-BRA benign
    # called malignant (0.2 / 0.7 / 0.1). fold 1 at temperature 2 (logits 2 log q give back q), threshold 0.25:
    # BUSI malignant (0.6 / 0.3 / 0.1: arg-max wrong, threshold right), BUS-BRA malignant (0.1 / 0.8 / 0.1).
    a = _with_test_predictions(_run(tmp_path / "fold0", [], 0, 0.8, "h"), 1.0, 0.5, ["busi/a.png", "bus-bra/b.png"],
                               [0, 0], np.log([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1]]))
    b = _with_test_predictions(_run(tmp_path / "fold1", [], 1, 0.9, "h"), 2.0, 0.25, ["busi/c.png", "bus-bra/d.png"],
                               [1, 1], 2 * np.log([[0.6, 0.3, 0.1], [0.1, 0.8, 0.1]]))
    return [a, b]


def test_pooled_test_calibration_by_hand_each_fold_at_its_own_temperature(tmp_path):
    # Ten bins, every confidence (0.9 right, 0.7 wrong, 0.6 wrong, 0.8 right) in a bin of its own.
    pooled = summarise_cv(_two_folds(tmp_path))["pooled_test"]
    assert {source: block["n"] for source, block in pooled.items()} == {"all": 4, "busi": 2, "bus-bra": 2}
    assert pooled["busi"]["ece"] == pytest.approx((abs(1 - 0.9) + abs(0 - 0.6)) / 2)
    assert pooled["bus-bra"]["ece"] == pytest.approx((abs(0 - 0.7) + abs(1 - 0.8)) / 2)
    assert pooled["all"]["ece"] == pytest.approx((0.1 + 0.6 + 0.7 + 0.2) / 4)
    # calibrated: E|r - 0.9| = 2 * 0.9 * 0.1, E|r - 0.6| = 2 * 0.6 * 0.4 (400 draws: MC sd 0.003)
    assert pooled["busi"]["ece_if_calibrated"]["mean"] == pytest.approx((0.18 + 0.48) / 2, abs=0.015)


def test_pooled_test_decisions_by_hand_each_fold_at_its_own_threshold(tmp_path):
    result = summarise_cv(_two_folds(tmp_path))
    busi, bus_bra = result["pooled_test"]["busi"], result["pooled_test"]["bus-bra"]
    assert busi["accuracy"] == 1.0 and busi["accuracy_argmax"] == 0.5  # fold 1's 0.3 clears its own 0.25
    assert busi["macro_f1_argmax"] == pytest.approx((2 * 0.5 * 1.0 / 1.5 + 0.0) / 2)  # benign F1 2/3, malignant 0
    assert (busi["sensitivity"], busi["specificity"]) == (1.0, 1.0)
    assert (bus_bra["accuracy"], bus_bra["sensitivity"], bus_bra["specificity"]) == (0.5, 1.0, 0.0)
    markdown = cv_markdown(result)
    assert "| busi | 2 | 1.000 | 1.000 | 0.500 | 0.333 | 1.000 | 1.000 | 0.350 |" in markdown


def test_pooled_test_needs_every_folds_predictions(tmp_path):
    a = _with_test_predictions(_run(tmp_path / "fold0", [], 0, 0.8, "h"), 1.0, None, ["busi/a.png"], [0],
                               np.log([[0.9, 0.05, 0.05]]))
    b = _run(tmp_path / "fold1", [], 1, 0.9, "h")  # published before predictions were kept
    assert "pooled_test" not in summarise_cv([a, b])


def test_pooled_reliability_bins_by_hand_and_the_figure_beside_the_summary(tmp_path):
    # Ten bins: BUSI's pooled confidences are fold 0's 0.9 (right) in (0.8, 0.9] and fold 1's 0.6 at its own
    # temperature (wrong) in (0.5, 0.6]; read at temperature 1, fold 1's logits 2 log q give q² / sum q², a top
    # probability of 0.36 / 0.46 = 0.78, in (0.7, 0.8].
    from training.cv import POOLED_RELIABILITY, write_cv_summary

    out = tmp_path / "summary"
    result = write_cv_summary(_two_folds(tmp_path), out)
    busi = result["pooled_test"]["busi"]["reliability"]
    assert busi["count"] == [0, 0, 0, 0, 0, 1, 0, 0, 1, 0]
    assert busi["accuracy"][5] == 0.0 and busi["accuracy"][8] == 1.0 and busi["accuracy"][0] is None
    assert busi["confidence"][5] == pytest.approx(0.6) and busi["confidence"][8] == pytest.approx(0.9)
    figure = out / POOLED_RELIABILITY
    assert figure.is_file() and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"]({POOLED_RELIABILITY})" in (out / "cv_summary.md").read_text()
    assert json.loads((out / "cv_summary.json").read_text())["pooled_test"]["bus-bra"]["reliability"]["count"][7] == 1
