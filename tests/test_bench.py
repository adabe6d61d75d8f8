"""busi-bench runs end to end and reports every number the README quotes."""

from __future__ import annotations

import json

from busi_viewer.cli.bench import main


def test_bench_prints_json_with_all_measurements(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("BUSI_VIEWER_RESOURCES", str(tmp_path))  # no bundle: random weights, said so
    assert main(["--repeats", "2", "--listing-files", "30", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["weights"].startswith("random initialisation")
    assert result["device"].startswith("CPU")
    for key in ("forward_batch1", "forward_plus_autograd_gradcam_batch1", "forward_plus_fast_cam_batch1",
                "predict_with_heatmap_on_560x470_image"):
        assert result[key]["median_ms"] > 0 and result[key]["p90_ms"] >= result[key]["median_ms"]
    assert result["fast_cam_over_forward"] > 0
    assert result["batch16_throughput_images_per_s"] > 0
    assert result["list_files"]["n_images"] == 30 and result["list_files"]["median_s"] > 0
