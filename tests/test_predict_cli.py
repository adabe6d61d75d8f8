"""busi-predict end to end on a folder of generated images, a bad file, a DICOM and a lesion mask."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from busi_viewer.cli.predict import main
from busi_viewer.core.labels import CLASS_NAMES


def _phantom(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    speckle = rng.rayleigh(40, size=(height, width))
    yy, xx = np.mgrid[0:height, 0:width]
    lesion = ((yy - height / 2) / (height / 6)) ** 2 + ((xx - width / 2) / (width / 5)) ** 2 <= 1
    speckle[lesion] *= 0.25
    return np.clip(speckle, 0, 255).astype(np.uint8), lesion


@pytest.fixture
def image_folder(tmp_path) -> Path:
    folder = tmp_path / "cases"
    (folder / "sub").mkdir(parents=True)
    image, lesion = _phantom(180, 240, 1)
    Image.fromarray(image).save(folder / "case (2).png")
    Image.fromarray((lesion * 255).astype(np.uint8)).save(folder / "case (2)_mask.png")
    Image.fromarray(_phantom(200, 150, 2)[0]).convert("RGB").save(folder / "case (10).jpg", quality=95)
    Image.fromarray(_phantom(90, 120, 3)[0]).save(folder / "sub" / "deep.bmp")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (folder / "notes.txt").write_text("not an image")
    return folder


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_predicts_every_readable_image_and_reports_the_bad_one(image_folder, tiny_bundle, tmp_path):
    out = tmp_path / "out"
    code = main([str(image_folder), "--model", str(tiny_bundle), "--out", str(out), "--heatmaps", "--no-progress"])
    assert code == 0
    rows = _rows(out / "predictions.csv")
    assert [r["file"] for r in rows] == ["case (2).png", "case (10).jpg", "sub/deep.bmp"]
    for row in rows:
        probabilities = [float(row[f"p_{name}"]) for name in CLASS_NAMES]
        assert abs(sum(probabilities) - 1) < 1e-4
        assert row["predicted_class"] == CLASS_NAMES[int(np.argmax(probabilities))]
        assert row["status"] == "ok"
    with_mask = rows[0]
    assert 0.0 <= float(with_mask["energy_in_mask"]) <= 1.0
    assert with_mask["pointing_hit"] in {"0", "1"} and with_mask["baseline_pointing_hit"] == "1"
    assert rows[1]["iou"] == "" and rows[1]["energy_in_mask"] == ""
    errors = {e["file"]: e["reason"] for e in _rows(out / "errors.csv")}
    # every input not predicted is listed; the mask (used as a mask) is not
    assert errors.keys() == {"notes.txt", "broken.png"}
    assert errors["notes.txt"] == "skipped: not an image file (.txt)" and errors["broken.png"]
    # rows join the reports and PNGs by case id ("case-" + the file's SHA-256 prefix) and name the model
    for row in rows:
        digest = hashlib.sha256((image_folder / row["file"]).read_bytes()).hexdigest()
        assert row["case_id"] == f"case-{digest[:10]}" and row["model"] == "test-random 0.0.1"
    heatmap = np.asarray(Image.open(out / "heatmaps" / f"{rows[0]['case_id']}.png"))
    assert heatmap.shape[1] == 240 * 2 + 8 and heatmap.shape[0] > 180 + 60  # pictures above a legend
    # the right half is the overlay: it must differ from the plain image on the left
    assert np.abs(heatmap[:180, :240].astype(int) - heatmap[:180, 248:].astype(int)).mean() > 1
    assert sorted(p.name for p in (out / "heatmaps").iterdir()) == sorted(f"{r['case_id']}.png" for r in rows)
    # the legend is drawn: dark text on white below the pictures
    assert (heatmap[180:] < 100).mean() > 0.01
    shots = Path("/tmp/widget_shots")  # looked at by eye
    shots.mkdir(parents=True, exist_ok=True)
    Image.fromarray(heatmap).save(shots / "busi_predict_heatmap.png")


def test_json_lines_hold_the_same_rows(image_folder, tiny_bundle, tmp_path):
    out = tmp_path / "out"
    assert main([str(image_folder), "--model", str(tiny_bundle), "--out", str(out), "--json", "--no-progress"]) == 0
    rows = _rows(out / "predictions.csv")
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [line["file"] for line in lines] == [r["file"] for r in rows]
    for line, row in zip(lines, rows):
        assert line["case_id"] == row["case_id"] and line["predicted_class"] == row["predicted_class"]
        assert line["p_malignant"] == pytest.approx(float(row["p_malignant"]), abs=1e-6)
        assert line["low_confidence"] is (row["low_confidence"] == "1")
        assert line["in_scope"] is None and line["scope_score"] is None  # the test bundle has no guard
    assert lines[1]["iou"] is None and isinstance(lines[0]["pointing_hit"], bool)


def test_an_empty_folder_says_so_and_writes_nothing(tmp_path, tiny_bundle, capsys):
    folder = tmp_path / "only-masks"
    folder.mkdir()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(folder / "case_mask.png")
    out = tmp_path / "o"
    assert main([str(folder), "--model", str(tiny_bundle), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"no images found in {folder} (1 lesion mask(s), 0 other file(s)); nothing written" in err
    assert not out.exists()


def test_devices_are_the_same_choices_as_the_other_tools(image_folder, tiny_bundle, tmp_path, capsys):
    assert main([str(image_folder), "--model", str(tiny_bundle), "--out", str(tmp_path / "o"), "--device", "auto",
                 "--no-progress"]) == 0
    assert "1 lesion mask(s) used as masks, 1 other file(s) skipped" in capsys.readouterr().err  # notes.txt


def test_refuses_to_overwrite_without_force(image_folder, tiny_bundle, tmp_path, capsys):
    out = tmp_path / "out"
    args = [str(image_folder), "--model", str(tiny_bundle), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    before = (out / "predictions.csv").read_bytes()
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "predictions.csv").read_bytes() == before
    assert main(args + ["--force"]) == 0


def test_missing_model_is_a_clear_error(image_folder, tmp_path, capsys):
    code = main([str(image_folder), "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_an_installed_model_can_be_named(image_folder, tiny_bundle, tmp_path, monkeypatch, capsys):
    resources = tmp_path / "resources"
    shutil.copytree(tiny_bundle, resources / "models" / "tiny-us")
    monkeypatch.setenv("BUSI_VIEWER_RESOURCES", str(resources))
    monkeypatch.chdir(tmp_path)
    assert main([str(image_folder), "--model", "tiny-us", "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert [row["status"] for row in _rows(tmp_path / "o" / "predictions.csv")] == ["ok"] * 3
    capsys.readouterr()
    assert main([str(image_folder), "--model", "tiny-mg", "--out", str(tmp_path / "p")]) == 2
    assert "tiny-mg does not exist (installed models: tiny-us)" in capsys.readouterr().err


def test_default_model_location_says_no_trained_model_is_installed(image_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BUSI_VIEWER_RESOURCES", str(tmp_path / "resources"))
    assert main([str(image_folder), "--out", str(tmp_path / "o")]) == 2
    assert "no trained model is installed" in capsys.readouterr().err


def test_folder_with_only_bad_files_exits_1(tmp_path, tiny_bundle):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"")
    code = main([str(folder), "--model", str(tiny_bundle), "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 1
    assert _rows(tmp_path / "o" / "errors.csv")[0]["file"] == "a.png"


def test_dicom_ultrasound_is_predicted(dicom_dir, tiny_bundle, tmp_path):
    out = tmp_path / "out"
    code = main([str(dicom_dir / "us"), "--model", str(tiny_bundle), "--out", str(out), "--no-progress"])
    assert code == 0
    assert len(_rows(out / "predictions.csv")) == 9


def test_console_script_runs_in_a_subprocess(image_folder, tiny_bundle, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "busi_viewer.cli.predict", str(image_folder), "--model", str(tiny_bundle),
         "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "For research use only" in result.stderr
    assert "3 image(s) processed, 1 unreadable" in result.stderr


def test_pdf_reports_headless_are_de_identified_unless_asked(image_folder, tiny_bundle, tmp_path, capsys):
    pytest.importorskip("pypdf")
    from tests.helpers.pdf import pdf_text as text

    out = tmp_path / "out"
    args = [str(image_folder), "--model", str(tiny_bundle), "--out", str(out), "--no-progress", "--pdf",
            "--pdf-per-image"]
    assert main(args) == 0
    summary = text(out / "summary.pdf")
    per_image = sorted((out / "reports").glob("case-*.pdf"))
    assert len(per_image) == 3 and "3 images" in summary and "1 not classified" in summary
    assert "broken.png" not in summary and "case-" in summary.split("Not classified (1)")[1]
    assert all(p.stem in summary for p in per_image)  # each report is named by the case id the summary lists
    for name in ("case (2)", "case (10)", "deep", "cases"):
        assert name not in summary, name
    assert "For research use only — not for diagnostic use" in summary and "test-random 0.0.1" in summary
    one = text(next(p for p in per_image if "IoU (Otsu threshold)" in text(p)))  # the image with a mask
    assert "Heatmap vs lesion mask" in one and "De-identified" in one
    capsys.readouterr()
    (out / "predictions.csv").unlink()
    (out / "errors.csv").unlink()
    before = (out / "summary.pdf").read_bytes()
    assert main(args) == 2  # summary.pdf exists: never overwritten without --force
    assert "summary.pdf already exists" in capsys.readouterr().err
    assert (out / "summary.pdf").read_bytes() == before
    assert main([*args, "--force", "--include-identifiers"]) == 0
    named = text(out / "summary.pdf")
    assert "case (2).png" in named and "deep.bmp" in named and "broken.png" in named


def test_images_of_another_modality_are_classified_but_flagged(tiny_bundle, tmp_path):
    from tests.helpers.dicom import write_dicom

    folder = tmp_path / "mixed"
    folder.mkdir()
    rng = np.random.default_rng(3)
    write_dicom(folder / "us.dcm", (rng.random((90, 120)) * 255).astype(np.uint8), Modality="US")
    write_dicom(folder / "mg.dcm", (rng.random((120, 90)) * 4095).astype(np.uint16), Modality="MG", BitsStored=12)
    from tests.helpers.pdf import pdf_text

    out = tmp_path / "out"
    assert main([str(folder), "--model", str(tiny_bundle), "--out", str(out), "--no-progress", "--pdf",
                 "--pdf-per-image"]) == 0
    assert sorted(r["file"] for r in _rows(out / "predictions.csv")) == ["mg.dcm", "us.dcm"]
    (flag,) = _rows(out / "errors.csv")  # the ultrasound model saw a mammogram: said, not hidden
    assert flag["file"] == "mg.dcm" and "trained on ultrasound images and this image is mammography" in flag["reason"]
    reports = {pdf: pdf_text(pdf) for pdf in (out / "reports").glob("*.pdf")}
    flagged = [pdf for pdf, text in reports.items() if "Out of scope: this model was trained on ultrasound" in text]
    assert len(reports) == 2 and len(flagged) == 1 and "MG" in reports[flagged[0]]  # the mammogram's report says it
    summary = pdf_text(out / "summary.pdf")
    assert summary.count("out of scope (most probable:") == 1
    rows = {r["file"]: r for r in _rows(out / "predictions.csv")}
    assert rows["mg.dcm"]["in_scope"] == "no" and rows["us.dcm"]["in_scope"] == ""  # no guard: unknown


def test_mask_dir_supplies_masks_kept_in_another_folder(tiny_bundle, tmp_path):
    """A mask in --mask-dir is found by the image's name and scored: with the mask the top half of the image, the
    centre prior (symmetric about the image centre) has exactly half its energy inside it, by symmetry."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    image, _ = _phantom(160, 200, 4)
    Image.fromarray(image).save(images / "case.png")
    top_half = np.zeros((160, 200), np.uint8)
    top_half[:80] = 255
    Image.fromarray(top_half).save(masks / "case_mask.png")
    without, with_dir = tmp_path / "without", tmp_path / "with"
    assert main([str(images), "--model", str(tiny_bundle), "--out", str(without), "--no-progress"]) == 0
    assert main([str(images), "--model", str(tiny_bundle), "--out", str(with_dir), "--no-progress",
                 "--mask-dir", str(masks)]) == 0
    (plain,) = _rows(without / "predictions.csv")
    (scored,) = _rows(with_dir / "predictions.csv")
    assert plain["energy_in_mask"] == "" and plain["baseline_energy_in_mask"] == ""
    assert float(scored["baseline_energy_in_mask"]) == pytest.approx(0.5, abs=1e-3)
    assert 0.0 <= float(scored["energy_in_mask"]) <= 1.0 and scored["iou"] != ""
