"""The viewer's persistent settings: one INI file in the user config folder (never the registry, never the app folder).

Tests and portable installs redirect it with ``BUSI_VIEWER_HOME`` like every other user path
(:mod:`busi_viewer.core.paths`), so a test run never touches the real user's settings.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

from busi_viewer.core.overlay import DEFAULT_COLORMAP, DEFAULT_EVIDENCE_FLOOR
from busi_viewer.core.paths import user_config_dir

SETTINGS_FILE = "viewer.ini"
RECENT_FOLDERS = 8
COLORMAPS = ("viridis", "inferno", "jet", "hot")


@dataclass
class ViewerSettings:
    """Everything the viewer remembers between sessions."""

    last_folder: str = ""
    recent_folders: str = ""  # newline-separated, most recent first
    opacity: float = 0.45
    colormap: str = DEFAULT_COLORMAP
    evidence_floor: float = DEFAULT_EVIDENCE_FLOOR  # heatmap values below it are not drawn
    heatmap_visible: bool = True
    mask_visible: bool = True
    geometry: QByteArray | None = None
    window_state: QByteArray | None = None


    def recent(self) -> list[str]:
        """The recent folders, most recent first."""
        return [line for line in self.recent_folders.splitlines() if line]

    def remember_folder(self, folder: Path | str) -> None:
        """Make ``folder`` the last and most recent folder (at most :data:`RECENT_FOLDERS` kept)."""
        folder = str(folder)
        self.last_folder = folder
        recent = [folder] + [f for f in self.recent() if f != folder]
        self.recent_folders = "\n".join(recent[:RECENT_FOLDERS])


def settings_path() -> Path:
    return user_config_dir() / SETTINGS_FILE


def _store() -> QSettings:
    return QSettings(str(settings_path()), QSettings.Format.IniFormat)


def load_settings() -> ViewerSettings:
    """Read the settings, falling back to the default for anything missing or malformed."""
    store, settings = _store(), ViewerSettings()
    for item in fields(ViewerSettings):
        if not store.contains(item.name):
            continue
        value = store.value(item.name)
        default = getattr(settings, item.name)
        try:
            if isinstance(default, bool):
                value = value if isinstance(value, bool) else str(value).lower() in ("true", "1")
            elif isinstance(default, float):
                value = min(max(float(value), 0.0), 1.0)
            elif isinstance(default, str):
                value = str(value)
            elif not isinstance(value, QByteArray):
                continue
        except (TypeError, ValueError):
            continue
        setattr(settings, item.name, value)
    if settings.colormap not in COLORMAPS:
        settings.colormap = ViewerSettings.colormap
    return settings


def save_settings(settings: ViewerSettings) -> None:
    store = _store()
    for item in fields(ViewerSettings):
        value = getattr(settings, item.name)
        if value is not None:
            store.setValue(item.name, value)
    store.sync()
