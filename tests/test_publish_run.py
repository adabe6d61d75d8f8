"""training/queues/publish_run.sh: what of a finished run reaches the committed reports, and what never does."""

from __future__ import annotations

import json
import shutil
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.config import apply_overrides, load_config, to_toml
from training.pipeline import Predictions

SCRIPT = Path(__file__).resolve().parents[1] / "training" / "queues" / "publish_run.sh"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_publish_copies_numbers_and_predictions_never_weights_or_images(tmp_path):
    run = tmp_path / "runs" / "fold0"
    run.mkdir(parents=True)
    (run / "config.toml").write_text(to_toml(apply_overrides(load_config("busi_busbra"),
                                                             ["data.root=/home/someone/busi"])))
    (run / "metrics.json").write_text(json.dumps({"run": {"data_root": "/home/someone/busi", "seed": 0}}))
    predictions = Predictions(np.array(["busi/benign/a.png"]), np.array([0]), np.array([[1.0, 0.0, -1.0]]),
                              np.array(["g1"]))
    for split in ("val", "test"):
        predictions.save(run / f"predictions_{split}.npz")
    for name in ("epochs.csv", "report.md", "roc.png", "best.pt", "last.pt", "gradcam_test.png"):
        (run / name).write_bytes(b"x")

    out = tmp_path / "reports" / "fold0"
    subprocess.run(["bash", str(SCRIPT), str(run), str(out)], check=True, capture_output=True,
                   env={**os.environ, "PYTHON": sys.executable})  # CI's venv is not the script's default .venv

    published = {path.name for path in out.iterdir()}
    assert published == {"config.toml", "metrics.json", "epochs.csv", "report.md", "roc.png",
                         "predictions_val.npz", "predictions_test.npz"}  # no weights, no images of patients
    assert Predictions.load(out / "predictions_test.npz").logits.tolist() == [[1.0, 0.0, -1.0]]
    assert "someone" not in (out / "config.toml").read_text() + (out / "metrics.json").read_text()
