"""busi-train on BUSI and BUS-BRA together, end to end on tiny synthetic sources: the split manifest names each
image's source, evaluation reports each source and scanner, leave-one-source-out scoring uses the run's own
calibration and refuses the source it trained on, and the exported card cites both sources."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from busi_viewer.core.phantoms import write_phantom_dataset
from busi_viewer.inference.bundle import load_bundle
from tests.helpers.datasets import write_busbra
from training.cli import main as train_main
from training.metrics import softmax
from training.pipeline import Predictions

SMOKE = ["--config", "busi_smoke", "--set", "split.strategy=stratified_random", "--set", "train.max_epochs=1",
         "--no-progress"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[Path, Path]:
    busi = tmp_path_factory.mktemp("busi")
    write_phantom_dataset(busi, {"benign": 8, "malignant": 8, "normal": 8}, seed=5, size=(80, 96))
    return busi, write_busbra(tmp_path_factory.mktemp("busbra"), cases=16)


@pytest.fixture(scope="module")
def runs(sources, tmp_path_factory) -> dict[str, Path]:
    busi, busbra = sources
    home = tmp_path_factory.mktemp("home")
    folder = tmp_path_factory.mktemp("runs")
    out = {"both": folder / "both", "busi": folder / "busi"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BUSI_VIEWER_HOME", str(home))
        patch.setenv("BUSI_AUDIT", str(home / "no-audit"))
        assert train_main(["fit", *SMOKE, "--set", "data.dataset=busi+bus-bra", "--data", str(busi),
                           "--busbra", str(busbra), "--out", str(out["both"]), "--evaluate"]) == 0
        assert train_main(["fit", *SMOKE, "--data", str(busi), "--out", str(out["busi"]), "--evaluate"]) == 0
    return out


def test_manifest_lists_both_sources_and_evaluation_reports_each(runs):
    with (runs["both"] / "split_manifest.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["source"] for r in rows} == {"busi", "bus-bra"} and len(rows) == 24 + 27
    assert all(r["file"].startswith(r["source"] + "/") for r in rows)
    metrics = json.loads((runs["both"] / "metrics.json").read_text())
    by_source = metrics["test_by_source"]
    test_sources = [r["source"] for r in rows if r["split"] == "test"]
    assert {k: v["n"] for k, v in by_source.items()} == {s: test_sources.count(s) for s in ("busi", "bus-bra")}
    assert set(metrics["test_by_device"]) <= {"GE Logiq 7", "GE Logiq 5", "Toshiba Aplio 300"}
    assert sum(v["n"] for v in metrics["test_by_device"].values()) == test_sources.count("bus-bra")
    assert metrics["run"]["images_per_source"] == {"busi": 24, "bus-bra": 27}
    with (runs["both"] / "epochs.csv").open(newline="") as handle:
        seconds = sum(float(row["seconds"]) for row in csv.DictReader(handle))
    expected_rate = metrics["run"]["train_items_per_epoch"] * metrics["run"]["epochs_run"] / seconds
    assert metrics["run"]["train_images_per_second"] == pytest.approx(expected_rate, rel=0.01)
    report = (runs["both"] / "report.md").read_text()
    assert "By source (test" in report and "By scanner" in report and "BUS-BRA (Gómez-Flores" in report
    assert (runs["both"] / "reliability_by_source.png").stat().st_size > 5000
    assert not (runs["busi"] / "reliability_by_source.png").exists()


def test_per_source_numbers_are_those_of_the_source_s_own_test_images(runs):
    metrics = json.loads((runs["both"] / "metrics.json").read_text())
    test = Predictions.load(runs["both"] / "predictions_test.npz")
    keep = np.array([str(f).startswith("bus-bra/") for f in test.files])
    temperature = metrics["operating_point"]["temperature"]
    probs = softmax(test.logits[keep], temperature)
    labels = test.labels[keep]
    # malignant AUC by hand: the share of (malignant, benign) pairs ordered correctly, ties counted half
    pos, neg = probs[labels == 1, 1], probs[labels == 0, 1]
    by_hand = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert metrics["test_by_source"]["bus-bra"]["per_class"]["malignant"]["auc"] == pytest.approx(by_hand)


def test_leave_one_source_out_scores_with_the_run_s_own_calibration(runs, sources, monkeypatch, capsys):
    busi, busbra = sources
    monkeypatch.setenv("BUSI_AUDIT", str(runs["busi"] / "no-audit"))
    assert train_main(["score-external", str(runs["busi"]), "--source", "bus-bra", "--data", str(busbra),
                       "--no-progress"]) == 0
    block = json.loads((runs["busi"] / "external_bus-bra.json").read_text())
    assert block["n"] == 27 and block["metrics"]["n"] == 27
    point = json.loads((runs["busi"] / "metrics.json").read_text())["operating_point"]
    scored = Predictions.load(runs["busi"] / "predictions_external_bus-bra.npz")
    probs = softmax(scored.logits, point["temperature"])
    decided_malignant = probs[:, 1] >= point["threshold"]
    truly_malignant = scored.labels == 1
    assert block["metrics"]["sensitivity_malignant"] == pytest.approx(decided_malignant[truly_malignant].mean())
    assert sum(m["n"] for m in block["by_device"].values()) == 27
    # it stays in the report when the run is evaluated again
    assert train_main(["evaluate", str(runs["busi"])]) == 0
    assert "bus-bra (never seen)" in json.loads((runs["busi"] / "metrics.json").read_text())["external"]
    assert "never seen" in (runs["busi"] / "report.md").read_text()
    capsys.readouterr()
    assert train_main(["score-external", str(runs["busi"]), "--source", "busi", "--data", str(busi)]) == 2
    assert "not an external test" in capsys.readouterr().err


def test_exported_two_source_bundle_cites_both_sources(runs, sources, tmp_path, monkeypatch):
    monkeypatch.setenv("BUSI_VIEWER_HOME", str(tmp_path / "home"))
    bundle = tmp_path / "bundle"
    assert train_main(["export", str(runs["both"]), "--to", str(bundle), "--version", "0.0.1-test"]) == 0
    card = load_bundle(bundle).card
    assert card.modality == "US" and "BUSI (Al-Dhabyani" in card.training_data and "BUS-BRA" in card.training_data
    assert "patients (BUS-BRA)" in card.protocol
    metrics = json.loads((runs["both"] / "metrics.json").read_text())
    assert {k: v["n"] for k, v in card.metrics["test"]["by_source"].items()} == {
        k: v["n"] for k, v in metrics["test_by_source"].items()}
    with (bundle / "split_manifest.csv").open(newline="") as handle:
        assert next(csv.reader(handle)) == ["file", "sha256", "group", "split", "source"]
    # a bundle names its data sets and their manifest hash, never this machine's folders
    for document in ("config.toml", "metrics.json", "report.md", "model_card.json"):
        text = (bundle / document).read_text()
        assert str(sources[0]) not in text and str(sources[1]) not in text and str(tmp_path) not in text
    assert metrics["run"]["data_manifest_sha256"] in (bundle / "metrics.json").read_text()


def test_threshold_reaches_the_target_on_each_source_s_validation():
    from training.config import load_config
    from training.evaluate import operating_point

    config = load_config(Path(__file__).parents[1] / "training/configs/busi_busbra.toml",
                         ["eval.calibrate=false", "eval.target_sensitivity=0.75"])
    # p(malignant) of 4 malignant images per source; BUS-BRA's cancers score lower than BUSI's.
    # BUSI alone: the 3rd largest of (0.9, 0.8, 0.7, 0.6) = 0.7; BUS-BRA alone: of (0.5, 0.4, 0.3, 0.2) = 0.3.
    malignant = {"busi": [0.9, 0.8, 0.7, 0.6], "bus-bra": [0.5, 0.4, 0.3, 0.2]}
    files, labels, p = [], [], []
    for source, scores in malignant.items():
        for k, score in enumerate(scores):
            files.append(f"{source}/m{k}.png"), labels.append(1), p.append(score)
        files.append(f"{source}/b.png"), labels.append(0), p.append(0.25)
    probs = np.array([[(1 - q) / 2, q, (1 - q) / 2] for q in p])
    val = Predictions(np.array(files), np.array(labels), np.log(probs), np.array([""] * len(files)))
    _, threshold, choice = operating_point(config, val)
    assert threshold == pytest.approx(0.3)  # the smaller of the two: both sources reach 75 %
    assert choice["per_source_thresholds"] == pytest.approx({"busi": 0.7, "bus-bra": 0.3})
    assert choice["validation_sensitivity"] == pytest.approx(7 / 8) and choice["validation_specificity"] == 1.0
    # a single-source run (no source prefix) picks from all its images, as before: 6th of 8 = 0.4
    single = Predictions(np.array([f.split("/", 1)[1] for f in files]), val.labels, val.logits, val.groups)
    assert operating_point(config, single)[1] == pytest.approx(0.4)


def test_cv_summary_of_two_source_runs_reports_each_source(runs, tmp_path):
    from training.cv import summarise_cv

    metrics = json.loads((runs["both"] / "metrics.json").read_text())
    summary = summarise_cv([runs["both"]])["summary"]
    busbra = metrics["test_by_source"]["bus-bra"]
    assert summary["BUS-BRA malignant AUC"]["mean"] == pytest.approx(busbra["per_class"]["malignant"]["auc"])
    assert summary["BUSI accuracy (operating point)"]["mean"] == pytest.approx(
        metrics["test_by_source"]["busi"]["accuracy"])
    assert "BUSI malignant AUC" not in summarise_cv([runs["busi"]])["summary"]  # one source: no per-source rows


def test_an_installed_bundle_scores_as_its_run_did(runs, sources, tmp_path, monkeypatch):
    busi, busbra = sources
    monkeypatch.setenv("BUSI_VIEWER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BUSI_AUDIT", str(tmp_path / "no-audit"))
    bundle = tmp_path / "bundle"
    assert train_main(["export", str(runs["busi"]), "--to", str(bundle), "--version", "0.0.2-test"]) == 0
    if not (runs["busi"] / "external_bus-bra.json").is_file():
        assert train_main(["score-external", str(runs["busi"]), "--source", "bus-bra", "--data", str(busbra)]) == 0
    out = tmp_path / "scored"
    assert train_main(["score-external", str(bundle), "--bundle", "--source", "bus-bra", "--data", str(busbra),
                       "--out", str(out), "--no-progress"]) == 0
    from_bundle = json.loads((out / "busi-us-0.0.2-test_bus-bra.json").read_text())
    from_run = json.loads((runs["busi"] / "external_bus-bra.json").read_text())
    assert from_bundle["model"] == "busi-us 0.0.2-test"
    for key in ("auc_macro", "sensitivity_malignant", "specificity_malignant", "ece", "accuracy"):
        assert from_bundle["metrics"][key] == pytest.approx(from_run["metrics"][key], abs=1e-6)
