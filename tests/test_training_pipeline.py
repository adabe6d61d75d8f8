"""busi-train end to end on synthetic phantoms: fit beats chance, resume continues, evaluate writes the report,
export makes a bundle that busi-predict loads."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from busi_viewer.cli.predict import main as predict_main
from busi_viewer.core.phantoms import write_phantom_dataset
from busi_viewer.inference.bundle import load_bundle
from training.cli import main as train_main

SMOKE = ["--config", "busi_smoke", "--set", "split.strategy=stratified_random", "--set", "data.input_size=64",
         "--set", "optim.lr=0.002", "--set", "train.patience=10", "--no-progress"]


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantoms")
    write_phantom_dataset(root, {"benign": 18, "malignant": 18, "normal": 18}, seed=3, size=(96, 120))
    return root


@pytest.fixture(scope="module")
def trained_run(phantom_root, tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    run = tmp_path_factory.mktemp("runs") / "smoke"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BUSI_VIEWER_HOME", str(home))
        patch.setenv("BUSI_AUDIT", str(home / "no-audit"))
        first = train_main(["fit", *SMOKE, "--data", str(phantom_root), "--out", str(run),
                            "--set", "train.max_epochs=2"])
        assert first == 0
        # an "interrupted" run continues from its checkpoint when asked for more epochs
        assert train_main(["fit", *SMOKE, "--data", str(phantom_root), "--out", str(run),
                           "--set", "train.max_epochs=4"]) == 0
        assert train_main(["evaluate", str(run)]) == 0
    return run


def test_fit_resumes_and_logs_every_epoch_once(trained_run):
    with (trained_run / "epochs.csv").open(newline="") as handle:
        epochs = [int(row["epoch"]) for row in csv.DictReader(handle)]
    assert epochs == [1, 2, 3, 4]
    fit = json.loads((trained_run / "fit.json").read_text())
    assert fit["epochs_run"] == 4 and fit["split_sizes"]["test"] > 0


def test_short_training_beats_chance_on_held_out_phantoms(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["test"]["auc_macro"] > 0.75
    assert metrics["validation"]["n"] > 0


def test_calibration_and_threshold_never_see_the_test_split(trained_run, tmp_path, monkeypatch):
    """Scrambling the test predictions leaves the temperature and the malignant threshold exactly as they were;
    scrambling the validation predictions moves them (so this test can fail)."""
    import shutil

    from training.pipeline import Predictions

    monkeypatch.setenv("BUSI_AUDIT", str(tmp_path / "no-audit"))
    before = json.loads((trained_run / "metrics.json").read_text())["operating_point"]
    assert before["calibrated_on"] == "validation" and before["threshold"] is not None

    def scrambled(split: str) -> dict:
        run = tmp_path / split
        shutil.copytree(trained_run, run)
        original = Predictions.load(run / f"predictions_{split}.npz")
        # negated and sharpened logits: a temperature or threshold fitted on them would be far from the real one
        Predictions(original.files, original.labels, -5.0 * original.logits, original.groups).save(
            run / f"predictions_{split}.npz")
        assert train_main(["evaluate", str(run)]) == 0
        return json.loads((run / "metrics.json").read_text())["operating_point"]

    after_test = scrambled("test")
    assert after_test["temperature"] == before["temperature"]
    assert after_test["threshold"] == before["threshold"]
    after_val = scrambled("val")
    assert not np.isclose(after_val["temperature"], before["temperature"])


def test_report_and_figures_are_written(trained_run):
    report = (trained_run / "report.md").read_text()
    assert "For research use only" in report and "## Explanations" in report
    band = json.loads((trained_run / "metrics.json").read_text())["test"]["ece_if_calibrated"]
    assert f"| {band['mean']:.3f} (95 %: {band['p95']:.3f}) |" in report  # beside the measured ECE
    for figure in ("learning_curves.png", "confusion_matrix.png", "roc.png", "reliability.png", "gradcam_test.png"):
        assert (trained_run / figure).stat().st_size > 5000


def test_exported_bundle_loads_in_busi_predict(trained_run, phantom_root, tmp_path, monkeypatch):
    monkeypatch.setenv("BUSI_AUDIT", str(tmp_path / "no-audit"))
    bundle = tmp_path / "bundle"
    assert train_main(["export", str(trained_run), "--to", str(bundle), "--version", "0.0.1-test"]) == 0
    loaded = load_bundle(bundle)
    assert loaded.card.version == "0.0.1-test" and loaded.card.preprocess.input_size == 64
    point = json.loads((trained_run / "metrics.json").read_text())["operating_point"]
    assert loaded.card.calibration_temperature == point["temperature"]  # the calibration travels with the weights
    assert loaded.card.thresholds == {"malignant": point["threshold"]}
    assert (bundle / "split_manifest.csv").is_file() and (bundle / "report.md").is_file()
    assert not (bundle / "gradcam_test.png").exists()  # dataset images never travel with a bundle
    out = tmp_path / "pred"
    assert predict_main([str(phantom_root / "malignant"), "--model", str(bundle), "--out", str(out),
                         "--no-progress"]) == 0
    with (out / "predictions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 18
    # every malignant phantom has a mask: the baseline is always scored, the model's map whenever it is non-zero
    assert all(row["baseline_energy_in_mask"] for row in rows)
    assert any(row["energy_in_mask"] for row in rows)

    # the scope check was fitted at export with the recipe's margin (1: none); a refit with a margin widens both
    # thresholds by exactly that factor
    def thresholds() -> np.ndarray:
        with np.load(bundle / "scope_guard.npz", allow_pickle=False) as arrays:
            return np.array([float(arrays["features_threshold"]), float(arrays["image_threshold"])])

    assert loaded.card.scope_guard["margin"] == 1.0
    tight = thresholds()
    assert train_main(["fit-scope", str(bundle), "--data", str(phantom_root), "--margin", "2.5"]) == 0
    assert thresholds() == pytest.approx(2.5 * tight, rel=1e-9)
    assert load_bundle(bundle).card.scope_guard["margin"] == 2.5


def test_bad_config_key_is_a_clear_error(phantom_root, capsys):
    assert train_main(["fit", "--config", "busi_smoke", "--set", "optim.learning_rate=1", "--data",
                       str(phantom_root)]) == 2
    assert "learning_rate" in capsys.readouterr().err


def test_cv_summary_averages_evaluated_runs(trained_run, tmp_path, capsys):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["test_argmax"]["n"] == metrics["test"]["n"]  # arg-max decisions reported beside the threshold
    out = tmp_path / "cv"
    assert train_main(["cv-summary", str(trained_run), str(trained_run), "--out", str(out)]) == 0
    summary = json.loads((out / "cv_summary.json").read_text())["summary"]
    accuracy = summary["accuracy (operating point)"]
    assert accuracy["mean"] == pytest.approx(metrics["test"]["accuracy"]) and accuracy["sd"] == 0
    assert summary["macro AUC (one-vs-rest)"]["mean"] == pytest.approx(metrics["test"]["auc_macro"])
    # the validation numbers a recipe is chosen on travel with the summary
    assert summary["validation macro AUC"]["mean"] == pytest.approx(metrics["validation"]["auc_macro"])
    assert summary["best validation loss"]["mean"] == pytest.approx(metrics["run"]["best_val_loss"])
    text = (out / "cv_summary.md").read_text()
    assert "| accuracy (arg-max) |" in text and "the single grouped split, seeds 0" in text
    capsys.readouterr()
    assert train_main(["cv-summary", str(tmp_path), "--out", str(out)]) == 2
    assert "has no metrics.json" in capsys.readouterr().err


def test_evaluate_under_one_pass_predicts_again_into_a_new_folder(trained_run, phantom_root, tmp_path, monkeypatch,
                                                                    capsys):
    """`evaluate RUN --set eval.tta_hflip=false --out DIR`: the smoke recipe averages each image with its mirror;
    the new folder's logits are one forward pass of the run's weights on the image as the app preprocesses it, the
    old ones the mean of that and the mirror's pass, and the run's own folder is left byte for byte."""
    import torch

    from busi_viewer.core.loader import load_image
    from busi_viewer.inference.preprocessing import normalise, resize_for_model
    from training.config import load_config
    from training.evaluate import load_run_model
    from training.pipeline import Predictions

    monkeypatch.setenv("BUSI_AUDIT", str(tmp_path / "no-audit"))
    before = {p.name: p.read_bytes() for p in trained_run.iterdir() if p.is_file()}
    out = tmp_path / "one-pass"
    assert train_main(["evaluate", str(trained_run), "--set", "eval.tta_hflip=false", "--out", str(out),
                       "--no-progress"]) == 0
    assert {p.name: p.read_bytes() for p in trained_run.iterdir() if p.is_file()} == before

    config = load_config(trained_run / "config.toml")
    assert config.eval.tta_hflip and not load_config(out / "config.toml").eval.tta_hflip
    assert load_config(out / "config.toml").description.endswith("; re-evaluated under eval.tta_hflip=false")
    model = load_run_model(trained_run, config, torch.device("cpu"))
    spec = config.preprocess_spec()
    for split in ("val", "test"):
        mirrored, one_pass = (Predictions.load(folder / f"predictions_{split}.npz") for folder in (trained_run, out))
        assert list(one_pass.files) == list(mirrored.files) and list(one_pass.groups) == list(mirrored.groups)
        assert np.array_equal(one_pass.labels, mirrored.labels)
        for i in (0, len(one_pass.files) - 1):
            x = torch.from_numpy(normalise(resize_for_model(load_image(phantom_root / one_pass.files[i]).rgb,
                                                            spec)[0], spec))[None]
            with torch.inference_mode():
                plain, mirror = model(x)[0].numpy(), model(torch.flip(x, dims=[3]))[0].numpy()
            np.testing.assert_allclose(one_pass.logits[i], plain, atol=1e-4)
            np.testing.assert_allclose(mirrored.logits[i], (plain + mirror) / 2, atol=1e-4)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["inference"]["mirror_averaged"] is False
    assert metrics["inference"]["derived_from"]["overrides"] == ["eval.tta_hflip=false"]
    report = (out / "report.md").read_text()
    assert "one pass per image" in report and f"weights of run `{trained_run.name}`" in report
    assert "mean of each image's and its mirror" in (trained_run / "report.md").read_text()

    capsys.readouterr()  # refused: a training setting, the run's own folder, an occupied folder, --set alone
    for argv, message in ((["--set", "optim.lr=1", "--out", str(tmp_path / "lr")], "optim.lr"),
                          (["--set", "eval.tta_hflip=false", "--out", str(trained_run)], "is not empty"),
                          (["--set", "eval.tta_hflip=true", "--out", str(out)], "is not empty"),
                          (["--set", "eval.tta_hflip=false"], "--set and --out go together")):
        assert train_main(["evaluate", str(trained_run), *argv]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "lr").exists()

    # an image the data folder no longer holds: a clear error, and neither the folder nor its staging copy is left
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(trained_run, damaged)
    test = Predictions.load(damaged / "predictions_test.npz")
    test.files[-1] = "benign/gone.png"
    test.save(damaged / "predictions_test.npz")
    assert train_main(["evaluate", str(damaged), "--set", "eval.tta_hflip=false", "--out", str(tmp_path / "half"),
                       "--no-progress"]) == 2
    assert "1 test images of damaged are not in its data folders (first: benign/gone.png)" in capsys.readouterr().err
    assert not (tmp_path / "half").exists() and not (tmp_path / "half.partial").exists()


def test_fit_fold_trains_on_that_fold_of_the_grouped_cross_validation(phantom_root, tmp_path, monkeypatch):
    """`busi-train fit --fold K` of a 3-fold grouped recipe: folds 0 and 1 hold out disjoint test images, about a
    third of the data each, and no audit group straddles a run's test boundary."""
    audit = tmp_path / "audit"
    monkeypatch.setenv("BUSI_AUDIT", str(audit))
    monkeypatch.setenv("BUSI_VIEWER_HOME", str(tmp_path / "home"))
    assert train_main(["audit", "--data", str(phantom_root), "--out", str(audit)]) == 0
    grouped = ["--config", "busi_smoke", "--set", "data.input_size=64", "--set", "split.folds=3",
               "--set", "train.max_epochs=1", "--no-progress", "--data", str(phantom_root)]
    tests = []
    for fold in (0, 1):
        run = tmp_path / f"fold{fold}"
        assert train_main(["fit", *grouped, "--fold", str(fold), "--out", str(run)]) == 0
        assert json.loads((run / "fit.json").read_text())["fold"] == fold
        with (run / "split_manifest.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        test = {r["file"] for r in rows if r["split"] == "test"}
        test_groups = {r["group"] for r in rows if r["split"] == "test"}
        assert not test_groups & {r["group"] for r in rows if r["split"] != "test"}
        assert abs(len(test) - len(rows) / 3) <= 4  # 54 phantoms in whole groups: 18 give or take a group
        tests.append(test)
    assert not tests[0] & tests[1]
