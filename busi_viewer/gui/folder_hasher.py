"""Hashes every file of an opened folder in the background, so saved reviews can be matched before each image
is visited (reviews are keyed by the file's SHA-256, not its name)."""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QThread, Signal

from busi_viewer.core.hashing import sha256_file_cached
from busi_viewer.gui.thread_priority import lower_current_thread_priority

BATCH = 32  # fewer, larger signals keep the event loop free on folders of thousands of files


class FolderHasher(QThread):
    """``hashed`` carries ``list[tuple[int, str]]`` (index into the folder's list, hex SHA-256) batches;
    unreadable files are skipped (the image loader reports why when the user gets there)."""

    hashed = Signal(object)

    def __init__(self, paths: list[Path], parent=None):
        super().__init__(parent)
        self._paths = list(paths)
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    def run(self) -> None:
        lower_current_thread_priority()
        batch: list[tuple[int, str]] = []
        for index, path in enumerate(self._paths):
            if self._cancel.is_set():
                return
            try:
                batch.append((index, sha256_file_cached(path)))
            except OSError:
                continue
            if len(batch) >= BATCH:
                self.hashed.emit(batch)
                batch = []
        if batch and not self._cancel.is_set():
            self.hashed.emit(batch)
