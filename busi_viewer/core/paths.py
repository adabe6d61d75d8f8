"""Every place on disk the app reads from or writes to, decided here and nowhere else.

User data, settings and caches come from platformdirs; tests and portable installs redirect them with
``BUSI_VIEWER_HOME`` (one folder holding ``data/``, ``config/`` and ``cache/``). The frozen app never
writes inside its own folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import platformdirs

APP_NAME = "busi-viewer"
APP_AUTHOR = "busi-viewer"

DEFAULT_MODEL_NAME = "busi-us"


def _home_override() -> Path | None:
    value = os.environ.get("BUSI_VIEWER_HOME")
    return Path(value).expanduser() if value else None


def _user_dir(sub: str, platform_dir) -> Path:
    home = _home_override()
    path = home / sub if home else Path(platform_dir(APP_NAME, APP_AUTHOR))
    path.mkdir(parents=True, exist_ok=True)
    return path


def user_data_dir() -> Path:
    """Reviews database and other user data (created on demand)."""
    return _user_dir("data", platformdirs.user_data_dir)


def user_config_dir() -> Path:
    """Settings (created on demand)."""
    return _user_dir("config", platformdirs.user_config_dir)


def user_cache_dir() -> Path:
    """Caches that may be deleted at any time (created on demand)."""
    return _user_dir("cache", platformdirs.user_cache_dir)


def onnx_export_cache_dir() -> Path:
    """ONNX exports the source install makes of bundles for CPU inference, one sub-folder per weights hash."""
    return user_cache_dir() / "onnx-exports"


def resources_dir() -> Path:
    """The read-only ``resources/`` folder: bundled model bundles and demo data.

    ``BUSI_VIEWER_RESOURCES`` overrides it; a PyInstaller build finds it beside the frozen app; a source
    checkout (editable install) finds it at the repository root.
    """
    override = os.environ.get("BUSI_VIEWER_RESOURCES")
    if override:
        return Path(override).expanduser()
    frozen_root = getattr(sys, "_MEIPASS", None) if is_frozen() else None
    if frozen_root:
        return Path(frozen_root) / "resources"
    return Path(__file__).resolve().parents[2] / "resources"


def models_dir() -> Path:
    """Where installed model bundles live (one sub-folder per bundle)."""
    return resources_dir() / "models"


def default_model_dir() -> Path:
    """The bundle the tools use when the user names none."""
    return models_dir() / DEFAULT_MODEL_NAME


def is_frozen() -> bool:
    """True inside the PyInstaller build."""
    return bool(getattr(sys, "frozen", False))


def predict_command() -> list[str]:
    """The command line that starts ``busi-predict`` with this installation's interpreter or frozen app."""
    if is_frozen():
        return [sys.executable, "predict"]  # packaging/entry.py dispatches it
    return [sys.executable, "-m", "busi_viewer.cli.predict"]
