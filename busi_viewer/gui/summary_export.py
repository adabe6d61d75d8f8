"""The viewer's folder summary PDF: ``busi-predict --pdf`` run on the open folder in a separate process.

A separate process keeps the window responsive and the viewer's own inference thread free, and reuses the
headless pipeline (same model bundle, same de-identification, the reviews already saved by the viewer).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, Signal

from busi_viewer.cli.predict import SUMMARY_PDF
from busi_viewer.core.paths import predict_command


class SummaryExport(QObject):
    """One export at a time. ``finished(Path)`` with the written file, or ``failed(str)`` with the reason."""

    finished = Signal(object)
    failed = Signal(str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._process: QProcess | None = None
        self._work: Path | None = None
        self._target: Path | None = None

    @property
    def running(self) -> bool:
        return self._process is not None

    def start(self, folder: Path, target: Path, model_dir: Path, *, include_identifiers: bool,
              overwrite: bool) -> bool:
        """Begin writing the summary of ``folder`` to ``target``; False (and ``failed``) when it cannot start."""
        if self.running:
            self.failed.emit("a folder summary is already being written")
            return False
        if target.exists() and not overwrite:
            self.failed.emit(f"{target} already exists")
            return False
        self._work = Path(tempfile.mkdtemp(prefix="busi-summary-"))
        self._target = target
        program, *arguments = predict_command()
        arguments += [str(folder), "--model", str(model_dir), "--out",
                     str(self._work), "--pdf", "--no-progress", "--device", "cpu"]
        if include_identifiers:
            arguments.append("--include-identifiers")
        process = QProcess(self)
        process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        process.finished.connect(self._done)
        process.errorOccurred.connect(self._error)
        self._process = process
        process.start(program, arguments)
        return True

    def _output(self) -> str:
        text = bytes(self._process.readAll()).decode("utf-8", "replace") if self._process is not None else ""
        lines = [line for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else "no output"

    def _done(self, code: int, _status) -> None:
        summary = self._work / SUMMARY_PDF if self._work is not None else None
        try:
            if code == 0 and summary is not None and summary.is_file():
                # Copied beside the target, then renamed: the target is never half-written.
                staging = self._target.with_name(f".{self._target.name}.{os.getpid()}.partial")
                try:
                    shutil.copyfile(summary, staging)
                    os.replace(staging, self._target)
                finally:
                    staging.unlink(missing_ok=True)
                self.finished.emit(self._target)
            else:
                self.failed.emit(f"busi-predict ended with status {code}: {self._output()}")
        except OSError as exc:
            self.failed.emit(f"cannot write {self._target}: {exc.strerror or exc}")
        finally:
            self._cleanup()

    def _error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self.failed.emit(f"could not start {predict_command()[0]}")
            self._cleanup()

    def _cleanup(self) -> None:
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
        if self._process is not None:
            self._process.deleteLater()
        self._process = self._work = None

