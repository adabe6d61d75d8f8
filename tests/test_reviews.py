"""The review store keeps every decision: round trips, upserts, reopening, crashes, damaged files, CSV export."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from busi_viewer.core import paths
from busi_viewer.core.reviews import (
    CSV_COLUMNS,
    SCHEMA_VERSION,
    InvalidReviewError,
    ReviewStore,
    ReviewStoreError,
)
from tests.helpers.reviews import filler_sha, quick_check, write_damaged_reviews


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


A, B, C = sha("a"), sha("b"), sha("c")


def save(store: ReviewStore, key: str, decision="agree", chosen_class=None, note="", file_name="img.png"):
    return store.save(
        key, decision=decision, chosen_class=chosen_class, note=note, model_version="busi-us 0.1.0",
        file_name=file_name,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


# --- basic behaviour -----------------------------------------------------------------------------------------


def test_round_trip(tmp_path):
    with ReviewStore(tmp_path / "r.sqlite3") as store:
        assert store.get(A) is None
        saved = store.save(
            A, decision="disagree", chosen_class="malignant", note="spiculated margin", model_version="v1",
            file_name="case 7.png",
        )
        got = store.get(A)
    assert got == saved
    assert got.decision == "disagree" and got.chosen_class == "malignant" and got.reviewed
    assert (got.note, got.model_version, got.file_name) == ("spiculated margin", "v1", "case 7.png")
    assert got.updated_at.endswith("+00:00")  # ISO-8601 in UTC


def test_upsert_keeps_one_row(tmp_path):
    path = tmp_path / "r.sqlite3"
    with ReviewStore(path) as store:
        save(store, A, "agree", note="first")
        save(store, A, "unsure", note="second thoughts")
        assert store.get(A).decision == "unsure" and store.get(A).note == "second thoughts"
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM reviews").fetchone()[0] == 1


def test_note_without_decision_is_not_reviewed(tmp_path):
    with ReviewStore(tmp_path / "r.sqlite3") as store:
        save(store, A, None, note="look again tomorrow")
        save(store, B, "agree")
        assert store.get(A).note == "look again tomorrow" and not store.get(A).reviewed
        assert store.count_reviewed([A, B, C]) == 1


def test_upper_case_hash_is_the_same_image(tmp_path):
    with ReviewStore(tmp_path / "r.sqlite3") as store:
        save(store, A.upper(), "agree")
        assert store.get(A).sha256 == A


def test_survives_reopening(tmp_path):
    path = tmp_path / "r.sqlite3"
    with ReviewStore(path) as store:
        save(store, A, "agree")
        save(store, B, "disagree", "benign")
    with ReviewStore(path) as store:
        assert store.get(A).decision == "agree"
        assert store.get(B).chosen_class == "benign"


def test_default_location_is_user_data_dir():
    with ReviewStore() as store:
        assert store.path == paths.user_data_dir() / "reviews.sqlite3"
        save(store, A)
    assert (paths.user_data_dir() / "reviews.sqlite3").is_file()


def test_creates_missing_parent_folders(tmp_path):
    path = tmp_path / "deep" / "er" / "r.sqlite3"
    with ReviewStore(path) as store:
        save(store, A)
    assert path.is_file()


def test_get_many_and_count_reviewed_over_many_chunks(tmp_path):
    keys = [sha(str(i)) for i in range(1200)]  # more than two IN (...) chunks
    with ReviewStore(tmp_path / "r.sqlite3") as store:
        for i, key in enumerate(keys[:1100]):
            save(store, key, "agree" if i % 2 else None)
        found = store.get_many(keys + keys[:10])  # duplicates are harmless
        assert set(found) == set(keys[:1100])
        assert found[keys[3]].decision == "agree"
        assert store.count_reviewed(keys) == 550
        assert store.get_many([]) == {} and store.count_reviewed([]) == 0


def test_wal_mode_and_schema_version(tmp_path):
    path = tmp_path / "r.sqlite3"
    ReviewStore(path).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_closed_store_refuses_work(tmp_path):
    store = ReviewStore(tmp_path / "r.sqlite3")
    store.close()
    store.close()  # idempotent
    with pytest.raises(ReviewStoreError, match="closed"):
        store.get(A)


# --- durability ----------------------------------------------------------------------------------------------

_CHILD = """
import os, signal, sys
from pathlib import Path
from busi_viewer.core.reviews import ReviewStore
store = ReviewStore(Path(sys.argv[1]))
store.save(sys.argv[2], decision="disagree", chosen_class="normal", note="written then killed",
           model_version="v9", file_name="x.png")
print("saved", flush=True)
if sys.argv[3] == "exit":
    os._exit(0)  # no close, no atexit, no finalisers
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_a_saved_review_survives_the_process_dying(tmp_path, how):
    if how == "kill" and not hasattr(signal, "SIGKILL"):
        pytest.skip("no SIGKILL on this platform")
    path = tmp_path / "r.sqlite3"
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_CHILD), str(path), A, how],
        capture_output=True, text=True, timeout=120,
    )
    assert "saved" in result.stdout, result.stderr
    expected_rc = 0 if how == "exit" else -signal.SIGKILL
    assert result.returncode == expected_rc, result.stderr
    with ReviewStore(path) as store:
        review = store.get(A)
    assert review is not None and review.chosen_class == "normal" and review.note == "written then killed"


# --- damaged, foreign, newer, read-only files ----------------------------------------------------------------


def test_file_that_is_not_a_database(tmp_path):
    path = tmp_path / "r.sqlite3"
    path.write_bytes(b"this is a text file, not SQLite\n" * 100)
    with pytest.raises(ReviewStoreError, match="not a reviews database") as info:
        ReviewStore(path)
    assert str(path) in str(info.value)
    assert path.read_bytes().startswith(b"this is a text file")  # never overwritten


def test_foreign_sqlite_database_is_refused(tmp_path):
    path = tmp_path / "other.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE patients (id INTEGER)")
    conn.close()
    with pytest.raises(ReviewStoreError, match="not a BUSI Viewer reviews database"):
        ReviewStore(path)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "r.sqlite3"
    ReviewStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(ReviewStoreError, match="newer version") as info:
        ReviewStore(path)
    assert str(path) in str(info.value)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_damaged_database_is_left_alone_and_a_recovered_copy_takes_over(tmp_path):
    path = write_damaged_reviews(tmp_path / "reviews.sqlite3", count=3000)
    before = path.read_bytes()
    with ReviewStore(path) as store:
        recovered = store.path
        assert store.damaged_path == path and recovered.parent == tmp_path
        assert recovered.name.startswith("reviews-recovered-") and recovered.suffix == ".sqlite3"
        assert str(path) in store.notice and "damaged" in store.notice and str(recovered) in store.notice
        kept = store.get_many(filler_sha(i) for i in range(3000))
        # Only the rows of the damaged page are lost: those before and after it were copied, unchanged.
        assert 2900 <= len(kept) < 3000 and filler_sha(1500) not in kept
        assert filler_sha(0) in kept and filler_sha(2999) in kept
        assert kept[filler_sha(2999)].file_name == "filler-2999.png" and kept[filler_sha(0)].note == "seen"
        save(store, A, file_name="new.png")
    assert path.read_bytes() == before  # never written to, not even by closing
    assert quick_check(recovered) == ["ok"]
    with ReviewStore(path) as again:  # the next start goes on with the same copy
        assert again.path == recovered and again.get(A).file_name == "new.png"
        assert str(recovered) in again.notice
    with ReviewStore(path, read_only=True) as reader:  # busi-predict sees what the viewer saved
        assert reader.path == recovered and reader.get(A) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["reviews.sqlite3", recovered.name])
    assert path.read_bytes() == before


def test_read_only_store_reads_a_damaged_file_in_place_and_writes_nothing(tmp_path):
    path = write_damaged_reviews(tmp_path / "reviews.sqlite3", count=3000)
    before = _files(tmp_path)
    with ReviewStore(path, read_only=True) as store:
        assert store.path == path and store.damaged_path == path and "damaged" in store.notice
        assert store.get(filler_sha(0)).file_name == "filler-0.png"  # sound pages still read
        with pytest.raises(ReviewStoreError, match="read-only"):
            save(store, A)
    assert _files(tmp_path) == before  # no copy, no -wal or -shm left behind, the file untouched


def test_without_room_for_a_copy_a_damaged_database_is_read_only(tmp_path, monkeypatch):
    path = write_damaged_reviews(tmp_path / "reviews.sqlite3", count=3000)
    before = path.read_bytes()

    def disk_full(_path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("busi_viewer.core.reviews.salvage_rows", disk_full)
    with ReviewStore(path) as store:
        assert store.read_only and store.path == path
        assert "No space left" in store.notice and "cannot be saved" in store.notice
        assert store.get(filler_sha(0)) is not None
        with pytest.raises(ReviewStoreError, match="read-only"):
            save(store, A)
    assert path.read_bytes() == before and not list(tmp_path.glob("*recovered*"))


def test_a_sound_database_is_opened_as_it_is(tmp_path):
    path = tmp_path / "reviews.sqlite3"
    with ReviewStore(path) as store:
        save(store, A)
    with ReviewStore(path) as store:
        assert store.path == path and store.damaged_path is None and store.notice is None
    assert quick_check(path) == ["ok"] and not list(tmp_path.glob("*recovered*"))


_OPEN_AS_USER = """
import os, sys
from pathlib import Path
from busi_viewer.core.reviews import ReviewStore, ReviewStoreError
if os.geteuid() == 0:  # root ignores file permissions: look at the file as an ordinary user would
    os.setgid(65534)
    os.setuid(65534)
try:
    ReviewStore(Path(sys.argv[1])).close()
    print("opened")
except ReviewStoreError as exc:
    print("ReviewStoreError:", exc)
"""


@pytest.mark.skipif(os.name != "posix", reason="POSIX file permissions")
@pytest.mark.parametrize("what", ["file", "folder"])
def test_read_only_database_is_reported_at_open(what):
    # A folder of its own under the system temp dir: pytest's tmp_path sits under a 0700 folder of root's.
    folder = Path(tempfile.mkdtemp(prefix="busi-ro-"))
    try:
        folder.chmod(0o777)
        path = folder / "r.sqlite3"
        with ReviewStore(path) as store:
            save(store, A)
        path.chmod(0o444 if what == "file" else 0o666)
        if what == "folder":
            folder.chmod(0o555)  # WAL needs to create its -wal and -shm files beside the database
        result = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(_OPEN_AS_USER), str(path)],
            capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("ReviewStoreError:"), result.stdout
        assert str(path) in result.stdout and "read-only" in result.stdout
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


# --- validation ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "decision", "chosen", "match"),
    [
        (A, "maybe", None, "unknown decision"),
        (A, "disagree", None, "needs the class"),
        (A, "disagree", "cyst", "unknown class"),
        (A, "agree", "benign", "only when disagreeing"),
        (A, None, "benign", "only when disagreeing"),
        ("abc", "agree", None, "SHA-256"),
        (A[:-1] + "g", "agree", None, "SHA-256"),
        (A + "0", "agree", None, "SHA-256"),
    ],
)
def test_invalid_reviews_are_refused(tmp_path, key, decision, chosen, match):
    with ReviewStore(tmp_path / "r.sqlite3") as store:
        with pytest.raises(InvalidReviewError, match=match) as info:
            save(store, key, decision, chosen)
        assert isinstance(info.value, ReviewStoreError) and isinstance(info.value, ValueError)
        assert store.get_many([A]) == {}  # nothing was written


def test_malformed_hash_in_lookups(tmp_path):
    with ReviewStore(tmp_path / "r.sqlite3") as store:
        with pytest.raises(InvalidReviewError):
            store.get("not-a-hash")
        with pytest.raises(InvalidReviewError):
            store.count_reviewed([A, "xyz"])


# --- CSV export ----------------------------------------------------------------------------------------------


def test_export_csv_quotes_and_neutralises_formulas(tmp_path):
    tricky = 'irregular, "taller than wide"\nsecond line'
    with ReviewStore(tmp_path / "r.sqlite3") as store:
        save(store, A, "disagree", "malignant", note=tricky, file_name="b.png")
        save(store, B, "agree", note="=HYPERLINK(\"http://evil\",\"x\")", file_name="a.png")
        save(store, C, "unsure", note="-2 dB gain; ok", file_name="=c.png")
        out = tmp_path / "export.csv"
        assert store.export_csv(out) == 3
    rows = read_csv(out)
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [r["file_name"] for r in rows] == ["'=c.png", "a.png", "b.png"]  # sorted by stored file name
    by_key = {r["sha256"]: r for r in rows}
    assert by_key[A]["note"] == tricky  # comma, quote and newline survive the round trip
    assert by_key[A]["decision"] == "disagree" and by_key[A]["chosen_class"] == "malignant"
    assert by_key[B]["note"] == "'=HYPERLINK(\"http://evil\",\"x\")"
    assert by_key[B]["chosen_class"] == ""
    assert by_key[C]["note"] == "'-2 dB gain; ok"
    assert by_key[C]["model_version"] == "busi-us 0.1.0"
    assert by_key[C]["updated_at"].endswith("+00:00")


def test_export_subset_in_given_order(tmp_path):
    with ReviewStore(tmp_path / "r.sqlite3") as store:
        save(store, A, "agree", file_name="a.png")
        save(store, B, "agree", file_name="b.png")
        out = tmp_path / "subset.csv"
        assert store.export_csv(out, [B, C, A]) == 2  # C has no review
    assert [r["sha256"] for r in read_csv(out)] == [B, A]


def test_export_to_missing_folder_fails_cleanly(tmp_path):
    with ReviewStore(tmp_path / "r.sqlite3") as store:
        save(store, A)
        with pytest.raises(ReviewStoreError, match="cannot write"):
            store.export_csv(tmp_path / "missing" / "out.csv")
