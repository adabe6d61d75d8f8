"""Synthetic "scanned document" pages for the out-of-scope sets: dense text, a table and a form, rendered with
Pillow's bundled font, then given a scanner's look (slight tilt, paper tint, noise). Seeded: same pages every run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

PAGE_SIZE = (680, 880)  # US letter at 80 dpi (width, height)
MARGIN = 56
WORDS = (
    "the patient report summary results method analysis review sample record annual meeting budget project "
    "schedule quarter income expense total account office policy section page figure table value estimate "
    "revision approved pending committee notice member service contract delivery address order invoice payment "
    "terms agreement period balance statement update minutes agenda item action owner date reference plan "
    "system version release change request support customer product quality standard procedure training staff"
).split()
_FIELDS = ("Name", "Date of birth", "Address", "City", "Postcode", "Telephone", "E-mail", "Reference number",
           "Employer", "Department", "Start date", "Signature")


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at ``size`` px (the small fixed bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _words(rng: np.random.Generator, count: int) -> str:
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), count))


def _sentence(rng: np.random.Generator) -> str:
    text = _words(rng, int(rng.integers(6, 16)))
    return text[0].upper() + text[1:] + "."


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and draw.textlength(candidate, font=font) > width:
            lines.append(line)
            candidate = word
        line = candidate
    return lines + ([line] if line else [])


def _title(draw: ImageDraw.ImageDraw, rng: np.random.Generator) -> int:
    """Draws a heading at the top; returns the y where the body starts."""
    draw.text((MARGIN, MARGIN), _words(rng, 4).title(), fill=0, font=_font(26))
    draw.line((MARGIN, MARGIN + 40, PAGE_SIZE[0] - MARGIN, MARGIN + 40), fill=0, width=2)
    return MARGIN + 56


def dense_text(draw: ImageDraw.ImageDraw, rng: np.random.Generator) -> None:
    """Paragraphs of justified-looking prose, in one or two columns."""
    y0 = _title(draw, rng)
    columns = int(rng.integers(1, 3))
    gap = 24
    col_width = (PAGE_SIZE[0] - 2 * MARGIN - gap * (columns - 1)) // columns
    font, leading = _font(13), 17
    for col in range(columns):
        x, y = MARGIN + col * (col_width + gap), y0
        while y < PAGE_SIZE[1] - MARGIN - leading:
            paragraph = " ".join(_sentence(rng) for _ in range(int(rng.integers(2, 6))))
            for line in _wrap(draw, paragraph, font, col_width):
                if y >= PAGE_SIZE[1] - MARGIN - leading:
                    break
                draw.text((x, y), line, fill=0, font=font)
                y += leading
            y += leading // 2


def table(draw: ImageDraw.ImageDraw, rng: np.random.Generator) -> None:
    """A ruled table: a header row of labels, then rows of words and numbers."""
    top = y = _title(draw, rng)
    n_cols, row_h = int(rng.integers(4, 7)), 24
    x_edges = np.linspace(MARGIN, PAGE_SIZE[0] - MARGIN, n_cols + 1).astype(int)
    font, bold = _font(12), _font(14)
    for row in range(int((PAGE_SIZE[1] - MARGIN - y) // row_h)):
        for col in range(n_cols):
            if row == 0:
                cell = WORDS[int(rng.integers(len(WORDS)))].title()
            elif col == 0:
                cell = _words(rng, 2)
            else:
                cell = f"{rng.uniform(0, 10 ** int(rng.integers(1, 5))):,.2f}"
            draw.text((int(x_edges[col]) + 5, y + 5), cell, fill=0, font=bold if row == 0 else font)
        draw.line((MARGIN, y, PAGE_SIZE[0] - MARGIN, y), fill=0, width=2 if row <= 1 else 1)
        y += row_h
    draw.line((MARGIN, y, PAGE_SIZE[0] - MARGIN, y), fill=0, width=2)
    for x in x_edges:
        draw.line((int(x), top, int(x), y), fill=0, width=1)


def form(draw: ImageDraw.ImageDraw, rng: np.random.Generator) -> None:
    """A fill-in form: labelled lines, boxes, tick boxes and a signature line."""
    y = _title(draw, rng)
    font = _font(14)
    right = PAGE_SIZE[0] - MARGIN
    for label in rng.permutation(_FIELDS)[: int(rng.integers(7, len(_FIELDS) + 1))]:
        draw.text((MARGIN, y), f"{label}:", fill=0, font=font)
        if rng.random() < 0.5:
            draw.line((MARGIN + 170, y + 16, right, y + 16), fill=0, width=1)
        else:
            draw.rectangle((MARGIN + 170, y - 4, right, y + 20), outline=0, width=1)
        y += 40
    y += 10
    for _ in range(int(rng.integers(3, 6))):
        draw.rectangle((MARGIN, y, MARGIN + 14, y + 14), outline=0, width=1)
        if rng.random() < 0.4:
            draw.line((MARGIN + 2, y + 7, MARGIN + 6, y + 12, MARGIN + 13, y + 1), fill=0, width=2)
        draw.text((MARGIN + 24, y), _sentence(rng), fill=0, font=_font(12))
        y += 28
    for line in _wrap(draw, " ".join(_sentence(rng) for _ in range(4)), _font(11), right - MARGIN):
        if y > PAGE_SIZE[1] - MARGIN - 60:
            break
        y += 15
        draw.text((MARGIN, y), line, fill=0, font=_font(11))
    draw.line((right - 220, PAGE_SIZE[1] - MARGIN - 10, right, PAGE_SIZE[1] - MARGIN - 10), fill=0, width=1)
    draw.text((right - 220, PAGE_SIZE[1] - MARGIN - 4), "Signature", fill=0, font=_font(11))


LAYOUTS: dict[str, Callable[[ImageDraw.ImageDraw, np.random.Generator], None]] = {
    "dense_text": dense_text, "table": table, "form": form,
}


def scanned(page: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """A clean page as a flatbed scan: tilted by under a degree, softened, tinted paper, sensor noise."""
    tilted = page.rotate(float(rng.uniform(-0.8, 0.8)), resample=Image.Resampling.BILINEAR, fillcolor=255)
    soft = tilted.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 0.8))))
    paper = float(rng.uniform(225, 248))
    pixels = np.asarray(soft, dtype=np.float32) * (paper / 255.0) + rng.normal(0.0, 3.0, soft.size[::-1])
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def render_documents(count: int, seed: int = 0) -> Iterator[tuple[str, np.ndarray]]:
    """``count`` (layout name, (H, W) uint8 page) pairs, cycling through :data:`LAYOUTS`; deterministic."""
    names = list(LAYOUTS)
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        name = names[index % len(names)]
        page = Image.new("L", PAGE_SIZE, 255)
        LAYOUTS[name](ImageDraw.Draw(page), rng)
        yield name, scanned(page, rng)
