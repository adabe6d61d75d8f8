"""cv-compare pairs two recipes' folds image by image; every number below is worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.config import apply_overrides, load_config, to_toml
from training.cv import CvSummaryError
from training.cv_compare import compare_cv, compare_markdown, paired_folds

CLASSES = ["benign", "malignant", "normal"]


def _fold_run(folder: Path, fold: int | None, files: list[str], labels: list[int], malignant: list[float],
              threshold: float, groups: list[str] | None = None, arch: str = "tf_efficientnet_lite0") -> Path:
    """A published fold run whose test images get p(malignant) = ``malignant``, the rest benign (temperature 1)."""
    from training.pipeline import Predictions

    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(to_toml(apply_overrides(load_config("busi_busbra"), [f"model.arch={arch}"])))
    metrics = {"run": {"fold": fold, "seed": 0},
               "operating_point": {"temperature": 1.0, "threshold": threshold, "threshold_class": "malignant"},
               "test": {"n": len(files), "class_names": CLASSES}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    p = np.array(malignant)
    probs = np.stack([(1 - p) * 0.9, p, (1 - p) * 0.1], axis=1)
    Predictions(np.array(files), np.array(labels), np.log(probs),
                np.array(groups if groups is not None else [""] * len(files))).save(folder / "predictions_test.npz")
    return folder


FOLD0 = ["bus-bra/b1.png", "bus-bra/b2.png", "bus-bra/b3.png", "bus-bra/b4.png"]
FOLD1 = ["bus-bra/c1.png", "bus-bra/c2.png", "bus-bra/c3.png", "bus-bra/c4.png"]
LABELS = [1, 1, 0, 0]  # malignant, malignant, benign, benign


def _sides(tmp_path: Path, groups: list[str] | None = None) -> tuple[list[Path], list[Path]]:
    # Candidate fold 0: cancers 0.9, 0.8 above benign 0.3, 0.1: AUC 1. Reference fold 0: cancers 0.8, 0.2 against
    # benign 0.5, 0.5: 2 of 4 pairs ordered, AUC 0.5. Candidate fold 1: cancers 0.9, 0.4 against benign 0.6, 0.1:
    # 3 of 4 pairs, AUC 0.75; reference fold 1 AUC 1 (listed in reverse file order: pairing must realign it).
    candidate = [_fold_run(tmp_path / "cand0", 0, FOLD0, LABELS, [0.9, 0.8, 0.3, 0.1], 0.5, groups),
                 _fold_run(tmp_path / "cand1", 1, FOLD1, LABELS, [0.9, 0.4, 0.6, 0.1], 0.5, groups)]
    reference = [_fold_run(tmp_path / "ref0", 0, FOLD0, LABELS, [0.8, 0.2, 0.5, 0.5], 0.45, groups,
                           arch="tf_efficientnet_lite2"),
                 _fold_run(tmp_path / "ref1", 1, FOLD1[::-1], LABELS[::-1], [0.2, 0.3, 0.7, 0.9], 0.25,
                           None if groups is None else groups[::-1], arch="tf_efficientnet_lite2")]
    return candidate, reference


def test_paired_differences_by_hand(tmp_path):
    candidate, reference = _sides(tmp_path)
    result = compare_cv(candidate, reference, n_boot=200)
    auc = result["by_source"]["bus-bra"]["malignant AUC"]
    assert [(row["candidate"], row["reference"]) for row in auc["per_fold"]] == [(1.0, 0.5), (0.75, 1.0)]
    assert auc["mean_difference"] == pytest.approx((0.5 - 0.25) / 2)
    assert (auc["folds_higher"], auc["folds_lower"]) == (1, 1)
    # At their own thresholds: candidate fold 0 (0.5) finds both cancers, no benign; fold 1 (0.5) finds 1 of 2 and
    # flags benign 0.6. Reference fold 0 (0.45) finds 0.8 only and flags both 0.5s; fold 1 (0.25, reordered
    # c4..c1 = 0.2, 0.3, 0.7, 0.9 -> c1 0.9, c2 0.7 malignant, c3 0.3, c4 0.2 benign) finds both, flags c3.
    sensitivity = result["by_source"]["bus-bra"]["sensitivity at the threshold"]
    assert [(row["candidate"], row["reference"]) for row in sensitivity["per_fold"]] == [(1.0, 0.5), (0.5, 1.0)]
    specificity = result["by_source"]["bus-bra"]["specificity at the threshold"]
    assert [(row["candidate"], row["reference"]) for row in specificity["per_fold"]] == [(1.0, 0.0), (0.5, 0.5)]
    assert specificity["mean_difference"] == pytest.approx(0.5)
    # arg-max: benign holds 0.9 (1 - p), so malignant wins at p > 0.9 / 1.9 = 0.474 (reference fold 0: only 0.8
    # of its four is right, both benign 0.5s are called malignant)
    accuracy = result["by_source"]["bus-bra"]["arg-max accuracy"]
    assert [(row["candidate"], row["reference"]) for row in accuracy["per_fold"]] == [(1.0, 0.25), (0.5, 1.0)]
    assert result["candidate"].endswith("(tf_efficientnet_lite0, 224 px)")
    assert "lite2" in result["reference"]


def test_markdown_shows_reference_then_candidate_and_the_signed_mean(tmp_path):
    text = compare_markdown(compare_cv(*_sides(tmp_path), n_boot=50))
    row = next(line for line in text.splitlines() if "| malignant AUC |" in line)
    assert "| 0.500 → 1.000 | 1.000 → 0.750 | +0.125 [" in row and row.endswith("| 1 / 1 |")


def test_whole_folds_as_one_group_leave_no_room_to_resample(tmp_path):
    # Every draw redraws each fold's only group: the interval is the estimate itself.
    result = compare_cv(*_sides(tmp_path, groups=["g"] * 4), n_boot=50)
    auc = result["by_source"]["bus-bra"]["malignant AUC"]
    assert auc["low"] == pytest.approx(0.125) and auc["high"] == pytest.approx(0.125)


def test_the_bootstrap_is_paired_a_recipe_against_itself_differs_by_nothing(tmp_path):
    candidate, _ = _sides(tmp_path)
    result = compare_cv(candidate, candidate, n_boot=200)
    for entry in result["by_source"]["bus-bra"].values():
        assert entry["mean_difference"] == 0.0 and entry["low"] == 0.0 and entry["high"] == 0.0


def test_the_interval_spans_the_test_images_sampling(tmp_path):
    auc = compare_cv(*_sides(tmp_path), n_boot=400)["by_source"]["bus-bra"]["malignant AUC"]
    assert auc["low"] < auc["mean_difference"] < auc["high"] and auc["n_valid"] > 300


def test_folds_tested_on_other_images_are_refused(tmp_path):
    candidate, reference = _sides(tmp_path)
    other = _fold_run(tmp_path / "other1", 1, ["bus-bra/x.png", *FOLD1[1:]], LABELS, [0.9, 0.4, 0.6, 0.1], 0.5)
    with pytest.raises(CvSummaryError, match="fold 1: the two sides were tested on different images"):
        paired_folds(candidate, [reference[0], other])


def test_sides_with_other_folds_or_no_folds_are_refused(tmp_path):
    candidate, reference = _sides(tmp_path)
    with pytest.raises(CvSummaryError, match="different folds"):
        paired_folds(candidate, reference[:1])
    single = _fold_run(tmp_path / "single", None, FOLD0, LABELS, [0.9, 0.8, 0.3, 0.1], 0.5)
    with pytest.raises(CvSummaryError, match="each once"):
        paired_folds([single], reference[:1])


def test_a_run_published_without_predictions_is_named(tmp_path):
    candidate, reference = _sides(tmp_path)
    (reference[1] / "predictions_test.npz").unlink()
    with pytest.raises(CvSummaryError, match="ref1 keeps no predictions_test.npz"):
        paired_folds(candidate, reference)


def test_the_same_predictions_listed_in_another_order_are_paired_image_by_image(tmp_path):
    candidate, _ = _sides(tmp_path)
    shuffled = _fold_run(tmp_path / "shuffled1", 1, FOLD1[::-1], LABELS[::-1], [0.9, 0.4, 0.6, 0.1][::-1], 0.5)
    result = compare_cv(candidate, [candidate[0], shuffled], n_boot=200)
    for entry in result["by_source"]["bus-bra"].values():  # an unaligned draw would score other images
        assert entry["low"] == 0.0 and entry["high"] == 0.0


def test_the_command_writes_both_files_and_refuses_unpaired_sides_with_a_message(tmp_path, capsys):
    from training.cli import main as train_main

    candidate, reference = _sides(tmp_path)
    out = tmp_path / "compare"
    assert train_main(["cv-compare", *map(str, candidate), "--against", *map(str, reference), "--out", str(out)]) == 0
    written = json.loads((out / "cv_compare.json").read_text())
    assert written["by_source"]["bus-bra"]["malignant AUC"]["mean_difference"] == pytest.approx(0.125)
    assert "| bus-bra | malignant AUC |" in (out / "cv_compare.md").read_text()
    assert train_main(["cv-compare", str(candidate[0]), "--against", str(reference[1]), "--out", str(out)]) == 2
    assert "different folds" in capsys.readouterr().err


def test_three_folds_average_their_differences(tmp_path):
    # differences +0.5, −0.25 and 0 (fold 2 the same on both sides): mean 1/12, where a median would say 0
    candidate, reference = _sides(tmp_path)
    fold2 = ["bus-bra/d1.png", "bus-bra/d2.png", "bus-bra/d3.png", "bus-bra/d4.png"]
    candidate.append(_fold_run(tmp_path / "cand2", 2, fold2, LABELS, [0.9, 0.8, 0.3, 0.1], 0.5))
    reference.append(_fold_run(tmp_path / "ref2", 2, fold2, LABELS, [0.7, 0.6, 0.2, 0.1], 0.5))
    auc = compare_cv(candidate, reference, n_boot=50)["by_source"]["bus-bra"]["malignant AUC"]
    assert auc["mean_difference"] == pytest.approx(1 / 12)
    assert (auc["folds_higher"], auc["folds_lower"]) == (1, 1)
