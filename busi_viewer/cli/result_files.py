"""The result tables of a ``busi-predict`` run, written row by row so that an interrupted run loses nothing.

``predictions.csv`` (and ``predictions.jsonl``) get one line per image the moment it is done, and ``errors.csv``
one per problem; each line is flushed as it is written, so after SIGTERM, SIGKILL or a power cut the files hold
every finished image (at worst the last line is cut short, and :meth:`ResultFiles.open` with ``resume`` drops it).
Resuming keeps the rows of the images already predicted, drops everything else (a later try re-lists it), and
appends to the same files.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import IO

from busi_viewer.core.atomic import atomic_write
from busi_viewer.core.errors import BusiViewerError

PREDICTIONS_CSV = "predictions.csv"
PREDICTIONS_JSONL = "predictions.jsonl"
ERRORS_CSV = "errors.csv"
ERRORS_HEADER = ["file", "reason"]


class ResumeError(BusiViewerError):
    """The files in the output folder cannot be continued by this run (another model, other columns...)."""


def _complete_lines(path: Path) -> list[str]:
    """The file's lines that end with a newline: a last line cut short by a kill is dropped."""
    text = path.read_text(encoding="utf-8")
    end = text.rfind("\n")
    return text[: end + 1].splitlines(keepends=True) if end >= 0 else []


def _csv_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO("".join(_complete_lines(path)), newline="")))


class ResultFiles:
    """Appends rows to the run's tables; use :meth:`open`, then :meth:`prediction` / :meth:`error`, then
    :meth:`close` (or ``with``). ``done``: the files (as written in the ``file`` column) already predicted by an
    earlier run that this one resumes; empty for a fresh run."""

    def __init__(self, out: Path, header: list[str], model: str, json_lines: bool) -> None:
        self.out = out
        self.header = header
        self.model = model
        self.json_lines = json_lines
        self.done: set[str] = set()
        self._handles: list[IO[str]] = []
        self._predictions: csv.writer | None = None
        self._errors: csv.writer | None = None
        self._jsonl: IO[str] | None = None

    @property
    def paths(self) -> list[Path]:
        names = [PREDICTIONS_CSV, ERRORS_CSV] + ([PREDICTIONS_JSONL] if self.json_lines else [])
        return [self.out / name for name in names]

    def open(self, resume: bool) -> ResultFiles:
        """Start the tables afresh, or (``resume``) keep what an earlier run of this model finished and append."""
        kept_errors: list[list[str]] = []
        kept_json: list[str] = []
        if resume and (self.out / PREDICTIONS_CSV).exists():
            kept_predictions = self._finished_predictions()
            self.done = {row[0] for row in kept_predictions}
            if self.json_lines:
                kept_json, self.done = self._finished_json(self.done)
                kept_predictions = [row for row in kept_predictions if row[0] in self.done]
            if (self.out / ERRORS_CSV).exists():
                kept_errors = [row for row in _csv_rows(self.out / ERRORS_CSV)[1:] if row and row[0] in self.done]
            # Rewritten whole (atomically) so that rows of images to be tried again, and cut lines, go.
            self._rewrite_csv(self.out / PREDICTIONS_CSV, self.header, kept_predictions)
            self._rewrite_csv(self.out / ERRORS_CSV, ERRORS_HEADER, kept_errors)
            if self.json_lines:
                with atomic_write(self.out / PREDICTIONS_JSONL, encoding="utf-8") as handle:
                    handle.writelines(kept_json)
            mode = "a"
        else:
            mode = "w"
        # Line buffering: every row reaches the file (the OS) as soon as it is written.
        predictions = self._handle(self.out / PREDICTIONS_CSV, mode)
        errors = self._handle(self.out / ERRORS_CSV, mode)
        self._predictions, self._errors = csv.writer(predictions), csv.writer(errors)
        if mode == "w":
            self._predictions.writerow(self.header)
            self._errors.writerow(ERRORS_HEADER)
        if self.json_lines:
            self._jsonl = self._handle(self.out / PREDICTIONS_JSONL, mode)
        return self

    def _handle(self, path: Path, mode: str) -> IO[str]:
        handle = path.open(mode, newline="" if path.suffix == ".csv" else None, encoding="utf-8", buffering=1)
        self._handles.append(handle)
        return handle

    def _finished_predictions(self) -> list[list[str]]:
        path = self.out / PREDICTIONS_CSV
        rows = _csv_rows(path)
        if not rows:
            return []
        if rows[0] != self.header:
            raise ResumeError(f"{path} has other columns than this run writes (another model or version): "
                              "--resume needs the same model; use --force to start again")
        model_column = self.header.index("model")
        finished = [row for row in rows[1:] if len(row) == len(self.header)]
        others = {row[model_column] for row in finished} - {self.model}
        if others:
            raise ResumeError(f"{path} holds predictions of {sorted(others)[0]}, not {self.model}: --resume needs "
                              "the same model; use --force to start again")
        return finished

    def _finished_json(self, done: set[str]) -> tuple[list[str], set[str]]:
        """The JSON lines of images in ``done``, and the images that have both rows."""
        path = self.out / PREDICTIONS_JSONL
        if not path.exists():
            return [], set()
        kept, files = [], set()
        for line in _complete_lines(path):
            try:
                name = json.loads(line).get("file")
            except (ValueError, AttributeError):
                continue
            if name in done:
                kept.append(line)
                files.add(name)
        return kept, files

    @staticmethod
    def _rewrite_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
        with atomic_write(path, newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)

    def prediction(self, cells: list[str], json_row: dict | None = None) -> None:
        """One image's row (cells in ``header`` order), and its JSON object when JSON lines are written."""
        self._predictions.writerow(cells)
        if self._jsonl is not None and json_row is not None:
            self._jsonl.write(json.dumps(json_row, allow_nan=False) + "\n")

    def error(self, file: str, reason: str) -> None:
        self._errors.writerow([file, reason])

    def close(self) -> None:
        """Flush the tables to disk (fsync) and close them; safe to call twice."""
        while self._handles:
            handle = self._handles.pop()
            try:
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                handle.close()

    def __enter__(self) -> ResultFiles:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
