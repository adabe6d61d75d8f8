"""busi-predict under interruption and on huge images: rows written as images finish, SIGTERM / Ctrl+C end the run
cleanly with every finished row kept, --resume continues it, and decoded images and heatmaps stay bounded."""

from __future__ import annotations

import csv
import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from busi_viewer.cli.predict import _decoded_batches, main
from busi_viewer.cli.result_files import ResultFiles, ResumeError
from busi_viewer.core.image_record import ImageRecord

N_IMAGES = 24


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def many_images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        Image.fromarray(rng.integers(0, 256, (96, 128), dtype=np.uint8)).save(folder / f"img{i:02d}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    return folder


def _start(folder: Path, bundle: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "busi_viewer.cli.predict", str(folder), "--model", str(bundle), "--out", str(out),
               "--no-progress", "--batch-size", "1", "--json", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_rows(out: Path, process: subprocess.Popen, at_least: int) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        path = out / "predictions.csv"
        if path.exists() and len(path.read_text(encoding="utf-8").splitlines()) - 1 >= at_least:
            return
        time.sleep(0.05)
    pytest.fail(f"busi-predict never wrote {at_least} rows (exit {process.poll()}): {process.stderr.read()}")


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_run_cleanly_and_resume_finishes_it(many_images, tiny_bundle, tmp_path, signum, status):
    out = tmp_path / "out"
    process = _start(many_images, tiny_bundle, out)
    _wait_for_rows(out, process, at_least=3)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr
    assert "Traceback" not in stderr and "--resume" in stderr
    assert not list(out.glob(".*partial")), "no temporary files are left behind"
    first = _rows(out / "predictions.csv")
    assert 3 <= len(first) < N_IMAGES, "it stopped early, with the finished rows kept"
    assert all(row["status"] == "ok" and row["p_benign"] for row in first)
    jsonl = (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(jsonl) == len(first)

    process = _start(many_images, tiny_bundle, out, "--resume")
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    rows = _rows(out / "predictions.csv")
    assert rows[: len(first)] == first, "rows of the first run are kept as they were"
    assert sorted(row["file"] for row in rows) == [f"img{i:02d}.png" for i in range(N_IMAGES)]
    assert len((out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()) == N_IMAGES
    errors = _rows(out / "errors.csv")
    assert [row["file"] for row in errors] == ["broken.png"], "tried again, listed once"


def test_resume_drops_a_row_cut_short_by_a_kill_and_tries_that_image_again(many_images, tiny_bundle, tmp_path):
    out = tmp_path / "out"
    assert main([str(many_images), "--model", str(tiny_bundle), "--out", str(out), "--no-progress"]) == 0
    complete = _rows(out / "predictions.csv")
    lines = (out / "predictions.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    # As SIGKILL leaves it: five rows done, the sixth written halfway, no newline after it.
    (out / "predictions.csv").write_text("".join(lines[:6]) + lines[6][:25], encoding="utf-8")
    assert main([str(many_images), "--model", str(tiny_bundle), "--out", str(out), "--no-progress", "--resume"]) == 0
    rows = _rows(out / "predictions.csv")
    assert len(rows) == N_IMAGES and rows[:5] == complete[:5]
    assert {row["file"]: row["p_malignant"] for row in rows} == {row["file"]: row["p_malignant"] for row in complete}


def test_resume_keeps_only_rows_that_end_with_a_newline(tmp_path):
    """A kill can cut the last row inside its last value ("0.25" of "0.2534"): the field count alone would pass it."""
    (tmp_path / "predictions.csv").write_text("file,model,p\r\na.png,m 1,0.5\r\nb.png,m 1,0.25", encoding="utf-8")
    (tmp_path / "errors.csv").write_text("file,reason\r\na.png,scope note\r\nb.png,scope note\r\n", encoding="utf-8")
    files = ResultFiles(tmp_path, ["file", "model", "p"], "m 1", json_lines=False).open(resume=True)
    files.close()
    assert files.done == {"a.png"}
    assert (tmp_path / "predictions.csv").read_bytes() == b"file,model,p\r\na.png,m 1,0.5\r\n"
    assert (tmp_path / "errors.csv").read_bytes() == b"file,reason\r\na.png,scope note\r\n"


def test_resume_refuses_another_models_results_and_the_pdf_summary(many_images, tiny_bundle, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    files = ResultFiles(out, ["file", "model", "p"], "other-model 9.9", json_lines=False).open(resume=False)
    files.prediction(["img00.png", "other-model 9.9", "0.5"])
    files.close()
    header = (out / "predictions.csv").read_text(encoding="utf-8").splitlines()[0]
    with pytest.raises(ResumeError, match="other-model 9.9"):
        ResultFiles(out, header.split(","), "test-random 0.0.1", json_lines=False).open(resume=True)
    before = (out / "predictions.csv").read_bytes()
    assert main([str(many_images), "--model", str(tiny_bundle), "--out", str(out), "--no-progress", "--resume"]) == 2
    assert "other columns" in capsys.readouterr().err
    assert (out / "predictions.csv").read_bytes() == before, "a refused resume leaves the file alone"
    assert main([str(many_images), "--model", str(tiny_bundle), "--out", str(out), "--resume", "--pdf"]) == 2
    assert "--pdf" in capsys.readouterr().err


def _live_records(paths: list[Path]) -> int:
    """Decoded records of ``paths`` still in memory (other tests' records may be alive too: not counted)."""
    gc.collect()
    wanted = set(paths)
    return sum(type(obj) is ImageRecord and obj.path in wanted for obj in gc.get_objects())


def test_decoding_ahead_is_bounded_by_bytes_not_files(tmp_path):
    """Ten 300 x 400 greyscale PNGs: each decoded record holds 120 000 + 360 000 = 480 000 bytes."""
    paths = []
    for i in range(10):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((300, 400), i * 20, np.uint8)).save(paths[-1])
    # A budget under one image: one image per batch, and nothing decoded ahead while it is held.
    seen = []
    for batch in _decoded_batches(paths, batch_size=8, max_bytes=400_000):
        time.sleep(0.2)  # a decode started too early would finish here
        seen.append(len(batch))
        assert _live_records(paths) == 1
        del batch
    assert seen == [1] * 10
    # Room for two and a bit: batches of three (the third reaches the budget), one more decoding meanwhile at most.
    seen = []
    for batch in _decoded_batches(paths, batch_size=8, max_bytes=1_000_000):
        time.sleep(0.2)
        seen.append(len(batch))
        assert _live_records(paths) <= len(batch) + 1
        del batch
    assert seen == [3, 3, 3, 1]


def test_a_huge_image_gets_its_heatmap_and_pictures_on_a_reduced_grid(tiny_bundle, tmp_path):
    """A 2600 x 130 image (W x H) is explained on 2048 x 102: 130 * 2048 / 2600 = 102.4 rows."""
    folder = tmp_path / "huge"
    folder.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (130, 2600), dtype=np.uint8)).save(folder / "wide.png")
    lesion = np.zeros((130, 2600), np.uint8)
    lesion[60, 1300] = 255  # one lesion pixel: it must survive the reduction
    Image.fromarray(lesion).save(folder / "wide_mask.png")
    out = tmp_path / "out"
    assert main([str(folder), "--model", str(tiny_bundle), "--out", str(out), "--no-progress", "--heatmaps"]) == 0
    row = _rows(out / "predictions.csv")[0]
    assert row["pointing_hit"] in {"0", "1"} and row["baseline_pointing_hit"] in {"0", "1"}
    png = np.asarray(Image.open(next((out / "heatmaps").iterdir())))
    assert png.shape[1] == 2 * 2048 + 8, "image and overlay side by side, each 2048 wide"
