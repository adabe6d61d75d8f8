"""busi-predict writes its predictions whatever state the user's folders are in: a damaged reviews database
costs the reports their reviews (one warning), a home folder that cannot be made costs only its caches."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from busi_viewer.cli.predict import main
from busi_viewer.core.hashing import sha256_file
from busi_viewer.core.reviews import default_reviews_path
from busi_viewer.inference.bundle_files import ONNX_FILENAME, ONNX_RECORD_FILENAME
from tests.helpers.reviews import write_damaged_reviews


@pytest.fixture
def image_folder(tmp_path) -> Path:
    folder = tmp_path / "cases"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        Image.fromarray((rng.rayleigh(40, size=(120, 160)).clip(0, 255)).astype(np.uint8)).save(
            folder / f"case ({i}).png")
    return folder


def _database_files(folder: Path) -> dict[str, bytes]:
    """The files of a folder but SQLite's -wal and -shm, which exist while a connection is open."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.endswith(("-wal", "-shm"))}


def _predicted(out: Path) -> list[str]:
    with (out / "predictions.csv").open(newline="", encoding="utf-8") as handle:
        return [row["file"] for row in csv.DictReader(handle)]


def test_a_damaged_reviews_database_costs_the_reports_their_reviews_not_the_predictions(
        image_folder, tiny_bundle, tmp_path, capsys):
    # The images' own reviews lie on the damaged page: looking them up fails, not only opening the file.
    images = sorted(image_folder.iterdir())
    damaged = write_damaged_reviews(default_reviews_path(), extra=[(sha256_file(p), p.name) for p in images],
                                    damage_name=images[1].name)
    before = _database_files(damaged.parent)
    out = tmp_path / "out"
    assert main([str(image_folder), "--model", str(tiny_bundle), "--out", str(out), "--no-progress", "--pdf"]) == 0
    assert _predicted(out) == [p.name for p in images] and (out / "summary.pdf").is_file()
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "damaged" in warnings[0] and str(damaged) in warnings[0], warnings
    assert _database_files(damaged.parent) == before  # read-only: the file untouched, no copy made


def test_a_home_folder_that_cannot_be_made_costs_only_the_caches(image_folder, tiny_bundle, tmp_path, home_is_a_file,
                                                                  caplog):
    home = home_is_a_file
    bundle = tmp_path / "bundle"  # no ONNX export: a source install makes one into the cache on the CPU
    shutil.copytree(tiny_bundle, bundle, ignore=shutil.ignore_patterns(ONNX_FILENAME, ONNX_RECORD_FILENAME))
    out = tmp_path / "out"
    assert main([str(image_folder), "--model", str(bundle), "--out", str(out), "--no-progress", "--pdf",
                 "--device", "cpu"]) == 0
    assert _predicted(out) == sorted(p.name for p in image_folder.iterdir())
    assert f"cannot use the data folder {home / 'data'}" in caplog.text  # the reviews looked up for the PDF
    assert f"cannot use the cache folder {home / 'cache'}" in caplog.text  # the ONNX export made for the CPU
    assert not (bundle / ONNX_FILENAME).exists()
