"""Explanation-vs-mask scoring, threshold tuning, the breakdown by source and lesion size (with its paired
bootstrap CI), ``busi-train explain-eval`` and the model-randomisation sanity check."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from busi_viewer.core.labels import CLASS_NAMES
from busi_viewer.inference.architectures import build_classifier
from busi_viewer.inference.model_card import ModelCard, PreprocessSpec
from busi_viewer.inference.predictor import Predictor
from busi_viewer.inference.pretrained import load_imagenet_backbone
from training.explain_eval import (
    SIZE_EDGES,
    THRESHOLD_GRID,
    MapScore,
    breakdown,
    pointing_lead_ci,
    randomisation_check,
    randomised_copy,
    score_maps,
    size_bin,
    spearman,
    summarise_scores,
    tune_threshold,
)
from training.report import explanation_breakdown_lines

SMOKE = ["--config", "busi_smoke", "--set", "split.strategy=stratified_random", "--set", "train.max_epochs=1",
         "--no-progress"]


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    torch.manual_seed(0)
    model = build_classifier("tf_efficientnet_lite0", 3)
    load_imagenet_backbone(model)
    card = ModelCard(name="t", version="0", architecture="tf_efficientnet_lite0", class_names=CLASS_NAMES,
                     preprocess=PreprocessSpec(input_size=160))
    return Predictor(model, card)


def _phantom(seed: int, lesion: bool):
    rng = np.random.default_rng(seed)
    image = np.clip(rng.rayleigh(50, (150, 200)), 0, 255).astype(np.uint8)
    mask = np.zeros((150, 200), bool)
    if lesion:
        yy, xx = np.mgrid[:150, :200]
        cy, cx = rng.integers(40, 110), rng.integers(50, 150)
        mask = ((yy - cy) / 25) ** 2 + ((xx - cx) / 35) ** 2 <= 1
        image[mask] //= 4
    return np.repeat(image[..., None], 3, -1), mask


def test_spearman_basics():
    a = np.arange(12, dtype=float).reshape(3, 4)
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    tied = np.array([[0, 0, 1, 2]], float)
    assert spearman(tied, np.array([[0, 0, 5, 9]], float)) == pytest.approx(1.0)
    assert np.isnan(spearman(np.zeros((2, 2)), a[:2, :2]))


def test_score_maps_skips_empty_masks_and_scores_the_baseline(predictor):
    images = [(*_phantom(1, True), 0), (*_phantom(2, False), 2), (*_phantom(3, True), 1, "bus-bra", "case-7")]
    scores = score_maps(predictor, images)
    assert [s.label for s in scores] == [0, 1]
    assert [(s.source, s.group) for s in scores] == [("", ""), ("bus-bra", "case-7")]
    assert scores[1].mask_fraction == pytest.approx(_phantom(3, True)[1].mean())
    for score in scores:
        assert 0 <= score.energy_in_mask <= 1 and 0 <= score.iou_otsu <= 1
        assert set(score.iou_by_level) == set(THRESHOLD_GRID)
        assert 0 <= score.baseline_energy_in_mask <= 1
    summary = summarise_scores(scores, CLASS_NAMES, level=0.5)
    assert summary["all"]["n"] == 2
    assert summary["per_class"]["normal"] == {"n": 0}
    assert summary["per_class"]["benign"]["n"] == 1


def _score(ious: dict) -> MapScore:
    by_level = {level: ious.get(level, 0.0) for level in THRESHOLD_GRID}
    return MapScore(0, 0, True, 0.5, 0.3, by_level, True, 0.4, 0.2)


def test_tune_threshold_picks_the_best_mean_iou_on_validation():
    scores = [_score({0.3: 0.6, 0.5: 0.5}), _score({0.3: 0.4, 0.5: 0.7})]
    assert tune_threshold(scores) == 0.5
    with pytest.raises(ValueError, match="no validation image"):
        tune_threshold([])


def test_randomised_copy_changes_only_the_top(predictor):
    model = predictor.model
    clone = randomised_copy(model, top_layers=2)
    changed = [name for name, p in model.state_dict().items()
               if p.dtype.is_floating_point and not torch.equal(p, clone.state_dict()[name])]
    assert "head.fc.weight" in changed
    assert any(name.startswith("backbone.conv_head") for name in changed)
    assert not any(name.startswith("backbone.conv_stem") or name.startswith("backbone.blocks.0") for name in changed)
    assert torch.equal(model.get_classifier().weight, predictor.model.get_classifier().weight)


def test_randomisation_check_reports_maps_that_change(predictor):
    images = [_phantom(seed, True)[0] for seed in range(3)]
    result = randomisation_check(predictor, images)
    assert result["n"] == 3
    assert -1.0 <= result["mean_spearman"] < 0.9


def _scored(source: str, area: float, hit: bool, prior_hit: bool, energy: float = 0.0, iou_value: float = 0.0,
            group: str = "") -> MapScore:
    return MapScore(0, 0, hit, energy, iou_value, {}, prior_hit, energy / 2, iou_value / 2, area, source, group)


def test_size_bins_have_fixed_edges_and_reject_areas_outside_the_image():
    assert SIZE_EDGES == (0.04, 0.10)
    assert [size_bin(a) for a in (1e-4, 0.0399, 0.04, 0.0999, 0.10, 1.0)] == [
        "small", "small", "medium", "medium", "large", "large"]
    for bad in (0.0, -0.1, 1.01, float("nan")):
        with pytest.raises(ValueError, match="mask fraction"):
            size_bin(bad)


# Six lesion images: (source, mask area, model hit, prior hit, energy in mask, IoU)
HAND = [("busi", 0.02, True, False, 0.6, 0.4), ("busi", 0.05, True, True, 0.3, 0.2),
        ("busi", 0.20, False, True, 0.1, 0.0), ("bus-bra", 0.01, False, False, 0.0, 0.1),
        ("bus-bra", 0.12, True, False, 0.5, 0.3), ("bus-bra", 0.03, True, False, 0.2, 0.5)]


def test_breakdown_by_source_and_size_matches_hand_counts():
    result = breakdown([_scored(*row) for row in HAND], n_boot=200)
    cells = result["by_source"]
    assert list(cells) == ["bus-bra", "busi", "all"] and result["size_bins"] == ["small", "medium", "large"]
    expected = {  # (n, pointing, prior pointing, mean energy, mean IoU) worked out from HAND
        ("busi", "all"): (3, 2 / 3, 2 / 3, 1 / 3, 0.2), ("busi", "small"): (1, 1.0, 0.0, 0.6, 0.4),
        ("busi", "medium"): (1, 1.0, 1.0, 0.3, 0.2), ("busi", "large"): (1, 0.0, 1.0, 0.1, 0.0),
        ("bus-bra", "all"): (3, 2 / 3, 0.0, 0.7 / 3, 0.3), ("bus-bra", "small"): (2, 0.5, 0.0, 0.1, 0.3),
        ("bus-bra", "large"): (1, 1.0, 0.0, 0.5, 0.3), ("all", "all"): (6, 4 / 6, 2 / 6, 1.7 / 6, 1.5 / 6),
        ("all", "small"): (3, 2 / 3, 0.0, 0.8 / 3, 1.0 / 3),
    }
    for (source, cell), (n, pointing, prior, energy, iou_value) in expected.items():
        c = cells[source][cell]
        assert (c["n"], c["pointing_game"], c["baseline_pointing_game"]) == (n, pytest.approx(pointing),
                                                                             pytest.approx(prior)), (source, cell)
        assert c["energy_in_mask"] == pytest.approx(energy) and c["iou_otsu"] == pytest.approx(iou_value)
        assert c["baseline_energy_in_mask"] == pytest.approx(energy / 2)
        assert c["baseline_iou_otsu"] == pytest.approx(iou_value / 2)
        assert c["pointing_lead"]["estimate"] == pytest.approx(pointing - prior)
    assert cells["bus-bra"]["medium"] == {"n": 0}
    assert cells["busi"]["small"]["pointing_lead"] == {"estimate": 1.0, "low": None, "high": None}  # one image
    assert cells["bus-bra"]["small"]["median_mask_fraction"] == pytest.approx(0.02)
    # one unnamed source (a single-source run): only the pooled block
    assert list(breakdown([_scored("", 0.5, True, False)], n_boot=10)["by_source"]) == ["all"]


def test_pointing_lead_ci_is_paired_and_reproducible():
    # model and prior agree on every image: the paired difference is 0 in every resample, whatever the hit rate
    agreeing = [_scored("busi", 0.1, hit, hit) for hit in (True, False, True, True, False, False, True, False)]
    assert pointing_lead_ci(agreeing) == {"estimate": 0.0, "low": 0.0, "high": 0.0}
    # two images with differences 1 and 0: resample means are 0, 0.5, 1 (p = 1/4, 1/2, 1/4): 95 % CI [0, 1]
    assert pointing_lead_ci([_scored("busi", 0.1, True, False), _scored("busi", 0.1, True, True)]) == {
        "estimate": 0.5, "low": 0.0, "high": 1.0}
    rng = np.random.default_rng(3)
    scores = [_scored("busi", 0.1, bool(a), bool(b)) for a, b in rng.random((40, 2)) < (0.6, 0.4)]
    first = pointing_lead_ci(scores, n_boot=2000, seed=0)
    assert first == pointing_lead_ci(scores, n_boot=2000, seed=0)
    assert first != pointing_lead_ci(scores, n_boot=2000, seed=1)
    assert first["low"] < first["estimate"] < first["high"]
    assert pointing_lead_ci(scores, n_boot=0)["low"] is None


def test_pointing_lead_ci_resamples_whole_groups():
    # 8 patients of 5 views each, every view of a patient alike: 40 images but only 8 independent units
    scores = [_scored("bus-bra", 0.1, patient % 2 == 0, False, group=f"case-{patient}")
              for patient in range(8) for _ in range(5)]
    grouped, by_image = pointing_lead_ci(scores), pointing_lead_ci(scores, by_group=False)
    assert grouped["estimate"] == by_image["estimate"] == 0.5
    assert grouped["high"] - grouped["low"] > 1.5 * (by_image["high"] - by_image["low"])
    # unequal groups: the estimate weights images, not groups (3 hits in group a, 1 miss in b: 3/4)
    unequal = [_scored("busi", 0.1, True, False, group="a")] * 3 + [_scored("busi", 0.1, False, False, group="b")]
    assert pointing_lead_ci(unequal) == {"estimate": 0.75, "low": 0.0, "high": 1.0}
    result = breakdown(scores, n_boot=100)
    assert result["bootstrap"]["by_group"] and not breakdown(scores, n_boot=100, by_group=False)["bootstrap"]["by_group"]


def test_breakdown_table_renders_every_cell_and_the_goal_verdicts():
    lines = explanation_breakdown_lines(breakdown([_scored(*row) for row in HAND], n_boot=200))
    text = "\n".join(lines)
    assert "| busi | small (< 4 %) | 1 | 1.000 | 0.000 | +1.000 | 0.600 (0.300) | 0.400 (0.200) |" in lines
    assert "| bus-bra | medium (4 % to < 10 %) | 0 | – | – | – | – | – |" in lines
    assert "| bus-bra | all sizes | 3 | 0.667 | 0.000 | +0.667 [" in text
    assert "200 resamples of images" in text
    assert "- busi: all sizes missed (0.667, lead +0.000); small (< 4 %) met (1.000, lead +1.000)." in lines
    assert "- bus-bra: all sizes missed (0.667, lead +0.667); small (< 4 %) missed (0.500, lead +0.500)." in lines
    assert not any(line.startswith("- all:") for line in lines)  # goals are per source


@pytest.fixture(scope="module")
def two_source_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(evaluated run folder, BUSI folder, BUS-BRA folder): one epoch at 64 px on tiny synthetic sources."""
    from busi_viewer.core.phantoms import write_phantom_dataset
    from tests.helpers.datasets import write_busbra
    from training.cli import main as train_main

    busi = tmp_path_factory.mktemp("busi")
    write_phantom_dataset(busi, {"benign": 8, "malignant": 8, "normal": 8}, seed=5, size=(80, 96))
    busbra = write_busbra(tmp_path_factory.mktemp("busbra"), cases=16)
    run = tmp_path_factory.mktemp("runs") / "both"
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BUSI_VIEWER_HOME", str(home))
        patch.setenv("BUSI_AUDIT", str(home / "no-audit"))
        assert train_main(["fit", *SMOKE, "--set", "data.dataset=busi+bus-bra", "--data", str(busi),
                           "--busbra", str(busbra), "--out", str(run), "--evaluate"]) == 0
    return run, busi, busbra


def test_evaluation_and_explain_eval_of_its_run_and_bundle_agree(two_source_run, tmp_path, monkeypatch, capsys):
    from training.cli import main as train_main

    run, busi, busbra = two_source_run
    monkeypatch.setenv("BUSI_AUDIT", str(tmp_path / "no-audit"))
    metrics = json.loads((run / "metrics.json").read_text())
    block = metrics["explanations"]["by_source_and_size"]
    assert list(block["by_source"]) == ["bus-bra", "busi", "all"]
    assert block["by_source"]["all"]["all"]["n"] == metrics["explanations"]["all"]["n"] > 0
    for source in ("busi", "bus-bra"):
        cells = block["by_source"][source]
        assert cells["all"]["n"] == sum(cells[b]["n"] for b in ("small", "medium", "large"))
    assert "By source and lesion size" in (run / "report.md").read_text()
    # the recipe averages with the mirror image, so the maps scored are those the app shows, named as there
    assert metrics["explanations"]["map"] == "Grad-CAM, mean with mirror image"
    assert "## Explanations (Grad-CAM, mean with mirror image of the predicted class" in (run / "report.md").read_text()

    out = tmp_path / "measured"
    args = ["--data", str(busi), "--busbra", str(busbra), "--out", str(out), "--no-progress"]
    assert train_main(["explain-eval", str(run), *args]) == 0
    from_run = json.loads((out / "both_explanations_test.json").read_text())
    assert from_run["breakdown"] == block  # the same maps, bins and bootstrap seed as the evaluation
    assert from_run["reported"]["n"] == metrics["explanations"]["all"]["n"]
    with (out / "both_explanations_test_scores.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == block["by_source"]["all"]["all"]["n"]
    assert all(row["file"].startswith(row["source"] + "/") for row in rows)
    assert "| busi | all sizes |" in (out / "both_explanations_test.md").read_text()

    bundle = tmp_path / "bundle"
    assert train_main(["export", str(run), "--to", str(bundle), "--version", "0.0.3-test", "--no-scope"]) == 0
    assert train_main(["explain-eval", str(bundle), *args]) == 0
    from_bundle = json.loads((out / "busi-us-0.0.3-test_explanations_test.json").read_text())["breakdown"]
    for source, cells in block["by_source"].items():
        for cell, expected in cells.items():
            got = from_bundle["by_source"][source][cell]
            assert got["n"] == expected["n"]
            if expected["n"]:
                assert got["pointing_game"] == expected["pointing_game"]
                assert got["energy_in_mask"] == pytest.approx(expected["energy_in_mask"], abs=1e-5)

    # the same weights at a finer stride, one pass: measured and named as such, on the same lesion images
    assert train_main(["explain-eval", str(run), *args, "--output-stride", "16", "--no-mirror"]) == 0
    finer = json.loads((out / "both_explanations_test_stride16_one-pass.json").read_text())
    assert finer["inference"] == {"output_stride": 16, "test_time_flip": False, "explanation": "Grad-CAM"}
    assert finer["breakdown"]["by_source"]["all"]["all"]["n"] == block["by_source"]["all"]["all"]["n"]
    assert "final stride 16" in (out / "both_explanations_test_stride16_one-pass.md").read_text()
    # the classification beside the maps: AUC of p(malignant) over the lesion images, by hand from the run's
    # own test logits (mirror-averaged, as the card runs) and temperature, every positive-negative pair counted
    predictions = np.load(run / "predictions_test.npz")
    temperature = metrics["operating_point"]["temperature"]
    logits = predictions["logits"] / temperature
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    lesion = {row["file"] for row in rows}
    chosen = [i for i, f in enumerate(predictions["files"]) if str(f) in lesion]
    malignant = [probabilities[i, 1] for i in chosen if predictions["labels"][i] == 1]
    benign = [probabilities[i, 1] for i in chosen if predictions["labels"][i] == 0]
    pairs = [(m > b) + 0.5 * (m == b) for m in malignant for b in benign]
    assert from_run["positive_class_auc_on_lesion_images"]["all"] == pytest.approx(np.mean(pairs), abs=2e-3)

    # another copy of the data (one test image's bytes changed) is refused, not measured
    test_file = next(r["file"] for r in csv.DictReader((run / "split_manifest.csv").open()) if r["split"] == "test")
    source, relpath = test_file.split("/", 1)
    image = (busi if source == "busi" else busbra) / relpath
    original = image.read_bytes()
    image.write_bytes(original + b"\0")
    try:
        capsys.readouterr()
        assert train_main(["explain-eval", str(run), *args]) == 2
        assert "differ from the split manifest" in capsys.readouterr().err
    finally:
        image.write_bytes(original)
