"""Reviews databases with a damaged page, made the way a disk or a killed copy damages them."""

from __future__ import annotations

import hashlib
import random
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from busi_viewer.core.reviews import ReviewStore

MODEL_VERSION = "busi-us 0.1.0"


def filler_sha(i: int) -> str:
    return hashlib.sha256(f"filler {i}".encode()).hexdigest()


def quick_check(path: Path) -> list[str]:
    """What ``PRAGMA quick_check`` says of ``path`` (["ok"] when sound), its error when it cannot even run."""
    conn = sqlite3.connect(path)
    try:
        return [str(row[0]) for row in conn.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as exc:
        return [f"{type(exc).__name__}: {exc}"]
    finally:
        conn.close()


def write_damaged_reviews(path: Path, count: int = 3000, extra: Sequence[tuple[str, str]] = (),
                          damage_name: str | None = None) -> Path:
    """A valid reviews database of ``count`` filler reviews (file names ``filler-<i>.png``) plus ``extra``
    (sha256, file name) reviews saved in the middle, then the page holding the row named ``damage_name``
    (default: the middle filler) overwritten with garbage. Returns ``path``; asserts quick_check sees it."""
    rows = [(filler_sha(i), f"filler-{i}.png") for i in range(count)]
    rows[count // 2 : count // 2] = list(extra)
    with ReviewStore(path) as store:
        db = store._db
        with db:  # one transaction: seconds fewer than one commit per review
            db.executemany(
                "INSERT INTO reviews (sha256, decision, chosen_class, note, model_version, file_name, updated_at) "
                "VALUES (?, 'agree', NULL, 'seen', ?, ?, '2025-01-01T00:00:00.000+00:00')",
                [(key, MODEL_VERSION, name) for key, name in rows],
            )
        page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
    data = bytearray(path.read_bytes())
    offset = data.find((damage_name or f"filler-{count // 2}.png").encode())
    assert offset > 0, "the row to damage is not in the file"
    page = offset // page_size
    assert 1 < page < len(data) // page_size - 1, "the damaged page should lie inside the file"
    data[page * page_size : (page + 1) * page_size] = random.Random(page).randbytes(page_size)
    path.write_bytes(bytes(data))
    assert quick_check(path) != ["ok"], "the garbage did not damage the database"
    return path
