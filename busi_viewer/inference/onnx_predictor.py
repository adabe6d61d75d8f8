"""Prediction with explanation through ONNX Runtime: the frozen app's backend, with no torch at all.

Runs the export :mod:`busi_viewer.inference.onnx_export` made, after checking that it is unmodified since and
was made from exactly the weights the card names (and, where the bundle still carries its safetensors
weights, that those match the card too). The installer's bundles carry the export instead of the weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from busi_viewer.core.errors import BundleError, DeviceError
from busi_viewer.core.hashing import sha256_file
from busi_viewer.inference.bundle_files import (
    ONNX_FILENAME,
    ONNX_RECORD_FILENAME,
    WEIGHTS_FILENAME,
    bundle_folder,
    read_card,
    read_verified_card,
)
from busi_viewer.inference.cpu import inference_threads
from busi_viewer.inference.model_card import ModelCard
from busi_viewer.inference.prediction import PredictorBase, gap_linear_gradcam

# The export's graph (busi_viewer.inference.onnx_export writes it): one input, two outputs per image, and the
# head's weights; format 1 had no weights output.
INPUT_NAME = "input"
BATCH_OUTPUTS = ("logits", "features")
WEIGHT_OUTPUT = "classifier_weight"
RECORD_FORMAT = 2


class OnnxExportError(BundleError):
    """The ONNX export is missing, unreadable, modified, or not made from the bundle's weights."""


def import_onnxruntime():
    """``onnxruntime``, imported with its telemetry off.

    The Linux wheels (1.32 here) carry Microsoft's 1DS telemetry client: importing the package writes a device
    id and an event database under ~/.cache/Microsoft and may post events to mobile.events.data.microsoft.com.
    A workstation that sees patient data must not phone home: ``ORT_DISABLE_TELEMETRY`` (read at import time;
    an administrator may still set it to 0) stops both, and telemetry events are switched off as well.
    """
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    if os.environ["ORT_DISABLE_TELEMETRY"] != "0":
        onnxruntime.disable_telemetry_events()
    return onnxruntime


def has_onnx_export(folder: Path) -> bool:
    """True when ``folder`` carries an ONNX export and its record (not yet verified)."""
    return (folder / ONNX_FILENAME).is_file() and (folder / ONNX_RECORD_FILENAME).is_file()


class OnnxPredictor(PredictorBase):
    """Runs a bundle's ONNX export on RGB images; see :class:`~busi_viewer.inference.prediction.PredictorBase`."""

    def __init__(self, session, card: ModelCard, classifier_weight: np.ndarray, description: str):
        self.session = session
        self.card = card
        self.classifier_weight = np.ascontiguousarray(classifier_weight, dtype=np.float32)  # (K, C)
        self.description = description

    def _forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, features = self.session.run(list(BATCH_OUTPUTS), {INPUT_NAME: np.ascontiguousarray(batch, np.float32)})
        return np.asarray(logits, dtype=np.float32), features

    def _run(self, batch: np.ndarray, explain: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        logits, features = self._forward(batch)
        pooled = features.mean(axis=(2, 3), dtype=np.float32)  # the head's global average pooling
        if not explain:
            return logits, pooled, None
        return logits, pooled, gap_linear_gradcam(self.classifier_weight, features, self.decided_classes(logits))

    def _class_maps(self, batch: np.ndarray, targets: list[int]) -> np.ndarray:
        _logits, features = self._forward(batch)
        return gap_linear_gradcam(self.classifier_weight, features, targets)


def onnx_providers(preference: str | None) -> list[str]:
    """ONNX Runtime execution providers for a device preference ("auto", "cpu", "cuda", "cuda:N").

    Raises :class:`DeviceError` when CUDA is demanded but this ONNX Runtime build has no CUDA provider.
    """
    onnxruntime = import_onnxruntime()
    choice = (preference or "auto").strip().lower()
    available = onnxruntime.get_available_providers()
    if choice == "cpu":
        return ["CPUExecutionProvider"]
    if choice == "auto":
        return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]
    if choice == "cuda" or choice.startswith("cuda:"):
        if "CUDAExecutionProvider" not in available:
            raise DeviceError("CUDA was requested but this ONNX Runtime has no CUDA provider (install "
                              "onnxruntime-gpu, the --gpu build); use 'cpu' or 'auto'")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise DeviceError(f"unknown device {preference!r} for ONNX Runtime; use 'auto', 'cpu' or 'cuda'")


def load_onnx_predictor(folder: str | Path | None, device: str | None = "auto", threads: int | None = None,
                        export_dir: Path | None = None) -> OnnxPredictor:
    """Verify the bundle at ``folder`` and its ONNX export, and open an ONNX Runtime session on it.

    ``export_dir``: where ``model.onnx`` and its record are (default: the bundle folder itself).
    Raises :class:`BundleError` when the export is missing, modified, or made from other weights than the
    card's, and :class:`DeviceError` for an unavailable device.
    """
    onnxruntime = import_onnxruntime()
    folder = bundle_folder(folder)
    # With its weights, a bundle is checked exactly as for torch; without (the installer's), the card is read
    # and the export below must have been made from the weights the card names.
    card = read_verified_card(folder) if (folder / WEIGHTS_FILENAME).is_file() else read_card(folder)
    export_dir = Path(export_dir) if export_dir is not None else folder
    onnx_path = export_dir / ONNX_FILENAME
    record_path = export_dir / ONNX_RECORD_FILENAME
    if not has_onnx_export(export_dir):
        if not (folder / WEIGHTS_FILENAME).is_file():
            raise BundleError(f"{folder.name}: {WEIGHTS_FILENAME} is missing from the bundle at {folder}")
        raise OnnxExportError(f"{folder.name}: no ONNX export ({ONNX_FILENAME}) in {export_dir}; make one with "
                              f"busi-train export-onnx {folder}")
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        expected_onnx = str(record["onnx_sha256"]).lower()
        made_from = str(record["weights_sha256"]).lower()
        record_format = int(record.get("format", 1))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise OnnxExportError(f"{folder.name}: {ONNX_RECORD_FILENAME} is not a valid export record ({exc})") from exc
    if record_format != RECORD_FORMAT:
        raise OnnxExportError(f"{folder.name}: {ONNX_FILENAME} was made by another version of BUSI Viewer "
                              f"(export format {record_format}, this one reads {RECORD_FORMAT}); re-export it with "
                              f"busi-train export-onnx")
    if not made_from or made_from != card.weights_sha256.strip().lower():
        raise OnnxExportError(f"{folder.name}: {ONNX_FILENAME} was made from other weights than this bundle's; "
                              f"re-export it with busi-train export-onnx")
    if sha256_file(onnx_path) != expected_onnx:
        raise OnnxExportError(f"{folder.name}: {ONNX_FILENAME} does not match its export record; the file was "
                              f"modified or corrupted after export")
    providers = onnx_providers(device)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = inference_threads(threads)
    options.inter_op_num_threads = 1
    # Idle pool threads otherwise spin-wait for work, taking a core from the GUI thread between images.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = onnxruntime.InferenceSession(str(onnx_path), options, providers=providers)
    except Exception as exc:  # ONNX Runtime raises its own exception types for malformed graphs
        raise OnnxExportError(f"{folder.name}: ONNX Runtime could not open {ONNX_FILENAME} ({exc})") from exc
    size = card.preprocess.input_size
    (classifier_weight,) = session.run([WEIGHT_OUTPUT], {INPUT_NAME: np.zeros((1, 3, size, size), np.float32)})
    if classifier_weight.ndim != 2 or classifier_weight.shape[0] != card.num_classes:
        raise OnnxExportError(f"{folder.name}: the export's classifier has shape {classifier_weight.shape}, not "
                              f"({card.num_classes}, C) for the card's {card.num_classes} classes")
    used = session.get_providers()[0]
    where = "CUDA" if used == "CUDAExecutionProvider" else f"CPU ({options.intra_op_num_threads} threads)"
    return OnnxPredictor(session, card, classifier_weight, f"{where}, ONNX Runtime")
