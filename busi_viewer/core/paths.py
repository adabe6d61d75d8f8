"""Every place on disk the app reads from or writes to, decided here and nowhere else.

User data, settings and caches come from platformdirs; tests and portable installs redirect them with
``BUSI_VIEWER_HOME`` (one folder holding ``data/``, ``config/`` and ``cache/``). The frozen app never
writes inside its own folder. A user folder that cannot be created (read-only home, ``BUSI_VIEWER_HOME``
naming a file) is replaced by a temporary one for the rest of the process, with a warning, rather than
stopping the apps; :func:`user_dir_problems` gives the warnings for the apps to show.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import logging
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import platformdirs

APP_NAME = "busi-viewer"
APP_AUTHOR = "busi-viewer"

DEFAULT_MODEL_NAME = "busi-us"

_KINDS = {  # sub-folder of BUSI_VIEWER_HOME -> (platformdirs function name, what the user loses with it)
    "data": ("user_data_dir", "reviews saved in this session are kept only there"),
    "config": ("user_config_dir", "settings are kept only for this session"),
    "cache": ("user_cache_dir", "caches are remade in it and deleted at exit"),
}

log = logging.getLogger(__name__)
_fallbacks: dict[Path, tuple[Path, str]] = {}  # wanted folder -> (the temporary one used instead, the warning)
_fallbacks_lock = threading.Lock()  # the inference thread asks for the cache while the GUI thread asks too


def _home_override() -> Path | None:
    value = os.environ.get("BUSI_VIEWER_HOME")
    return Path(value).expanduser() if value else None


def _wanted_dir(sub: str) -> Path:
    home = _home_override()
    return home / sub if home else Path(getattr(platformdirs, _KINDS[sub][0])(APP_NAME, APP_AUTHOR))


def _user_dir(sub: str, *, writable: bool = False) -> Path:
    wanted = _wanted_dir(sub)
    with _fallbacks_lock:
        if wanted in _fallbacks:  # one folder per process: what was put in the temporary one stays findable
            return _fallbacks[wanted][0]
    try:
        wanted.mkdir(parents=True, exist_ok=True)
        if writable and not os.access(wanted, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "the folder is read-only")
        return wanted
    except OSError as exc:
        return _fallback(sub, wanted, exc)


def _fallback(sub: str, wanted: Path, exc: OSError) -> Path:
    """A private temporary folder standing in for ``wanted`` until the process ends (raises OSError only when
    no temporary folder can be made either)."""
    with _fallbacks_lock:
        if wanted in _fallbacks:
            return _fallbacks[wanted][0]
        temp = Path(tempfile.mkdtemp(prefix=f"{APP_NAME}-{sub}-"))
        # A cache goes with the process; other folders only when nothing was put in them (rmdir fails then).
        if sub == "cache":
            atexit.register(shutil.rmtree, temp, True)
        else:
            atexit.register(_remove_if_empty, temp)
        warning = (f"cannot use the {sub} folder {wanted} ({exc.strerror or exc}); using {temp} instead: "
                   f"{_KINDS[sub][1]}")
        _fallbacks[wanted] = (temp, warning)
    log.warning("warning: %s", warning)
    return temp


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()


def user_dir_problems() -> list[str]:
    """The warnings for the user folders of the current settings that were replaced by temporary ones."""
    with _fallbacks_lock:
        return [_fallbacks[w][1] for w in map(_wanted_dir, _KINDS) if w in _fallbacks]


def user_data_dir() -> Path:
    """Reviews database and other user data (created on demand; a temporary folder if it cannot be)."""
    return _user_dir("data")


def user_config_dir() -> Path:
    """Settings (created on demand; a temporary folder if it cannot be)."""
    return _user_dir("config")


def user_cache_dir() -> Path:
    """Caches that may be deleted at any time (created on demand; a temporary folder, deleted at exit, if it
    cannot be or is read-only: a cache is worth nothing unless it can be written)."""
    return _user_dir("cache", writable=True)


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
