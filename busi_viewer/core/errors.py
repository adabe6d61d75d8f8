"""The project's own error types: each carries a message a user can act on."""

from __future__ import annotations

from pathlib import Path


class BusiViewerError(Exception):
    """Base class of every error this project raises on purpose."""


class ImageLoadError(BusiViewerError):
    """A file could not be read as an image; ``reason`` says why in words a user understands."""

    def __init__(self, path: Path | str, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path.name}: {reason}")


class MaskLoadError(ImageLoadError):
    """A lesion mask could not be read or does not fit its image."""


class BundleError(BusiViewerError):
    """A model bundle is missing, incomplete, tampered with or inconsistent."""


class DeviceError(BusiViewerError):
    """The requested compute device does not exist on this machine, or a thread setting is invalid."""
