"""Which runtime runs the model: PyTorch (GPUs, training) or ONNX Runtime (CPUs, and the frozen app).

On the CPU, ONNX Runtime runs the shipped model faster than torch (predict + heatmap 11.3 vs 14.3 ms in busi-bench
on the 2-core VM) and outside the GIL, so the viewer's GUI thread is not starved while it runs (never-seen image
p95 58-68 ms against 80-114 ms with torch); a source install makes the ONNX export once per weights file, with
torch, into the user cache. Importing this module imports neither runtime: the frozen app has no torch, and
torch is imported only when it is needed.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
import sys
from pathlib import Path

from busi_viewer.core.errors import BundleError, DeviceError
from busi_viewer.core.paths import onnx_export_cache_dir
from busi_viewer.inference.bundle_files import bundle_folder, read_card
from busi_viewer.inference.prediction import PredictorBase
from busi_viewer.inference.scope import bundle_scope_guard

BACKEND_ENV = "BUSI_VIEWER_BACKEND"
BACKENDS = ("auto", "torch", "onnx")

log = logging.getLogger(__name__)


def torch_installed() -> bool:
    """True when torch can be imported (False in the frozen app, which is built without it)."""
    return _importable("torch")


def chosen_backend(backend: str | None = None) -> str:
    """``backend``, else ``BUSI_VIEWER_BACKEND``, else "auto"; raises :class:`DeviceError` for unknown names."""
    name = (backend or os.environ.get(BACKEND_ENV) or "auto").strip().lower()
    if name not in BACKENDS:
        raise DeviceError(f"unknown inference backend {name!r}; use {', '.join(BACKENDS)}")
    return name


def load_predictor(model_dir: str | Path | None = None, device: str | None = None,
                   backend: str | None = None) -> tuple[PredictorBase, Path]:
    """A verified predictor for the bundle at ``model_dir`` (default: the bundled model) and its folder.

    ``device``: "auto" (None), "cpu", "cuda", "cuda:N" or "mps". ``backend``: "torch" needs torch; "onnx" needs
    onnxruntime and an ONNX export (the bundle's, or one made into the user cache when torch is there);
    "auto" runs ONNX Runtime on the CPU and torch on an accelerator, and ONNX Runtime whenever torch is
    absent (the frozen app). Raises :class:`BundleError` / :class:`DeviceError` with a message for users.
    """
    folder = bundle_folder(model_dir)
    predictor = _predictor(folder, device, chosen_backend(backend))
    predictor.scope = bundle_scope_guard(folder, predictor.card)
    return predictor, folder


def _predictor(folder: Path, device: str | None, name: str) -> PredictorBase:
    if name == "torch":
        return _torch_predictor(folder, device)
    if name == "onnx" or not torch_installed():
        return _onnx_predictor(folder, device)
    if _wants_cpu(device) and _importable("onnxruntime") and _importable("onnx"):
        try:
            return _onnx_predictor(folder, "cpu")
        except (ImportError, BundleError) as exc:
            # A broken ONNX installation, or a model the export refuses: torch still runs it (and reports any
            # problem with the bundle itself in its own words).
            log.warning("ONNX Runtime not used (%s); running the model with torch", exc)
    return _torch_predictor(folder, device)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: blocked in sys.modules (tests simulate the frozen app)
        return False


def _gpu_driver_visible() -> bool:
    """False only when no GPU driver is visible, so that torch need not be imported to find that out."""
    if sys.platform == "darwin":
        return platform.machine() == "arm64"  # Apple silicon: MPS
    if sys.platform.startswith("linux"):
        return Path("/proc/driver/nvidia/version").exists() or Path("/usr/lib/wsl/lib/libcuda.so").exists()
    if sys.platform == "win32":
        return (Path(os.environ.get("SystemRoot", r"C:\Windows")) / "System32" / "nvcuda.dll").exists()
    return True


def _wants_cpu(device: str | None) -> bool:
    choice = (device or "auto").strip().lower()
    if choice == "cpu":
        return True
    if choice != "auto":
        return False
    if not _gpu_driver_visible():
        return True
    from busi_viewer.inference.device import select_device

    return select_device("auto").type == "cpu"


def _onnx_predictor(folder: Path, device: str | None) -> PredictorBase:
    from busi_viewer.inference.onnx_predictor import OnnxExportError, has_onnx_export, load_onnx_predictor

    if has_onnx_export(folder) or not torch_installed():
        return load_onnx_predictor(folder, device)
    # A source install: the bundle carries no export, so make one (once per weights file) into the cache.
    cache = onnx_export_cache_dir() / read_card(folder).weights_sha256[:16]  # the weights are verified on loading
    if has_onnx_export(cache):
        try:
            return load_onnx_predictor(folder, device, export_dir=cache)
        except OnnxExportError as exc:  # the cache is ours to remake
            log.warning("remaking the cached ONNX export: %s", exc)
    from busi_viewer.inference.onnx_export import export_onnx

    export_onnx(folder, cache)
    return load_onnx_predictor(folder, device, export_dir=cache)


def _torch_predictor(folder: Path, device: str | None) -> PredictorBase:
    from busi_viewer.inference.bundle import load_bundle
    from busi_viewer.inference.device import configure_threads, select_device
    from busi_viewer.inference.predictor import Predictor

    configure_threads()
    target = select_device(device)
    bundle = load_bundle(folder, target)
    return Predictor(bundle.model, bundle.card, target, optimise=True)
