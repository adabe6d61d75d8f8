"""cv-summary joins the folds of one recipe, even when a field added since (export-only) sits in some configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.config import apply_overrides, load_config, to_toml
from training.cv import CvSummaryError, summarise_cv


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
