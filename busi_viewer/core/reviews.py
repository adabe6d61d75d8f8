"""The reviewer's decisions on images, kept in a small SQLite file so that none is ever lost.

One row per image, keyed by the SHA-256 of the file's bytes (a renamed or moved file keeps its review).
Every :meth:`ReviewStore.save` is committed at once. The database runs in WAL mode with
``synchronous=NORMAL``: a committed review survives the app crashing or being killed (only a power cut or
OS crash in the same instant can lose the very last commit).
"""

from __future__ import annotations

import csv
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from . import paths
from .atomic import atomic_write
from .errors import BusiViewerError
from .labels import CLASS_NAMES

DECISIONS: tuple[str, ...] = ("agree", "disagree", "unsure")
"""What a reviewer can say about the model's answer."""

SCHEMA_VERSION = 1
"""Stored in ``PRAGMA user_version``; a file with a larger number was written by a newer app."""

DEFAULT_FILE_NAME = "reviews.sqlite3"

CSV_COLUMNS = ("sha256", "file_name", "decision", "chosen_class", "note", "model_version", "updated_at")

_CHUNK = 500  # host parameters per IN (...) query; old SQLite builds allow at most 999
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # spreadsheets evaluate cells starting with these


class ReviewStoreError(BusiViewerError):
    """The reviews database cannot be used (damaged, read-only, too new), or a review is invalid."""


class InvalidReviewError(ReviewStoreError, ValueError):
    """A review that breaks the rules (unknown decision, missing or stray class, malformed hash)."""


@dataclass(frozen=True)
class Review:
    """One image's review. ``decision`` None means a note was kept but no decision taken yet."""

    sha256: str
    decision: str | None
    chosen_class: str | None  # the reviewer's class, only when decision == "disagree"
    note: str
    model_version: str  # the model whose answer was reviewed
    file_name: str  # the file's name when reviewed (informative only: the key is the hash)
    updated_at: str  # ISO-8601, UTC

    @property
    def reviewed(self) -> bool:
        return self.decision is not None


def _check_sha256(sha256: str) -> str:
    value = sha256.lower() if isinstance(sha256, str) else sha256
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise InvalidReviewError(f"not a SHA-256 hex digest (64 hexadecimal characters): {sha256!r}")
    return value


def _check_decision(decision: str | None, chosen_class: str | None) -> None:
    if decision is not None and decision not in DECISIONS:
        raise InvalidReviewError(f"unknown decision {decision!r}; expected one of {', '.join(DECISIONS)} or None")
    if decision == "disagree":
        if chosen_class is None:
            raise InvalidReviewError("a 'disagree' review needs the class the reviewer chose")
        if chosen_class not in CLASS_NAMES:
            raise InvalidReviewError(f"unknown class {chosen_class!r}; expected one of {', '.join(CLASS_NAMES)}")
    elif chosen_class is not None:
        raise InvalidReviewError(f"a class is chosen only when disagreeing, not with decision {decision!r}")


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _unique_hashes(sha256s: Iterable[str]) -> list[str]:
    """Validated, lower-cased, de-duplicated hashes in their first-seen order."""
    return list(dict.fromkeys(_check_sha256(s) for s in sha256s))


def csv_safe(value: str) -> str:
    """``value`` made inert for spreadsheets: a leading ' stops =, +, -, @ (and tab/CR) starting a formula."""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


_COLUMNS = "sha256, decision, chosen_class, note, model_version, file_name, updated_at"


def default_reviews_path() -> Path:
    """Where the viewer keeps reviews: the user data folder (platformdirs) / reviews.sqlite3."""
    return paths.user_data_dir() / DEFAULT_FILE_NAME


class ReviewStore:
    """Reviews of images, one per SHA-256, in a SQLite file. Use from one thread; close it (or use ``with``).

    Raises :class:`ReviewStoreError` naming the file when it is not a database, cannot be written, or was
    written by a newer version of the app.
    """

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else default_reviews_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReviewStoreError(f"cannot create the folder for the reviews database {self.path}: {exc}") from exc
        self._conn: sqlite3.Connection | None = None
        if self.path.exists() and not os.access(self.path, os.W_OK):
            # SQLite would quietly open it read-only and fail only at the first save
            raise ReviewStoreError(f"cannot open the reviews database {self.path}: the file is read-only")
        try:
            self._conn = sqlite3.connect(self.path, timeout=10.0)
            self._setup()
        except sqlite3.Error as exc:
            self._close_quietly()
            raise self._error("cannot open", exc) from exc
        except ReviewStoreError:
            self._close_quietly()
            raise

    # --- opening ---------------------------------------------------------------------------------------------

    def _error(self, action: str, exc: BaseException) -> ReviewStoreError:
        text = str(exc)
        if "not a database" in text or "malformed" in text:
            why = "the file is not a reviews database or is damaged (move it aside to start a new one)"
        elif "readonly" in text or "read-only" in text:
            why = "the file or its folder is read-only"
        elif "unable to open" in text:
            why = "the file cannot be opened (missing folder or no permission?)"
        elif "locked" in text or "busy" in text:
            why = "another program holds the database locked"
        else:
            why = text
        return ReviewStoreError(f"{action} the reviews database {self.path}: {why} ({type(exc).__name__}: {text})")

    def _setup(self) -> None:
        conn = self._conn
        assert conn is not None
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])  # reads the header: fails on non-databases
        if version > SCHEMA_VERSION:
            raise ReviewStoreError(
                f"the reviews database {self.path} was written by a newer version of BUSI Viewer "
                f"(schema {version}; this version reads up to {SCHEMA_VERSION}); update the app or move the file aside"
            )
        mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
        if mode != "wal":
            # e.g. a file system without shared memory support; a rollback journal is still crash-safe
            conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=NORMAL" if mode == "wal" else "PRAGMA synchronous=FULL")
        if version == 0:
            tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            if tables and tables != ["reviews"]:
                raise ReviewStoreError(
                    f"{self.path} is a SQLite database but not a BUSI Viewer reviews database "
                    f"(it holds tables {', '.join(sorted(tables))})"
                )
            with conn:
                conn.execute(
                    """CREATE TABLE IF NOT EXISTS reviews (
                        sha256 TEXT PRIMARY KEY NOT NULL CHECK (length(sha256) = 64),
                        decision TEXT CHECK (decision IS NULL OR decision IN ('agree', 'disagree', 'unsure')),
                        chosen_class TEXT,
                        note TEXT NOT NULL DEFAULT '',
                        model_version TEXT NOT NULL DEFAULT '',
                        file_name TEXT NOT NULL DEFAULT '',
                        updated_at TEXT NOT NULL
                    )"""
                )
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        else:
            # Fail now, not at the first save, when the file cannot be written (read-only file or folder).
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")

    def _close_quietly(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ReviewStoreError(f"the reviews database {self.path} is closed")
        return self._conn

    # --- reading ---------------------------------------------------------------------------------------------

    @staticmethod
    def _review(row: tuple) -> Review:
        return Review(
            sha256=row[0], decision=row[1], chosen_class=row[2], note=row[3], model_version=row[4],
            file_name=row[5], updated_at=row[6],
        )

    def get(self, sha256: str) -> Review | None:
        """The review of the image with this hash, or None when it has none."""
        key = _check_sha256(sha256)
        try:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM reviews WHERE sha256 = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise self._error("cannot read", exc) from exc
        return self._review(row) if row else None

    def get_many(self, sha256s: Iterable[str]) -> dict[str, Review]:
        """{sha256: review} for those of the given hashes that have a review (keys lower-case)."""
        found: dict[str, Review] = {}
        try:
            for chunk in _chunks(_unique_hashes(sha256s)):
                marks = ", ".join("?" * len(chunk))
                for row in self._db.execute(f"SELECT {_COLUMNS} FROM reviews WHERE sha256 IN ({marks})", chunk):
                    found[row[0]] = self._review(row)
        except sqlite3.Error as exc:
            raise self._error("cannot read", exc) from exc
        return found

    def count_reviewed(self, sha256s: Iterable[str]) -> int:
        """How many of the given (distinct) hashes have a decision."""
        total = 0
        try:
            for chunk in _chunks(_unique_hashes(sha256s)):
                marks = ", ".join("?" * len(chunk))
                query = f"SELECT COUNT(*) FROM reviews WHERE decision IS NOT NULL AND sha256 IN ({marks})"
                total += int(self._db.execute(query, chunk).fetchone()[0])
        except sqlite3.Error as exc:
            raise self._error("cannot read", exc) from exc
        return total

    # --- writing ---------------------------------------------------------------------------------------------

    def save(
        self,
        sha256: str,
        *,
        decision: str | None,
        chosen_class: str | None,
        note: str,
        model_version: str,
        file_name: str,
    ) -> Review:
        """Create or replace the review of this image and commit it before returning."""
        key = _check_sha256(sha256)
        _check_decision(decision, chosen_class)
        review = Review(
            sha256=key,
            decision=decision,
            chosen_class=chosen_class,
            note=note or "",
            model_version=model_version or "",
            file_name=file_name or "",
            updated_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
        )
        db = self._db
        try:
            with db:  # commits on success, rolls back on error
                db.execute(
                    f"INSERT INTO reviews ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(sha256) DO UPDATE SET decision = excluded.decision, "
                    "chosen_class = excluded.chosen_class, note = excluded.note, "
                    "model_version = excluded.model_version, file_name = excluded.file_name, "
                    "updated_at = excluded.updated_at",
                    (review.sha256, review.decision, review.chosen_class, review.note, review.model_version,
                     review.file_name, review.updated_at),
                )
        except sqlite3.Error as exc:
            raise self._error("cannot save to", exc) from exc
        return review

    def export_csv(self, path: Path, sha256s: Iterable[str] | None = None) -> int:
        """Write reviews to a UTF-8 CSV (with BOM, so spreadsheets read accents right); returns the row count.

        All stored reviews (sorted by file name) when ``sha256s`` is None, else those of the given hashes that
        have one, in the given order. Columns are :data:`CSV_COLUMNS`. Text cells that a spreadsheet would run
        as a formula get a leading '. The file is replaced atomically: a failed export leaves no partial file.
        """
        if sha256s is None:
            try:
                rows = self._db.execute(f"SELECT {_COLUMNS} FROM reviews ORDER BY file_name, sha256").fetchall()
            except sqlite3.Error as exc:
                raise self._error("cannot read", exc) from exc
            reviews = [self._review(row) for row in rows]
        else:
            wanted = _unique_hashes(sha256s)
            found = self.get_many(wanted)
            reviews = [found[s] for s in wanted if s in found]
        path = Path(path)
        try:
            with atomic_write(path, "w", encoding="utf-8-sig", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(CSV_COLUMNS)
                for r in reviews:
                    writer.writerow(
                        [r.sha256, csv_safe(r.file_name), r.decision or "", r.chosen_class or "", csv_safe(r.note),
                         csv_safe(r.model_version), r.updated_at]
                    )
        except OSError as exc:
            raise ReviewStoreError(f"cannot write the review export {path}: {exc.strerror or exc}") from exc
        return len(reviews)

    # --- lifetime --------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database (idempotent). Every save was already committed."""
        self._close_quietly()

    def __enter__(self) -> ReviewStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
