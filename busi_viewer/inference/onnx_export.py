"""ONNX export of a model bundle for the torch-free runtime, checked against torch before it is kept.

The graph takes the (B, 3, S, S) float32 input the card's preprocessing makes and returns ``logits`` (B, K),
``features`` (B, C, h, w), the final feature map, and ``classifier_weight`` (K, C), the linear head's weights:
with those, the exact closed-form Grad-CAM (:func:`~busi_viewer.inference.prediction.gap_linear_gradcam`) needs
nothing else, so an installed bundle may carry the export instead of its safetensors weights. Beside
``model.onnx`` a record (``model.onnx.json``) binds the export to the weights it was made from (their SHA-256,
as the card states it), holds the export's own SHA-256 and the parity measured at export time. An export into
the bundle is added to its ``SHA256SUMS``; every parameter keeps its name and value in the graph, so that an
export anywhere can be held to the bundle's weights without torch (:mod:`busi_viewer.inference.export_check`).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from busi_viewer.core.atomic import atomic_write
from busi_viewer.core.errors import BundleError
from busi_viewer.core.hashing import sha256_file
from busi_viewer.inference.architectures import ImageClassifier
from busi_viewer.inference.bundle import load_bundle
from busi_viewer.inference.bundle_files import (
    ONNX_FILENAME,
    ONNX_RECORD_FILENAME,
    WEIGHTS_FILENAME,
    read_checksums,
    write_checksums,
)
from busi_viewer.inference.export_check import parameter_problem, read_weights
from busi_viewer.inference.gradcam import fast_gradcam_all_classes, supports_fast_gradcam
from busi_viewer.inference.model_card import ModelCard
from busi_viewer.inference.onnx_predictor import (
    BATCH_OUTPUTS,
    INPUT_NAME,
    RECORD_FORMAT,
    WEIGHT_OUTPUT,
    import_onnxruntime,
)
from busi_viewer.inference.prediction import calibrated_probabilities, gap_linear_gradcam

OUTPUT_NAMES = (*BATCH_OUTPUTS, WEIGHT_OUTPUT)
OPSET = 17
# The bound for ONNX Runtime vs torch on probabilities and raw Grad-CAM maps.
PARITY_TOLERANCE = 1e-4


@dataclass(frozen=True)
class OnnxRecord:
    """``model.onnx.json``: what the export is, what it was made from, and how closely it matches torch."""

    onnx_sha256: str
    weights_sha256: str
    opset: int
    torch_version: str
    onnxruntime_version: str
    max_abs_difference_probabilities: float
    max_abs_difference_maps: float
    parity_inputs: str
    format: int = RECORD_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> OnnxRecord:
        return cls(**json.loads(text))


class _LogitsAndFeatures(torch.nn.Module):
    def __init__(self, model: ImageClassifier):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.model.forward_features(x)
        return self.model.forward_head(features), features, self.model.get_classifier().weight


def export_onnx(bundle_dir: Path, destination: Path | None = None, *, parity_images: int = 8) -> OnnxRecord:
    """Export the verified bundle at ``bundle_dir`` to ``destination`` (default: the bundle folder itself).

    Writes ``model.onnx`` then ``model.onnx.json`` atomically (and lists both in the bundle's ``SHA256SUMS`` when
    ``destination`` is the bundle), only after ONNX Runtime and torch agree within :data:`PARITY_TOLERANCE` on
    calibrated probabilities and on raw Grad-CAM maps of every class, over ``parity_images`` seeded random inputs
    (batch of all, and one at a time), and the graph's parameters are exactly the bundle's. Raises
    :class:`BundleError` when the architecture's head is not GAP + linear or a check fails (nothing is kept then).
    """
    onnxruntime = import_onnxruntime()

    bundle = load_bundle(bundle_dir, "cpu")
    if not supports_fast_gradcam(bundle.model):
        raise BundleError(f"{bundle.folder.name}: only GAP + linear heads can be exported for the ONNX runtime")
    destination = Path(destination) if destination is not None else bundle.folder
    destination.mkdir(parents=True, exist_ok=True)
    onnx_path = destination / ONNX_FILENAME
    size = bundle.card.preprocess.input_size
    example = torch.zeros(1, 3, size, size)
    with atomic_write(onnx_path, "wb") as handle, warnings.catch_warnings():
        # torch 2.9+ warns that the TorchScript-based exporter is deprecated; it is the one that needs no
        # onnxscript and gives a plain static graph, which is all ONNX Runtime needs here.
        warnings.simplefilter("ignore", DeprecationWarning)
        # PRESERVE (the model is in eval mode) and no constant folding: batch norm is not folded into the
        # convolutions, so each parameter stays the bundle's tensor, by name and bit for bit, and the export
        # can be checked against the weights (ONNX Runtime does the folding itself when it loads the graph).
        torch.onnx.export(
            _LogitsAndFeatures(bundle.model).eval(), (example,), handle, input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES), opset_version=OPSET, dynamo=False,
            dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *BATCH_OUTPUTS)},
            training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
        )
    try:
        problem = parameter_problem(onnx_path, read_weights(bundle.folder / WEIGHTS_FILENAME))
        if problem:
            raise BundleError(f"{bundle.folder.name}: the ONNX export cannot be checked against the weights "
                              f"({problem}); it was not kept")
        probability_gap, map_gap = _parity(bundle.model, bundle.card, onnx_path, parity_images)
        if max(probability_gap, map_gap) > PARITY_TOLERANCE:
            raise BundleError(f"{bundle.folder.name}: the ONNX export differs from torch by "
                              f"{probability_gap:.2e} (probabilities) / {map_gap:.2e} (maps), more than "
                              f"{PARITY_TOLERANCE:g}; it was not kept")
    except BaseException:
        onnx_path.unlink(missing_ok=True)
        raise
    record = OnnxRecord(
        onnx_sha256=sha256_file(onnx_path), weights_sha256=bundle.card.weights_sha256, opset=OPSET,
        torch_version=torch.__version__, onnxruntime_version=onnxruntime.__version__,
        max_abs_difference_probabilities=probability_gap, max_abs_difference_maps=map_gap,
        parity_inputs=f"{parity_images} seeded N(0, 1) inputs of {size}x{size}, batched and one by one",
    )
    with atomic_write(destination / ONNX_RECORD_FILENAME, encoding="utf-8") as handle:
        handle.write(record.to_json())
    if destination.resolve() == bundle.folder.resolve():
        # load_bundle verified the listing; only the export's entries change.
        write_checksums(bundle.folder, {**read_checksums(bundle.folder), ONNX_FILENAME: record.onnx_sha256,
                                        ONNX_RECORD_FILENAME: sha256_file(destination / ONNX_RECORD_FILENAME)})
    return record


def _parity(model: ImageClassifier, card: ModelCard, onnx_path: Path, count: int) -> tuple[float, float]:
    """Largest |ONNX Runtime - torch| over probabilities and over raw maps of every class."""
    onnxruntime = import_onnxruntime()

    size = card.preprocess.input_size
    inputs = np.random.default_rng(0).standard_normal((count, 3, size, size)).astype(np.float32)
    logits, maps = fast_gradcam_all_classes(model, torch.from_numpy(inputs))
    expected_probabilities = calibrated_probabilities(logits.numpy(), card.calibration_temperature)
    expected_maps = maps.numpy()
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    probability_gap = map_gap = 0.0
    # The whole set as one batch, then each input alone: the batch axis is dynamic in the graph.
    for rows in [slice(0, count)] + [slice(i, i + 1) for i in range(count)]:
        onnx_logits, features, weight = session.run(list(OUTPUT_NAMES), {INPUT_NAME: inputs[rows]})
        probabilities = calibrated_probabilities(onnx_logits, card.calibration_temperature)
        probability_gap = max(probability_gap, float(np.abs(probabilities - expected_probabilities[rows]).max()))
        for k in range(card.num_classes):
            onnx_maps = gap_linear_gradcam(weight, features, [k] * len(onnx_logits))
            map_gap = max(map_gap, float(np.abs(onnx_maps - expected_maps[rows, k]).max()))
    return probability_gap, map_gap
