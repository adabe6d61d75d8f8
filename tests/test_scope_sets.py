"""Out-of-scope image sets (training/scope_sets.py): built offline, from tmp folders, never from ../shared."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from tests.helpers.dicom import write_dicom
from training import scope_sources
from training.scope_documents import render_documents
from training.scope_sets import MIN_SIDE, build_out_of_scope_sets
from training.scope_sources import DOCUMENT_PAGES, MAX_US_FRAMES, spaced, window_percentiles


def _csv_rows(out_dir: Path) -> list[dict[str, str]]:
    with (out_dir / "sources.csv").open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _check_listing(out_dir: Path, result: dict[str, list[Path]]) -> list[dict[str, str]]:
    """sources.csv lists exactly the files returned and on disk, each a decodable PNG of at least 64 px a side."""
    rows = _csv_rows(out_dir)
    listed = {out_dir / row["file"] for row in rows}
    returned = {path for files in result.values() for path in files}
    on_disk = {path for name in result for path in (out_dir / name).glob("*")}
    assert listed == returned == on_disk
    for row in rows:
        assert row["origin"] and row["licence"] and row["set"] in result
        with Image.open(out_dir / row["file"]) as im:
            assert im.format == "PNG" and im.mode in ("L", "RGB") and min(im.size) >= MIN_SIDE
    return rows


@pytest.fixture
def no_package_images(monkeypatch):
    """Leave out the images shipped in packages, so that a test sees only the folders it makes."""
    for catalogue in ("PACKAGE_PHOTOS", "PACKAGE_DOCUMENTS", "PYDICOM_PHOTOS", "PYDICOM_CT_MR", "PYDICOM_ULTRASOUND",
                      "NIBABEL_VOLUMES", "MATPLOTLIB_MRI"):
        monkeypatch.setattr(scope_sources, catalogue, [])


def test_documents_are_grey_text_pages(tmp_path, no_package_images):
    out = tmp_path / "out"
    result = build_out_of_scope_sets(out, tmp_path / "no-dicom", tmp_path / "no-mias", sets=["documents"])
    assert list(result) == ["documents"]
    rows = _check_listing(out, result)
    assert len(rows) == DOCUMENT_PAGES >= 20
    assert {row["origin"].split("-")[0] for row in rows} == {"rendered:dense_text", "rendered:table", "rendered:form"}
    for row in rows:
        page = np.asarray(Image.open(out / row["file"]))
        assert page.ndim == 2 and page.dtype == np.uint8  # greyscale, 8-bit
        ink = (page < 128).mean()
        assert 0.005 < ink < 0.5, f"{row['file']} looks blank or solid ({ink:.3f} dark)"
        assert np.median(page) > 200  # paper, not a dark image
    first, fourth = (np.asarray(Image.open(out / rows[i]["file"])) for i in (0, 3))
    assert np.array_equal(first, next(render_documents(1))[1])  # seeded: the same page every run
    assert not np.array_equal(first, fourth)  # same layout, another seed: another page


def test_missing_folders_and_packages_are_skipped(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(scope_sources, "PACKAGE_PHOTOS", [("no_such_package_xyz", "photo.png", "none")])
    monkeypatch.setattr(scope_sources, "PYDICOM_PHOTOS", [("no_such_file.dcm",)])
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="training.scope_sets"):
        result = build_out_of_scope_sets(out, tmp_path / "absent-dicom", tmp_path / "absent-mias",
                                         sets=["photographs", "mammograms"])
    assert result == {"photographs": [], "mammograms": []}
    assert _check_listing(out, result) == []
    notes = caplog.text
    assert "absent-mias" in notes and "no_such_package_xyz:photo.png not on disk" in notes
    assert "no_such_file.dcm not on disk" in notes


def test_photographs_from_installed_packages(tmp_path, monkeypatch):
    pytest.importorskip("skimage")
    monkeypatch.setattr(scope_sources, "PACKAGE_PHOTOS", scope_sources.PACKAGE_PHOTOS[:3])  # astronaut, camera...
    monkeypatch.setattr(scope_sources, "PYDICOM_PHOTOS", [])
    out = tmp_path / "out"
    result = build_out_of_scope_sets(out, tmp_path / "none", tmp_path / "none", sets=["photographs"])
    rows = _check_listing(out, result)
    assert [row["origin"] for row in rows] == ["skimage:data/astronaut.png", "skimage:data/camera.png",
                                               "skimage:data/chelsea.png"]
    assert Image.open(result["photographs"][0]).mode == "RGB" and Image.open(result["photographs"][1]).mode == "L"


def test_shared_folders_are_sorted_by_modality(tmp_path, no_package_images):
    dicom, mias = tmp_path / "dicom", tmp_path / "mias"
    (dicom / "us").mkdir(parents=True)
    (dicom / "mg").mkdir()
    mias.mkdir()
    rng = np.random.default_rng(0)
    head = np.full((96, 96), -3000, np.int16)  # padding outside the reconstruction circle, then air and tissue
    head[8:88, 8:88] = -1000
    head[24:72, 24:72] = rng.integers(0, 80, (48, 48))
    write_dicom(dicom / "ct.dcm", head, Modality="CT")
    write_dicom(dicom / "mg" / "mammo.dcm", rng.integers(0, 4096, (128, 96)).astype(np.uint16), BitsStored=12)
    write_dicom(dicom / "us" / "breast.dcm", rng.integers(0, 255, (80, 80)).astype(np.uint8), Modality="US",
                BodyPartExamined="BREAST")
    shutil.copy(get_testdata_file("examples_ybr_color.dcm"), dicom / "us")  # 30-frame cardiac cine
    (dicom / "README.md").write_text("not an image")
    (dicom / "junk.dcm").write_bytes(b"\x00" * 300)
    Image.fromarray(rng.integers(0, 255, (100, 80), dtype=np.uint8)).save(mias / "mdb001.png")
    Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(mias / "mdb002.png")  # too small

    out = tmp_path / "out"
    result = build_out_of_scope_sets(out, dicom, mias, sets=["ct_mr", "mammograms", "other_ultrasound"])
    rows = _check_listing(out, result)
    origins = {name: [row["origin"] for row in rows if row["set"] == name] for name in result}
    assert origins["ct_mr"] == ["shared_dicom:ct.dcm"]
    assert origins["mammograms"] == ["mini-MIAS:mdb001.png", "shared_dicom:mg/mammo.dcm"]
    expected_frames = [f"shared_dicom:us/examples_ybr_color.dcm#frame{i}" for i in spaced(30, MAX_US_FRAMES)]
    assert origins["other_ultrasound"] == expected_frames and len(expected_frames) == MAX_US_FRAMES

    ct = np.asarray(Image.open(result["ct_mr"][0]))
    assert ct.shape == (96, 96) and ct[0, 0] == 0 and ct[40:60, 40:60].std() > 20  # tissue keeps its contrast
    assert result["mammograms"][0].read_bytes() == (mias / "mdb001.png").read_bytes()  # copied, not re-encoded


def test_window_percentiles_ignores_background():
    image = np.zeros((100, 100), np.uint16)  # 60 % padding, the rest a ramp of tissue values
    image[:, 60:] = np.linspace(1000, 1100, 40)
    grey = window_percentiles(image)
    assert grey[:, :60].max() == 0 and grey[:, 60:].min() <= 5 and grey[:, 60:].max() >= 250
    assert window_percentiles(np.full((8, 8), 7.0)).max() == 0  # flat: no division by zero
