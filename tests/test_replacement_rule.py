"""The pre-registered replacement rule, criterion by criterion, at and just past each boundary."""

from __future__ import annotations

import json

import pytest

from training.cli import main
from training.cv import CvSummaryError
from training.replacement_rule import apply_rule


def _entry(mean: float, low: float = -0.05, high: float = 0.05) -> dict:
    return {"per_fold": [], "mean_difference": mean, "low": low, "high": high, "n_valid": 2000,
            "folds_higher": 0, "folds_lower": 0}


def _compare(busi_auc=(0.03, 0.001), busbra_auc=(0.01, -0.02), busi_accuracy=0.0, busbra_accuracy=0.0,
             busi_specificity=0.0, busbra_specificity=0.0, folds=(0, 1, 2, 3, 4)) -> dict:
    """A cv_compare.json as written by ``busi-train cv-compare``; the rule reads only these entries."""
    def block(auc, accuracy, specificity):
        return {"malignant AUC": _entry(auc[0], low=auc[1]), "arg-max accuracy": _entry(accuracy),
                "sensitivity at the threshold": _entry(-0.2), "specificity at the threshold": _entry(specificity)}

    return {"candidate": "lite2", "reference": "lite0", "folds": list(folds), "n_boot": 2000, "confidence": 0.95,
            "by_source": {"bus-bra": block(busbra_auc, busbra_accuracy, busbra_specificity),
                          "busi": block(busi_auc, busi_accuracy, busi_specificity)}}


def _met(verdict: dict) -> list[bool]:
    return [c["met"] for c in verdict["criteria"]]


def test_all_three_met_replaces():
    verdict = apply_rule(_compare(), 83.0)
    assert _met(verdict) == [True, True, True] and verdict["replace"]


@pytest.mark.parametrize("changes", [
    {"busbra_auc": (0.0, -0.02)},     # a mean difference of exactly 0 is not above 0
    {"busbra_auc": (-0.009, -0.04)},  # lower on one source (folds 0-1's BUS-BRA)
    {"busi_auc": (0.03, 0.0)},        # no interval wholly above 0 (a lower end of exactly 0 does not count)
])
def test_auc_criterion_fails(changes):
    verdict = apply_rule(_compare(**changes), 83.0)
    assert _met(verdict) == [False, True, True] and not verdict["replace"]


@pytest.mark.parametrize("measure", ["busi_accuracy", "busbra_accuracy", "busi_specificity", "busbra_specificity"])
def test_a_drop_of_001_is_tolerated_and_0011_is_not(measure):
    assert _met(apply_rule(_compare(**{measure: -0.01}), 83.0))[1]
    verdict = apply_rule(_compare(**{measure: -0.011}), 83.0)
    assert _met(verdict) == [True, False, True] and not verdict["replace"]


def test_sensitivity_is_not_one_of_the_rules_criteria():
    # the pre-registered rule reads accuracy and specificity; sensitivity (-0.2 in every fixture) must not veto
    assert apply_rule(_compare(), 83.0)["replace"]


def test_latency_budget_is_inclusive():
    assert apply_rule(_compare(), 100.0)["replace"]
    verdict = apply_rule(_compare(), 100.5)
    assert _met(verdict) == [True, True, False] and not verdict["replace"]


def test_rule_waits_for_five_folds():
    with pytest.raises(CvSummaryError, match="5 paired folds"):
        apply_rule(_compare(folds=(0, 1)), 83.0)


def test_a_missing_measure_is_an_error_not_a_pass():
    compare = _compare()
    compare["by_source"]["busi"]["malignant AUC"] = None  # a source without cancers cannot show an AUC
    with pytest.raises(CvSummaryError, match="malignant AUC on busi"):
        apply_rule(compare, 83.0)


def test_cli_writes_the_verdict_beside_the_comparison(tmp_path, capsys):
    (tmp_path / "cv_compare.json").write_text(json.dumps(_compare(busbra_accuracy=-0.02)))
    assert main(["replacement-rule", str(tmp_path), "--viewer-p95-ms", "83"]) == 0
    verdict = json.loads((tmp_path / "replacement_rule.json").read_text())
    assert _met(verdict) == [True, False, True] and not verdict["replace"]
    markdown = (tmp_path / "replacement_rule.md").read_text()
    assert "bus-bra arg-max accuracy -0.020" in markdown and "Decision: the reference stays." in markdown
    assert "Decision: the reference stays." in capsys.readouterr().out


def test_cli_without_a_comparison_says_so(tmp_path, capsys):
    assert main(["replacement-rule", str(tmp_path), "--viewer-p95-ms", "83"]) != 0
    assert "run busi-train cv-compare first" in capsys.readouterr().err
    assert not (tmp_path / "replacement_rule.json").exists()
