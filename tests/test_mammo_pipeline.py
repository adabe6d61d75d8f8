"""The mammography recipe end to end on synthetic mammogram-like films in mini-MIAS layout: patient-level split,
selective freezing, cyclic learning rate, CLAHE, evaluation, the freezing sweep, and an MG model bundle."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from busi_viewer.inference.bundle import load_bundle
from training.cli import main as train_main
from training.config import load_config
from training.data import index_mias
from training.pipeline import make_splits
from training.recipe import cyclic_learning_rate

FILMS = 32  # 16 women, two films each
SMALL = ["--set", "data.input_size=64", "--set", "train.max_epochs=3", "--set", "train.batch_size=8",
         "--set", "schedule.cycle_step_size=3", "--set", "eval.bootstrap=50", "--set", "split.fractions=0.6,0.2,0.2",
         "--set", "data.decode_threads=2"]


def _film(rng: np.random.Generator, finding: str, centre: tuple[int, int], radius: int, right: bool) -> np.ndarray:
    """A 1024 x 1024 8-bit film: dark background, a bright half-disc breast on one side, maybe a lesion."""
    film = np.zeros((1024, 1024), np.uint8)
    cv2.ellipse(film, (1023 if right else 0, 512), (700, 480), 0, 0, 360, 90, -1)
    film = cv2.add(film, rng.integers(0, 40, film.shape, dtype=np.uint8))
    if finding != "normal":
        row, col = centre
        if finding == "malignant":  # spiculated: a bright core with rays
            for angle in np.linspace(0, np.pi, 9):
                dx, dy = int(radius * 1.8 * np.cos(angle)), int(radius * 1.8 * np.sin(angle))
                cv2.line(film, (col - dx, row - dy), (col + dx, row + dy), 230, 6)
            cv2.circle(film, (col, row), radius // 2, 250, -1)
        else:  # circumscribed: a smooth round mass
            cv2.circle(film, (col, row), radius, 200, -1)
    return film


@pytest.fixture(scope="module")
def mias_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mini-mias")
    (root / "png").mkdir()
    rng = np.random.default_rng(5)
    lines = ["Synthetic films for tests, in mini-MIAS's Info.txt format.", ""]
    for number in range(1, FILMS + 1):
        finding = ("normal", "benign", "malignant", "benign" if number % 7 else "malignant")[number % 4]
        reference, right = f"mdb{number:03d}", number % 2 == 1
        col = int(rng.integers(650, 850)) if right else int(rng.integers(170, 370))
        row, radius = int(rng.integers(300, 720)), int(rng.integers(40, 70))
        cv2.imwrite(str(root / "png" / f"{reference}.png"), _film(rng, finding, (row, col), radius, right))
        if finding == "normal":
            lines.append(f"{reference} F NORM ")
        else:  # Info.txt's y counts from the bottom
            lines.append(f"{reference} G {'SPIC' if finding == 'malignant' else 'CIRC'} "
                         f"{'M' if finding == 'malignant' else 'B'} {col} {1024 - row} {radius}")
    (root / "Info.txt").write_text("\n".join(lines) + "\n", encoding="latin-1")
    return root


def test_the_patient_split_never_separates_a_womans_two_films(mias_root, tmp_path):
    config_path = Path(__file__).resolve().parents[1] / "training" / "configs" / "mammo_lite0_abnormal.toml"
    for seed in range(6):
        config = load_config(config_path, [f"split.seed={seed}"])
        index = index_mias(mias_root, config.data.task)
        splits, groups = make_splits(config, index, None)
        part_of = {int(i): name for name, positions in splits.items() for i in positions}
        assert sorted(part_of) == list(range(len(index)))  # every film in exactly one part
        parts_of_patient = defaultdict(set)
        for i, sample in enumerate(index):
            parts_of_patient[sample.patient].add(part_of[i])
        assert all(len(parts) == 1 for parts in parts_of_patient.values())
        assert groups == [s.patient for s in index] and len(set(groups)) == FILMS // 2


def test_lesion_centred_crops_cut_the_film_and_move_the_mask_with_it(mias_root):
    from busi_viewer.inference.model_card import PreprocessSpec
    from training.data import decode_sample, sample_image, sample_mask

    whole = {s.relpath: s for s in index_mias(mias_root, "benign-vs-malignant")}
    cropped = index_mias(mias_root, "benign-vs-malignant", lesion_crops=True)
    assert len(cropped) == len(whole) and all(s.crop is not None for s in cropped)  # every synthetic lesion is located
    sample = cropped[0]
    top, left, bottom, right = sample.crop
    row, col, radius = sample.circles[0]
    assert top <= row < bottom and left <= col < right
    rgb = sample_image(sample)
    assert rgb.shape[:2] == (bottom - top, right - left)
    mask = sample_mask(sample, rgb.shape[:2])
    assert mask[row - top, col - left] and mask.sum() == pytest.approx(np.pi * radius**2, rel=0.05)
    full_mask = sample_mask(whole[sample.relpath], (1024, 1024))
    assert np.array_equal(mask, full_mask[top:bottom, left:right])
    image, small_mask = decode_sample(sample, PreprocessSpec(input_size=64))
    assert image.shape == (64, 64, 3) and small_mask.any()
    normal_vs_abnormal = index_mias(mias_root, "normal-vs-abnormal", lesion_crops=True)
    assert all(s.class_name == "abnormal" for s in normal_vs_abnormal)  # normal films have no region to crop


@pytest.fixture(scope="module")
def mammo_run(mias_root, tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    run = tmp_path_factory.mktemp("runs") / "mammo"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BUSI_VIEWER_HOME", str(home))
        assert train_main(["fit", "--config", "mammo_lite0_abnormal", *SMALL, "--data", str(mias_root),
                           "--out", str(run), "--no-progress", "--evaluate"]) == 0
    return run


def test_a_mammography_run_freezes_cycles_equalises_and_reports(mammo_run):
    fit = json.loads((mammo_run / "fit.json").read_text())
    assert fit["freezing"]["frozen_stages"] == 4 and fit["freezing"]["stages"] == 8
    with (mammo_run / "epochs.csv").open(newline="") as handle:
        rates = [float(row["lr"]) for row in csv.DictReader(handle)]
    # The log shows the rate at the start of each epoch: where the per-batch cycle had got to.
    steps = math.ceil(fit["train_items_per_epoch"] / 8)
    assert rates == pytest.approx([cyclic_learning_rate(e * steps, 1e-5, 1e-3, 3, "triangular2") for e in range(3)])
    config = load_config(mammo_run / "config.toml")
    assert config.preprocess_spec().equalisation == "clahe"
    metrics = json.loads((mammo_run / "metrics.json").read_text())
    assert metrics["test"]["class_names"] == ["normal", "abnormal"]
    report = (mammo_run / "report.md").read_text()
    assert "mini-MIAS" in report and "by patient" in report and "first 4 of 8 backbone stages" in report
    assert "auc_abnormal" in report


def test_the_exported_bundle_is_a_mammography_model(mammo_run, mias_root, tmp_path):
    bundle = tmp_path / "mg"
    assert train_main(["export", str(mammo_run), "--to", str(bundle), "--name", "mias-mg",
                       "--version", "0.0.1-test"]) == 0
    card = load_bundle(bundle).card
    assert card.modality == "MG" and card.class_names == ("normal", "abnormal")
    assert card.preprocess.equalisation == "clahe" and "mini-MIAS" in card.training_data
    assert "patients" in card.protocol and "mammograms" in card.intended_use
    rows = list(csv.DictReader((bundle / "split_manifest.csv").open(newline="")))
    assert {row["group"] for row in rows} <= {f"patient-{k:03d}" for k in range(1, FILMS // 2 + 1)}


def _split_of(run: Path) -> dict[str, str]:
    return {row["file"]: row["split"] for row in csv.DictReader((run / "split_manifest.csv").open(newline=""))}


def test_the_freezing_sweep_writes_its_table_and_plot(mias_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BUSI_VIEWER_HOME", str(tmp_path / "home"))
    out, runs = tmp_path / "sweep", tmp_path / "runs"
    command = ["sweep-freezing", "--config", "mammo_lite0_abnormal", *SMALL, "--set", "train.max_epochs=1",
               "--data", str(mias_root), "--ratios", "0,0.75", "--seeds", "3,4", "--runs", str(runs),
               "--out", str(out), "--no-progress"]
    assert train_main(command) == 0
    sweep = json.loads((out / "freezing_sweep.json").read_text())
    rows = sweep["rows"]
    assert [(r["seed"], r["ratio"]) for r in rows] == [(3, 0.0), (3, 0.75), (4, 0.0), (4, 0.75)]
    assert [r["frozen_stages"] for r in rows] == [0, 6, 0, 6]
    assert rows[1]["frozen_parameters"] > rows[0]["frozen_parameters"] == 0
    variant = load_config(runs / rows[1]["run"] / "config.toml")
    assert variant.model.freeze_ratio == 0.75 and variant.description.endswith("freezing ratio 0.75")
    assert variant.split.seed == 3
    # Paired within a seed (one split for every ratio), a new split for each seed.
    splits = [_split_of(runs / r["run"]) for r in rows]
    assert splits[0] == splits[1] and splits[2] == splits[3] and splits[0] != splits[2]

    by_ratio = {s["ratio"]: s for s in sweep["summary"]}
    for ratio, summary in by_ratio.items():
        aucs = [r["auc"] for r in rows if r["ratio"] == ratio]
        assert summary["seeds"] == [3, 4] and summary["test_auc"]["n"] == 2
        assert math.isclose(summary["test_auc"]["mean"], sum(aucs) / 2)
        assert math.isclose(summary["test_auc"]["sd"], abs(aucs[0] - aucs[1]) / math.sqrt(2))
    assert sum(s["best_on_validation"] for s in by_ratio.values()) >= 2  # each seed's best (ties count twice)
    table = (out / "freezing_sweep.md").read_text()
    assert "## Over seeds" in table and "| 0.75 | 6 of 8 |" in table and "| 0.75 | 4 | 6 of 8 |" in table
    assert "abnormal" in table and "seeds 3, 4" in table
    assert (out / "freezing_sweep.png").stat().st_size > 5000

    # Finished runs are reused, not refitted ...
    weights = runs / rows[0]["run"] / "best.pt"
    stamp = weights.stat().st_mtime_ns
    assert train_main(command) == 0 and weights.stat().st_mtime_ns == stamp
    # ... unless they hold another recipe: then the sweep says so instead of mixing recipes.
    capsys.readouterr()
    assert train_main([*command, "--set", "optim.lr=0.5"]) == 2
    assert "another recipe" in capsys.readouterr().err


def test_the_sweep_summary_counts_each_seeds_best_validation_ratio():
    def row(ratio, seed, auc, validation):
        return {"ratio": ratio, "seed": seed, "auc": auc, "validation_auc": validation, "accuracy": 0.5,
                "fit_seconds": 10.0, "frozen_stages": int(ratio * 8), "stages": 8}

    rows = [row(0.0, 0, 0.6, 0.7), row(0.5, 0, 0.8, 0.9), row(0.0, 1, 0.7, 0.8), row(0.5, 1, 0.9, 0.8),
            row(0.0, 2, None, 0.6), row(0.5, 2, 0.5, None)]
    from training.sweep import summarise

    first, second = summarise(rows)
    assert (first["ratio"], second["ratio"]) == (0.0, 0.5)
    assert first["best_on_validation"] == 2 and second["best_on_validation"] == 2  # seed 1 ties; seed 2 has one
    assert first["test_auc"]["n"] == 2 and math.isclose(first["test_auc"]["mean"], 0.65)
    assert second["test_auc"] == {"mean": 0.7333333333333334, "sd": second["test_auc"]["sd"], "min": 0.5,
                                  "max": 0.9, "n": 3}
    assert math.isclose(second["validation_auc"]["mean"], 0.85) and second["validation_auc"]["n"] == 2


@pytest.mark.parametrize(("seeds", "message"), [("1,1", "repeats a seed"), ("0,x", "not a comma-separated list")])
def test_bad_sweep_seeds_are_a_clear_error(tmp_path, capsys, seeds, message):
    assert train_main(["sweep-freezing", "--config", "mammo_lite0", "--seeds", seeds, "--runs", str(tmp_path / "runs"),
                       "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "runs").exists()
