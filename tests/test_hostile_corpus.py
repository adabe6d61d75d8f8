"""busi-predict on the generated hostile corpus (tests/hostile_corpus.py): the run finishes, every valid image is
predicted, every other input is listed in errors.csv with its specific reason, and no output quotes identifying
text found inside a file."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from busi_viewer.cli.predict import main
from tests.hostile_corpus import IDENTIFYING_TEXT, build


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list]:
    folder = tmp_path_factory.mktemp("hostile")
    return folder, build(folder, huge_pngs=1)


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_every_hostile_input_is_predicted_or_listed_with_its_reason(corpus, tiny_bundle, tmp_path):
    pytest.importorskip("pypdf")
    from tests.helpers.pdf import pdf_text

    folder, cases = corpus
    out = tmp_path / "out"
    assert main([str(folder), "--model", str(tiny_bundle), "--out", str(out), "--no-progress", "--pdf"]) == 0
    predicted = {row["file"] for row in _rows(out / "predictions.csv")}
    assert predicted == {case.name for case in cases if case.expect is None}
    reasons: dict[str, list[str]] = {}
    for row in _rows(out / "errors.csv"):
        reasons.setdefault(row["file"], []).append(row["reason"])
    for case in cases:
        if case.expect is None:
            continue
        assert case.name in reasons, f"{case.name} is not listed in errors.csv"
        reason = " ".join(reasons[case.name])
        assert case.expect.lower() in reason.lower(), f"{case.name}: {reason}"
        assert not reason.startswith("unexpected"), f"{case.name}: not a specific reason: {reason}"
    assert not set(reasons) - {case.name for case in cases}, "errors.csv lists only the corpus' files"

    secret_parts = ("Jane", "Example", "12345678", "1970-01-01")
    written = (out / "errors.csv").read_text(encoding="utf-8") + pdf_text(out / "summary.pdf", metadata=True)
    assert not [part for part in secret_parts if part in written], IDENTIFYING_TEXT
