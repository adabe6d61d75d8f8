"""Reading PDFs in tests: the text a person would read, comparable with plain strings."""

from __future__ import annotations

import unicodedata
from pathlib import Path


def pdf_text(pdf: Path, *, metadata: bool = False) -> str:
    """All page text (and, with ``metadata``, the document information values) with ligatures unfolded (Qt
    writes "fi" as one glyph, NFKC splits it) and whitespace collapsed to single spaces."""
    import pypdf

    reader = pypdf.PdfReader(pdf)
    text = " ".join(page.extract_text() for page in reader.pages)
    if metadata:
        text += " " + " ".join(str(value) for value in (reader.metadata or {}).values())
    return " ".join(unicodedata.normalize("NFKC", text).split())
