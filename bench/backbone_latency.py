"""Backbone candidates' inference cost: predict + Grad-CAM through ONNX Runtime, as the viewer runs on a CPU.

Which backbone a model may use is bounded by the viewer's budget (a never-seen image, forward + explanation,
p95 <= 100 ms on 2 CPU cores, issue #15) before any training: speed does not depend on the weights' values. For
each candidate ARCH:SIZE:STRIDE an untrained bundle is written to a temporary folder, exported to ONNX (with the
export's parity check) and timed on the same 560 x 470 speckle image, the candidates taking turns so warm-up and
clock drift hit all alike; the shipped bundle is timed beside them as the reference whose viewer numbers are known.

    python bench/backbone_latency.py [--candidates tf_efficientnet_lite2:260:16,...] [--repeats 40] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_CANDIDATES = ("tf_efficientnet_lite0:224:16,tf_efficientnet_lite1:240:16,tf_efficientnet_lite2:260:16,"
                      "tf_efficientnet_lite2:260:32")


def untrained_bundle(folder: Path, architecture: str, size: int, stride: int) -> Path:
    """An exported bundle of a randomly initialised ``architecture`` at ``size`` px and output ``stride``."""
    import torch

    from busi_viewer.core.labels import CLASS_NAMES
    from busi_viewer.inference.architectures import build_classifier
    from busi_viewer.inference.bundle import save_bundle
    from busi_viewer.inference.model_card import ModelCard, PreprocessSpec
    from busi_viewer.inference.onnx_export import export_onnx

    torch.manual_seed(0)
    model = build_classifier(architecture, len(CLASS_NAMES), output_stride=stride)
    card = ModelCard(name=f"bench-{architecture}-{size}-s{stride}", version="0.0.0", architecture=architecture,
                     class_names=CLASS_NAMES, preprocess=PreprocessSpec(input_size=size), output_stride=stride,
                     protocol="untrained: for timing only")
    target = folder / card.name
    save_bundle(target, model, card)
    export_onnx(target, parity_images=2)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", default=DEFAULT_CANDIDATES,
                        help="comma-separated ARCH:SIZE:STRIDE (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=40, help="timed predictions per candidate")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    from busi_viewer.inference.backend import load_predictor

    image = np.random.default_rng(0).integers(0, 256, (470, 560), dtype=np.uint8)
    rgb = np.repeat(image[..., None], 3, axis=2)
    with tempfile.TemporaryDirectory() as tmp:
        bundles = {"shipped busi-us": None}
        for spec in args.candidates.split(","):
            architecture, size, stride = spec.split(":")
            bundles[spec] = untrained_bundle(Path(tmp), architecture, int(size), int(stride))
        predictors = {name: load_predictor(folder, "cpu", "onnx")[0] for name, folder in bundles.items()}
        for predictor in predictors.values():  # warm-up: first runs allocate and pick kernels
            for _ in range(3):
                predictor.predict(rgb)
        times: dict[str, list[float]] = {name: [] for name in predictors}
        for _ in range(args.repeats):
            for name, predictor in predictors.items():
                start = time.perf_counter()
                predictor.predict(rgb)
                times[name].append((time.perf_counter() - start) * 1000)
    results = {name: {"p50_ms": round(float(np.percentile(t, 50)), 1), "p95_ms": round(float(np.percentile(t, 95)), 1),
                      "relative_to_shipped": round(float(np.median(t) / np.median(times["shipped busi-us"])), 2)}
               for name, t in times.items()}
    text = json.dumps({"repeats": args.repeats, "image": "560x470", "backend": "onnxruntime, cpu",
                       "candidates": results}, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
