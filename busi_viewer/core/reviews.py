"""The reviewer's decisions on images, kept in a small SQLite file so that none is ever lost.

One row per image, keyed by the SHA-256 of the file's bytes (a renamed or moved file keeps its review).
Every :meth:`ReviewStore.save` is committed at once. The database runs in WAL mode with
``synchronous=NORMAL``: a committed review survives the app crashing or being killed (only a power cut or
OS crash in the same instant can lose the very last commit).

Opening runs ``PRAGMA quick_check`` (about 50 ms of CPU for 20 000 reviews, a 4.6 MB file, on the 2-core VM).
A damaged file is never written to again: the store works on ``<name>-recovered-<UTC time>.sqlite3`` beside
it, the newest healthy one or a new one holding every review that can still be read, and
:attr:`ReviewStore.notice` says so for the user.
"""

from __future__ import annotations

import csv
import glob
import os
import re
import sqlite3
import time
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
RECOVERED_TAG = "-recovered-"
"""``reviews.sqlite3`` damaged -> ``reviews-recovered-20250101T120000Z.sqlite3`` beside it."""

CSV_COLUMNS = ("sha256", "file_name", "decision", "chosen_class", "note", "model_version", "updated_at")

_CHUNK = 500  # host parameters per IN (...) query; old SQLite builds allow at most 999
_SALVAGE_SECONDS = 5.0  # copying what a damaged file still holds never delays the start longer than this
_SALVAGE_MISSES = 50_000  # consecutive unreadable row ids before giving up (a damaged root hides them all)
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


def _valid_row(row: tuple) -> bool:
    """Whether a row read from a damaged file is a review this version would have written."""
    sha256, decision, chosen_class = row[:3]
    if not all(isinstance(value, str) for value in (sha256, *row[3:])):
        return False
    try:
        _check_decision(decision, chosen_class)
        return _check_sha256(sha256) == sha256
    except InvalidReviewError:
        return False


def _damage(conn: sqlite3.Connection) -> str | None:
    """What ``PRAGMA quick_check`` finds wrong (at most three problems, one line), or None for a sound file.

    Only damage counts: any other error (a lock held too long, an I/O error) is raised as it is.
    """
    try:
        found = [str(row[0]) for row in conn.execute("PRAGMA quick_check(3)")]
    except sqlite3.DatabaseError as exc:  # e.g. a damaged schema page stops the check itself
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None or code & 0xFF not in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            raise
        return str(exc)
    return None if found == ["ok"] else " ".join("; ".join(found).split())


def _connect(path: Path, *, create: bool) -> sqlite3.Connection:
    if create:
        return sqlite3.connect(path, timeout=10.0)
    # mode=rw never creates a missing file; the file is not opened read-only at the OS level (mode=ro) because
    # that leaves -wal and -shm files behind, and could not read what a running viewer has not checkpointed.
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=10.0)


def salvage_rows(path: Path) -> list[tuple]:
    """The valid reviews (rows in ``_COLUMNS`` order) that can still be read from a damaged database.

    Walks the table in rowid order; at an unreadable page it steps one rowid at a time (one B-tree seek each)
    until the next readable page, so only the rows on damaged pages are lost. Never writes to the file.
    """
    rows: list[tuple] = []
    query = f"SELECT rowid, {_COLUMNS} FROM reviews WHERE rowid > ? ORDER BY rowid"
    deadline, last, misses = time.monotonic() + _SALVAGE_SECONDS, 0, 0
    conn = _connect(path, create=False)
    try:
        conn.execute("PRAGMA query_only = ON")
        while misses < _SALVAGE_MISSES and time.monotonic() < deadline:
            try:
                for row in conn.execute(query, (last,)):
                    last, misses = row[0], 0
                    if _valid_row(row[1:]):
                        rows.append(tuple(row[1:]))
                break
            except sqlite3.DatabaseError:
                last += 1
                misses += 1
    finally:
        conn.close()
    return rows


def csv_safe(value: str) -> str:
    """``value`` made inert for spreadsheets: a leading ' stops =, +, -, @ (and tab/CR) starting a formula."""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


_COLUMNS = "sha256, decision, chosen_class, note, model_version, file_name, updated_at"


def default_reviews_path() -> Path:
    """Where the viewer keeps reviews: the user data folder (platformdirs) / reviews.sqlite3."""
    return paths.user_data_dir() / DEFAULT_FILE_NAME


def recovered_paths(path: Path) -> list[Path]:
    """The recovered copies made beside a damaged ``path``, oldest first."""
    path = Path(path)
    found = path.parent.glob(f"{glob.escape(path.stem)}{RECOVERED_TAG}*{glob.escape(path.suffix)}")
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))


class ReviewStore:
    """Reviews of images, one per SHA-256, in a SQLite file. Use from one thread; close it (or use ``with``).

    Raises :class:`ReviewStoreError` naming the file when it is not a database, cannot be written, or was
    written by a newer version of the app. A reviews database with damaged pages is not an error: the store
    then works on a recovered copy beside it (see the module) and :attr:`notice` says so; :attr:`path` is the
    file in use and :attr:`damaged_path` the damaged one. ``read_only`` stores (busi-predict) never create or
    write anything: with no recovered copy yet they read the damaged file, whose damaged rows raise.
    """

    def __init__(self, path: Path | None = None, *, read_only: bool = False):
        self.path = Path(path) if path is not None else default_reviews_path()
        self.read_only = read_only
        self.damaged_path: Path | None = None
        self.notice: str | None = None  # one paragraph for the user when the file on disk is not the one asked for
        self._conn: sqlite3.Connection | None = None
        if not read_only:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ReviewStoreError(
                    f"cannot create the folder for the reviews database {self.path}: {exc}") from exc
            if self.path.exists() and not os.access(self.path, os.W_OK):
                # SQLite would quietly open it read-only and fail only at the first save
                raise ReviewStoreError(f"cannot open the reviews database {self.path}: the file is read-only")
        damage = self._open(check=True)
        if damage is not None:
            self._work_beside_damaged(damage)

    # --- opening ---------------------------------------------------------------------------------------------

    def _open(self, *, check: bool) -> str | None:
        """Connect to :attr:`path`; returns the damage found (connection closed again) or None."""
        try:
            self._conn = _connect(self.path, create=not self.read_only)
            damage = self._setup(check=check)
        except sqlite3.Error as exc:
            self._close_quietly()
            raise self._error("cannot open", exc) from exc
        except ReviewStoreError:
            self._close_quietly()
            raise
        if damage is not None:
            self._close_quietly()
        return damage

    def _work_beside_damaged(self, damage: str) -> None:
        """Move on to a recovered copy of the damaged :attr:`path` (or, read-only, to the damaged file itself)."""
        damaged = self.damaged_path = self.path
        told = f"The reviews database {damaged} is damaged ({damage}); it is left as it is."
        for candidate in reversed(recovered_paths(damaged)):
            self.path = candidate
            try:
                if self._open(check=True) is None:
                    self.notice = (f"{told} Reviews are read from{'' if self.read_only else ' and saved to'} "
                                   f"{candidate}, the copy made when the damage was found.")
                    return
            except ReviewStoreError:
                pass  # another damaged or unusable copy: look further
        if not self.read_only:
            try:
                target, copied = self._recover(damaged)
                self.path = target
                if self._open(check=True) is None:
                    self.notice = (f"{told} The {copied} review(s) that could still be read were copied to "
                                   f"{target}, where reviews are saved from now on. To make it the main file, "
                                   f"quit, move {damaged.name} away and rename {target.name} to {damaged.name}.")
                    return
                why = "the copy is damaged too"
            except (ReviewStoreError, sqlite3.Error, OSError) as exc:
                why = str(exc)
            told += f" No recovered copy could be made beside it ({why}); reviews cannot be saved in this session."
            self.read_only = True
        self.path = damaged
        self._open(check=False)
        self.notice = f"{told} Reviews on its damaged pages cannot be read."

    def _recover(self, damaged: Path) -> tuple[Path, int]:
        """A new reviews database beside ``damaged`` holding what can still be read from it: (path, rows).

        Built under a ``.partial`` name and renamed when complete, so that a crash midway never leaves a
        half-filled copy that a later start would take for the recovered one.
        """
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        for attempt in range(1, 100):
            name = f"{damaged.stem}{RECOVERED_TAG}{stamp}{'' if attempt == 1 else f'-{attempt}'}{damaged.suffix}"
            target = damaged.with_name(name)
            partial = target.with_name(target.name + ".partial")
            if not target.exists() and not partial.exists():
                break
        else:
            raise ReviewStoreError(f"too many recovered copies of {damaged} made at {stamp}")
        rows = salvage_rows(damaged)
        with ReviewStore(partial) as fresh, fresh._db as db:
            db.executemany(f"INSERT OR IGNORE INTO reviews ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        for extra in ("", "-wal", "-shm"):  # closing checkpoints the WAL; were it left, it must follow the file
            source = Path(f"{partial}{extra}")
            if source.exists():
                os.replace(source, f"{target}{extra}")
        return target, len(rows)

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

    def _setup(self, *, check: bool) -> str | None:
        """Check and prepare the open connection; returns what ``quick_check`` found damaged, or None."""
        conn = self._conn
        assert conn is not None
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])  # reads the header: fails on non-databases
        if version > SCHEMA_VERSION:
            raise ReviewStoreError(
                f"the reviews database {self.path} was written by a newer version of BUSI Viewer "
                f"(schema {version}; this version reads up to {SCHEMA_VERSION}); update the app or move the file aside"
            )
        if self.read_only:
            conn.execute("PRAGMA query_only = ON")
        if check and version > 0:  # before anything below may write to the file
            damage = _damage(conn)
            if damage is not None:
                return damage
        if self.read_only:
            return None
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
        return None

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
        if self.read_only:
            raise ReviewStoreError(f"cannot save to the reviews database {self.path}: it is open read-only")
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
