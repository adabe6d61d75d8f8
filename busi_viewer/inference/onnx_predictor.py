"""Prediction with explanation through ONNX Runtime: the frozen app's backend, with no torch at all.

Runs the export :mod:`busi_viewer.inference.onnx_export` made, after checking that it is unmodified since and
was made from exactly the weights the card names: an export in the bundle must match the bundle's ``SHA256SUMS``
(the installer's bundles carry it instead of the weights); wherever the bundle still has its safetensors weights,
the export (in the bundle or in the user's cache) must also be made of them
(:mod:`busi_viewer.inference.export_check`, which states what that does and does not protect against).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from busi_viewer.core.errors import BundleError, DeviceError
from busi_viewer.core.hashing import sha256_file
from busi_viewer.inference.bundle_files import (
    ONNX_FILENAME,
    ONNX_RECORD_FILENAME,
    WEIGHTS_FILENAME,
    bundle_folder,
    check_listed_file,
    read_checksums,
    read_verified_card,
)
from busi_viewer.inference.cpu import inference_threads
from busi_viewer.inference.export_check import head_problem, parameter_problem, read_weights
from busi_viewer.inference.model_card import ModelCard
from busi_viewer.inference.prediction import PredictorBase, gap_linear_gradcam

# The export's graph (busi_viewer.inference.onnx_export writes it): one input, two outputs per image, and the
# head's weights; format 1 had no weights output, format 2 folded batch norm into the convolutions (its
# parameters could not be checked against the weights).
INPUT_NAME = "input"
BATCH_OUTPUTS = ("logits", "features")
WEIGHT_OUTPUT = "classifier_weight"
RECORD_FORMAT = 3


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

    def _run(self, batch: np.ndarray, explain: bool,
             choose: Callable[[np.ndarray], list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        logits, features = self._forward(batch)
        pooled = features.mean(axis=(2, 3), dtype=np.float32)  # the head's global average pooling
        if not explain:
            return logits, pooled, None
        return logits, pooled, gap_linear_gradcam(self.classifier_weight, features, choose(logits))

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
    # With its weights, a bundle is checked exactly as for torch; without (the installer's), the export below
    # must have been made from the weights the verified card names.
    card = read_verified_card(folder, weights_required=False)
    export_dir = Path(export_dir) if export_dir is not None else folder
    in_bundle = export_dir.resolve() == folder.resolve()
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
    onnx_sha256 = _listed_export_sha256(folder) if in_bundle else sha256_file(onnx_path)
    if onnx_sha256 != expected_onnx:
        raise OnnxExportError(f"{folder.name}: {ONNX_FILENAME} does not match its export record; the file was "
                              f"modified or corrupted after export")
    weights = _weights_to_hold_the_export_to(folder, in_bundle)
    if weights is not None:
        problem = parameter_problem(onnx_path, weights)
        if problem:
            raise OnnxExportError(f"{folder.name}: the ONNX export in {export_dir} is not made of this bundle's "
                                  f"weights: {problem}")
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
    if list(session.get_inputs()[0].shape[1:]) != [3, size, size]:
        raise OnnxExportError(f"{folder.name}: {ONNX_FILENAME} takes {session.get_inputs()[0].shape[1:]} inputs, "
                              f"not the card's 3 x {size} x {size}; re-export it with busi-train export-onnx")
    # A fresh random input each time, so that a graph cannot be made to pass on one known input only.
    probe = np.random.default_rng().standard_normal((1, 3, size, size)).astype(np.float32)
    logits, features, classifier_weight = session.run([*BATCH_OUTPUTS, WEIGHT_OUTPUT], {INPUT_NAME: probe})
    if classifier_weight.ndim != 2 or classifier_weight.shape[0] != card.num_classes:
        raise OnnxExportError(f"{folder.name}: the export's classifier has shape {classifier_weight.shape}, not "
                              f"({card.num_classes}, C) for the card's {card.num_classes} classes")
    problem = head_problem(logits, features, classifier_weight, weights) if weights is not None else None
    if problem:
        raise OnnxExportError(f"{folder.name}: the ONNX export in {export_dir} is not made of this bundle's "
                              f"weights: {problem}")
    used = session.get_providers()[0]
    where = "CUDA" if used == "CUDAExecutionProvider" else f"CPU ({options.intra_op_num_threads} threads)"
    return OnnxPredictor(session, card, classifier_weight, f"{where}, ONNX Runtime")


def _listed_export_sha256(folder: Path) -> str:
    """The SHA-256 of the bundle's own export, once it and its record match the bundle's ``SHA256SUMS``."""
    try:
        listing = read_checksums(folder)
        onnx_sha256 = check_listed_file(folder, ONNX_FILENAME, listing)
        check_listed_file(folder, ONNX_RECORD_FILENAME, listing)
        return onnx_sha256
    except BundleError as exc:
        raise OnnxExportError(f"{exc}; re-export it with busi-train export-onnx") from exc


def _weights_to_hold_the_export_to(folder: Path, in_bundle: bool) -> dict[str, np.ndarray] | None:
    """The bundle's weights (verified against the card already), when the export is to be checked against them:
    always for an export outside the bundle; for the bundle's own (covered by its SHA256SUMS) where it still has
    its weights and the ``onnx`` package is there (not in the frozen app)."""
    weights_path = folder / WEIGHTS_FILENAME
    if not weights_path.is_file():
        if in_bundle:
            return None
        raise OnnxExportError(f"{folder.name}: {WEIGHTS_FILENAME} is missing, so an export outside the bundle "
                              f"cannot be checked against it")
    if in_bundle and not _onnx_installed():
        return None
    return read_weights(weights_path)


def _onnx_installed() -> bool:
    try:
        return importlib.util.find_spec("onnx") is not None
    except (ImportError, ValueError):  # ValueError: blocked in sys.modules
        return False
