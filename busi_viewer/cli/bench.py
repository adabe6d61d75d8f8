"""``busi-bench``: speed of inference, explanation and folder listing on this machine, printed as JSON.

Uses the installed model bundle when there is one, else a randomly initialised network of the default
architecture (speed does not depend on the weights' values; the JSON says which was used).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from busi_viewer.cli.options import add_runtime_options


def _timings(fn: Callable[[], object], repeats: int, warmup: int, sync: Callable[[], None]) -> list[float]:
    return _interleaved({"only": fn}, repeats, warmup, sync)["only"]


def _interleaved(
    candidates: dict[str, Callable[[], object]], repeats: int, warmup: int, sync: Callable[[], None]
) -> dict[str, list[float]]:
    """Seconds per call of each candidate, taking turns so that warm-up and clock drift hit all alike."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    sync()
    runs: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            sync()
            runs[name].append(time.perf_counter() - start)
    return runs


def _summary_ms(runs: list[float]) -> dict[str, float]:
    ms = np.asarray(runs) * 1000.0
    return {"median_ms": round(float(np.median(ms)), 2), "p90_ms": round(float(np.percentile(ms, 90)), 2)}


def run_benchmarks(device_name: str | None, repeats: int, listing_files: int, batch_size: int = 16) -> dict:
    import torch

    from busi_viewer.cli.bench_listing import time_listing
    from busi_viewer.core.errors import BundleError
    from busi_viewer.core.labels import CLASS_NAMES
    from busi_viewer.inference.architectures import (
        DEFAULT_ARCHITECTURE,
        build_classifier,
    )
    from busi_viewer.inference.backend import load_predictor
    from busi_viewer.inference.bundle import load_bundle
    from busi_viewer.inference.device import (
        configure_threads,
        describe_device,
        select_device,
    )
    from busi_viewer.inference.gradcam import fast_gradcam, reference_gradcam
    from busi_viewer.inference.model_card import ModelCard
    from busi_viewer.inference.predictor import Predictor

    device = select_device(device_name)
    threads = configure_threads()
    try:
        bundle = load_bundle(device=device)
        model, card, weights = bundle.model, bundle.card, f"bundle {bundle.card.name} {bundle.card.version}"
    except BundleError:
        torch.manual_seed(0)
        model = build_classifier(DEFAULT_ARCHITECTURE, len(CLASS_NAMES)).to(device).eval()
        card = ModelCard(name="random", version="0", architecture=DEFAULT_ARCHITECTURE, class_names=CLASS_NAMES)
        weights = "random initialisation (no trained bundle installed)"
    size = card.preprocess.input_size
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    x1 = torch.randn(1, 3, size, size, device=device)
    x16 = torch.randn(batch_size, 3, size, size, device=device)

    def forward() -> None:
        with torch.inference_mode():
            model(x1)

    runs = _interleaved(
        {"forward": forward, "autograd": lambda: reference_gradcam(model, x1), "fast": lambda: fast_gradcam(model, x1)},
        repeats, 5, sync,
    )
    forward_runs, autograd_runs, fast_runs = runs["forward"], runs["autograd"], runs["fast"]

    def forward_batch() -> None:
        with torch.inference_mode():
            model(x16)

    batch_runs = _timings(forward_batch, max(3, repeats // 5), 1, sync)
    rng = np.random.default_rng(0)
    ultrasound_sized = rng.integers(0, 256, size=(470, 560, 3), dtype=np.uint8)  # a typical BUSI frame
    predictors = {"plain": Predictor(model, card, device),
                  "optimised": Predictor(model, card, device, optimise=True)}  # the viewer on a GPU
    if device.type == "cpu" and weights.startswith("bundle"):
        onnx = predictors["onnxruntime"] = load_predictor(bundle.folder, "cpu", "onnx")[0]  # the viewer on a CPU
        if card.test_time_flip:  # what the mirror pass costs, timed beside it on the same session
            one_pass = copy.copy(onnx)
            one_pass.card = dataclasses.replace(onnx.card, test_time_flip=False)
            predictors["onnxruntime_one_pass"] = one_pass
    end_to_end = _interleaved({name: (lambda p=p: p.predict(ultrasound_sized)) for name, p in predictors.items()},
                              repeats, 3, sync)
    listing = time_listing(listing_files) if listing_files else None

    forward_median = statistics.median(forward_runs)
    return {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version()},
        "torch": torch.__version__,
        "device": describe_device(device),
        "threads": threads,
        "architecture": card.architecture,
        "weights": weights,
        "input_size": size,
        "repeats": repeats,
        "forward_batch1": _summary_ms(forward_runs),
        "forward_plus_autograd_gradcam_batch1": _summary_ms(autograd_runs),
        "forward_plus_fast_cam_batch1": _summary_ms(fast_runs),
        "fast_cam_over_forward": round(statistics.median(fast_runs) / forward_median, 3),
        "autograd_gradcam_over_forward": round(statistics.median(autograd_runs) / forward_median, 3),
        f"batch{batch_size}_throughput_images_per_s": round(batch_size / statistics.median(batch_runs), 1),
        "predict_with_heatmap_on_560x470_image": _summary_ms(end_to_end["optimised"]),
        "predict_with_heatmap_on_560x470_image_unoptimised": _summary_ms(end_to_end["plain"]),
        "predict_with_heatmap_on_560x470_image_onnxruntime":
            _summary_ms(end_to_end["onnxruntime"]) if "onnxruntime" in end_to_end else None,
        "test_time_flip": card.test_time_flip,
        "predict_with_heatmap_on_560x470_image_onnxruntime_without_mirror_pass":
            _summary_ms(end_to_end["onnxruntime_one_pass"]) if "onnxruntime_one_pass" in end_to_end else None,
        "list_files": None if listing is None else {
            "n_images": listing["n_images"], "n_files": listing["n_files"], "median_s": round(listing["median_s"], 4)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="busi-bench", description=__doc__.splitlines()[0].replace("``", ""))
    add_runtime_options(parser, backend=False)
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per measurement (default 30)")
    parser.add_argument("--listing-files", type=int, default=10_000, help="images in the listing benchmark (0: skip)")
    args = parser.parse_args(argv)
    try:
        result = run_benchmarks(args.device, max(1, args.repeats), max(0, args.listing_files))
    except RuntimeError as exc:
        print(f"busi-bench: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
