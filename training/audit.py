"""``busi-train audit``: what is wrong with a BUSI-layout dataset before anyone trains on it.

:func:`run_audit` reads every image once (on a thread pool), then writes into ``out_dir``:

- ``manifest.csv``: file, class, SHA-256 of the file and of its decoded pixels, size, mode, masks;
- ``duplicate_pairs.csv``: exact copies (same bytes or same decoded pixels) and verified near-duplicates
  (see :mod:`training.near_duplicates`), the edges of the groups; ``review_pairs.csv``: borderline pairs a
  human should look at, not grouped;
- ``groups.csv``: every image's ``group_id`` (connected components, singletons included), the group size and
  whether the group spans several classes (``conflicting``): the unit every honest split must keep whole;
- ``annotations.csv``: burned-in caliper crosses, text lines, colour overlays (:mod:`training.annotations`);
- ``summary.md``, ``duplicate_examples.png``, ``caliper_examples.png``: for a human to check the above.

On the 780 BUSI images it takes about 45 s on a 2-core machine (15 s reading, 30 s verifying ~3 100 pairs).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
from tqdm import tqdm

from busi_viewer.core.atomic import atomic_write
from busi_viewer.core.errors import BusiViewerError
from busi_viewer.core.labels import CLASS_NAMES
from busi_viewer.core.loader import load_image
from busi_viewer.core.masks import find_mask_files, load_mask
from busi_viewer.core.scan import scan_folder
from training import near_duplicates as nd
from training.annotations import AnnotationFlags, analyse_annotations

__all__ = ["AuditResult", "DuplicatePair", "ImageEntry", "main", "run_audit"]

EXAMPLE_PAIRS = 12  # pairs shown in duplicate_examples.png
EXAMPLE_CALIPER_IMAGES = 12


@dataclass
class ImageEntry:
    """One image of the dataset as the audit saw it. ``relative`` is the POSIX path below the root."""

    relative: str
    label: str  # class folder name ("" outside benign/malignant/normal)
    sha256: str
    size_bytes: int
    pixel_sha256: str = ""  # of the decoded (H, W, 3) uint8 pixels: equal for a lossless re-encoding
    width: int = 0
    height: int = 0
    mode: str = ""  # Pillow mode of the file: "L", "RGB", "RGBA", ...
    mask_files: list[str] = field(default_factory=list)  # relative POSIX paths, merge order
    mask_empty: bool | None = None  # None: no mask or unreadable mask
    phash: int = 0
    dhash: int = 0
    annotations: AnnotationFlags = field(default_factory=AnnotationFlags)
    error: str = ""  # why the image (or its mask) could not be read; such images are left out of matching


@dataclass(frozen=True)
class DuplicatePair:
    """Two images (indices into ``AuditResult.entries``) found to show the same scan or neighbouring frames.

    ``kind``: "exact" (same bytes or pixels), "near" (verified), "review" (borderline, not grouped).
    ``score``: verification score (1.0 for exact), ``scale``: size of b relative to a.
    """

    a: int
    b: int
    kind: str
    phash_distance: int
    dhash_distance: int
    score: float = 1.0
    scale: float = 1.0
    overlap: float = 1.0


@dataclass
class AuditResult:
    """Everything the audit found; ``files`` maps output names to the paths written."""

    root: Path
    out_dir: Path
    entries: list[ImageEntry]
    paths: list[Path]  # the file of each entry
    pairs: list[DuplicatePair]  # exact + near: the edges of the groups
    review_pairs: list[DuplicatePair]
    group_ids: list[int]
    seconds: dict[str, float]
    files: dict[str, Path]
    title: str = "BUSI"

    @property
    def groups(self) -> dict[int, list[int]]:
        """Group id -> member indices (in natural file order)."""
        members: dict[int, list[int]] = defaultdict(list)
        for index, group in enumerate(self.group_ids):
            members[group].append(index)
        return dict(members)

    @property
    def conflicting_groups(self) -> list[int]:
        """Ids of groups whose members lie in more than one class folder."""
        return sorted(g for g, m in self.groups.items() if len({self.entries[i].label for i in m}) > 1)

    def index_of(self, relative: str) -> int:
        for index, entry in enumerate(self.entries):
            if entry.relative == relative:
                return index
        raise KeyError(relative)

    def group_of(self, relative: str) -> int:
        return self.group_ids[self.index_of(relative)]


# ------------------------------------------------------------------------------------------------ reading
def _grey(record) -> np.ndarray:
    pixels = record.pixels
    if pixels.ndim == 2 and pixels.dtype == np.uint8:
        return pixels
    return cv2.cvtColor(record.rgb, cv2.COLOR_RGB2GRAY)


@dataclass(frozen=True)
class AuditItem:
    """One image to audit: its file, the name it is listed under (POSIX, unique in the audit), its class
    ("" = unknown) and its masks as (file, listed name) pairs (None: BUSI-style masks beside the image)."""

    path: Path
    relative: str
    label: str
    masks: tuple[tuple[Path, str], ...] | None = None


def busi_folder_items(root: Path, out: Path) -> list[AuditItem]:
    """Every image below a BUSI-layout ``root`` (class = its class folder), leaving out the audit's own ``out``."""
    items = []
    for path in scan_folder(root).images:
        if path.resolve().is_relative_to(out.resolve()):
            continue  # the output folder may sit inside the dataset: never audit our own figures
        relative = path.relative_to(root).as_posix()
        top = relative.split("/", 1)[0]
        items.append(AuditItem(path, relative, top if top in CLASS_NAMES and "/" in relative else ""))
    return items


def index_items(index) -> list[AuditItem]:
    """The images of a training index (any source, or several: their relpaths carry the source)."""
    roots = dict(index.roots)
    items = []
    for s in index:
        root = Path(roots[s.source]) if s.source in roots else index.root
        prefix = f"{s.source}/" if s.source in roots else ""
        masks = tuple((m, prefix + m.relative_to(root).as_posix()) for m in s.mask_paths)
        items.append(AuditItem(s.path, s.relpath, s.class_name, masks))
    return items


def _describe(item: AuditItem) -> tuple[ImageEntry, nd.MatchFeatures | None]:
    """Manifest entry, hashes, annotation flags and matching features of one image (never raises)."""
    path, relative, label = item.path, item.relative, item.label
    try:
        data = path.read_bytes()
    except OSError as exc:
        return ImageEntry(relative=relative, label=label, sha256="", size_bytes=0,
                          error=f"cannot read the file: {exc.strerror or exc}"), None
    entry = ImageEntry(relative=relative, label=label, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
    try:
        record = load_image(path)
    except BusiViewerError as exc:
        entry.error = str(exc)
        return entry, None
    rgb = record.rgb
    digest = hashlib.sha256(f"{rgb.shape}".encode())
    digest.update(np.ascontiguousarray(rgb).tobytes())
    entry.pixel_sha256 = digest.hexdigest()
    entry.height, entry.width = record.shape
    entry.mode = record.attributes.get("Mode", record.photometric)
    folder = relative.rsplit("/", 1)[0] + "/" if "/" in relative else ""
    listed = item.masks if item.masks is not None else [(m, folder + m.name) for m in find_mask_files(path)]
    masks = [m for m, _ in listed]
    entry.mask_files = [name for _, name in listed]
    if masks:
        try:
            entry.mask_empty = not bool(load_mask(masks, record.shape).any())
        except BusiViewerError as exc:
            entry.error = f"mask: {exc}"
    grey = _grey(record)
    entry.phash, entry.dhash = nd.phash(grey), nd.dhash(grey)
    entry.annotations = analyse_annotations(grey, rgb if record.pixels.ndim == 3 else None)
    return entry, nd.match_features(grey)


def _parallel(function, items: list, workers: int, progress: bool, desc: str, unit: str) -> list:
    """``[function(item) for item in items]`` on a thread pool (OpenCV, zlib and hashlib release the GIL)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(function, items), total=len(items), desc=desc, unit=unit, disable=not progress,
                         leave=False))


# ------------------------------------------------------------------------------------------------ matching
def _exact_pairs(entries: list[ImageEntry]) -> tuple[list[DuplicatePair], list[int]]:
    """Pairs of identical files or identical decoded pixels, and one representative index per pixel class."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for index, entry in enumerate(entries):
        if entry.sha256:
            by_key["file:" + entry.sha256].append(index)
        if entry.pixel_sha256:
            by_key["pixels:" + entry.pixel_sha256].append(index)
    seen, pairs = set(), []
    for members in by_key.values():
        for other in members[1:]:
            key = (members[0], other)
            if key not in seen:
                seen.add(key)
                a, b = entries[members[0]], entries[other]
                pairs.append(DuplicatePair(members[0], other, "exact", _bits(a.phash ^ b.phash), _bits(a.dhash ^ b.dhash)))
    group = nd.connected_groups(len(entries), [(p.a, p.b) for p in pairs])
    first_member: dict[int, int] = {}
    for index, g in enumerate(group):
        first_member.setdefault(g, index)
    return sorted(pairs, key=lambda p: (p.a, p.b)), sorted(first_member.values())


def _bits(value: int) -> int:
    return int(value).bit_count()


def _near_pairs(entries: list[ImageEntry], features: list[nd.MatchFeatures | None], representatives: list[int],
                workers: int, progress: bool) -> tuple[list[DuplicatePair], list[DuplicatePair], int]:
    """Verified near pairs, review pairs and the number of candidates, among readable representatives."""
    usable = [i for i in representatives if features[i] is not None]
    phashes = np.array([entries[i].phash for i in usable], dtype=np.uint64)
    dhashes = np.array([entries[i].dhash for i in usable], dtype=np.uint64)
    candidates = nd.candidate_pairs(phashes, dhashes)

    def check(candidate):
        i, j, dp, dd = candidate
        return usable[i], usable[j], dp, dd, nd.verify_pair(features[usable[i]], features[usable[j]])

    near, review = [], []
    for a, b, dp, dd, result in _parallel(check, candidates, workers, progress, "verifying pairs", "pair"):
        kind = nd.decide(result, dp)
        if kind is not None:
            pair = DuplicatePair(a, b, kind, dp, dd, result.score, result.scale, result.overlap)
            (near if kind == "near" else review).append(pair)
    return near, review, len(candidates)


# ------------------------------------------------------------------------------------------------ writing
def _write_csv(path: Path, header: list[str], rows: Iterable[list]) -> None:
    with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _write_png(path: Path, image_rgb: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {path}")
    with atomic_write(path, "wb") as handle:
        handle.write(data.tobytes())


def _pair_rows(entries: list[ImageEntry], pairs: list[DuplicatePair]) -> list[list]:
    return [[entries[p.a].relative, entries[p.b].relative, entries[p.a].label, entries[p.b].label, p.kind,
             p.phash_distance, p.dhash_distance, f"{p.score:.4f}", f"{p.scale:.4f}", f"{p.overlap:.4f}"]
            for p in pairs]


PAIR_COLUMNS = ["a", "b", "class_a", "class_b", "kind", "phash_distance", "dhash_distance", "score", "scale",
                "overlap"]


def _write_tables(result: AuditResult) -> None:
    entries, out = result.entries, result.out_dir
    _write_csv(out / "manifest.csv",
               ["file", "class", "sha256", "pixel_sha256", "width", "height", "mode", "bytes", "mask_files",
                "mask_empty", "error"],
               ([e.relative, e.label, e.sha256, e.pixel_sha256, e.width, e.height, e.mode, e.size_bytes,
                 ";".join(e.mask_files), "" if e.mask_empty is None else str(e.mask_empty).lower(), e.error]
                for e in entries))
    _write_csv(out / "duplicate_pairs.csv", PAIR_COLUMNS, _pair_rows(entries, result.pairs))
    _write_csv(out / "review_pairs.csv", PAIR_COLUMNS, _pair_rows(entries, result.review_pairs))
    groups = result.groups
    conflicting = set(result.conflicting_groups)
    _write_csv(out / "groups.csv", ["file", "class", "group_id", "group_size", "conflicting", "group_classes"],
               ([e.relative, e.label, g, len(groups[g]), str(g in conflicting).lower(),
                 "+".join(sorted({entries[i].label for i in groups[g]}))]
                for e, g in zip(entries, result.group_ids)))
    _write_csv(out / "annotations.csv",
               ["file", "class", "calipers", "caliper_count", "caliper_points", "text", "text_lines", "colour",
                "colour_fraction", "colour_box", "colour_flow"],
               ([e.relative, e.label, str(e.annotations.has_calipers).lower(), len(e.annotations.calipers),
                 ";".join(f"{x}:{y}" for x, y in e.annotations.calipers), str(e.annotations.has_text).lower(),
                 len(e.annotations.text_boxes), str(e.annotations.colour.colour).lower(),
                 f"{e.annotations.colour.colour_fraction:.5f}", str(e.annotations.colour.colour_box).lower(),
                 str(e.annotations.colour.colour_flow).lower()] for e in entries))


# ------------------------------------------------------------------------------------------------ figures
def _thumbnail(path: Path, height: int) -> tuple[np.ndarray, float]:
    """(RGB thumbnail of the given height, scale factor)."""
    rgb = load_image(path).rgb
    factor = height / rgb.shape[0]
    return cv2.resize(rgb, (max(1, round(rgb.shape[1] * factor)), height), interpolation=cv2.INTER_AREA), factor


def _label(tile: np.ndarray, lines: list[str], colour=(255, 255, 0)) -> np.ndarray:
    """The tile with a black caption band of ``lines`` on top (the tile is widened to fit the text)."""
    text_width = max(cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)[0][0] for text in lines) + 8
    if text_width > tile.shape[1]:
        tile = cv2.copyMakeBorder(tile, 0, 0, 0, text_width - tile.shape[1], cv2.BORDER_CONSTANT)
    band = np.zeros((16 * len(lines) + 4, tile.shape[1], 3), np.uint8)
    for k, text in enumerate(lines):
        cv2.putText(band, text, (4, 15 + 16 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return np.vstack([band, tile])


def _grid(tiles: list[np.ndarray], columns: int, pad: int = 6) -> np.ndarray:
    """Tiles (RGB) padded to a common size and laid out row by row on a dark grey background."""
    if not tiles:
        tile = np.zeros((60, 400, 3), np.uint8)
        cv2.putText(tile, "nothing to show", (10, 35), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (200, 200, 200), 1)
        return tile
    h = max(t.shape[0] for t in tiles) + pad
    w = max(t.shape[1] for t in tiles) + pad
    rows = -(-len(tiles) // columns)
    canvas = np.full((rows * h + pad, columns * w + pad, 3), 40, np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        canvas[pad + r * h:pad + r * h + tile.shape[0], pad + c * w:pad + c * w + tile.shape[1]] = tile
    return canvas


def _example_pairs(result: AuditResult) -> list[DuplicatePair]:
    """Conflicting pairs first, then accepted near pairs from the lowest score up (closest to the threshold),
    one exact pair, and the best-scoring review pairs (not grouped)."""
    entries = result.entries
    chosen: list[DuplicatePair] = []
    # One cross-class pair per conflicting group, taken in turn from each class combination (benign+normal...).
    by_combination: dict[tuple[str, str], list[DuplicatePair]] = defaultdict(list)
    seen_groups: set[int] = set()
    for p in result.pairs:
        if entries[p.a].label != entries[p.b].label and result.group_ids[p.a] not in seen_groups:
            seen_groups.add(result.group_ids[p.a])
            by_combination[(entries[p.a].label, entries[p.b].label)].append(p)
    while len(chosen) < 4 and any(by_combination.values()):
        for pairs in by_combination.values():
            if pairs and len(chosen) < 4:
                chosen.append(pairs.pop(0))
    near = sorted((p for p in result.pairs if p.kind == "near" and p not in chosen), key=lambda p: p.score)
    chosen += near[:4]
    chosen += [p for p in result.pairs if p.kind == "exact" and p not in chosen][:1]
    chosen += sorted(result.review_pairs, key=lambda p: -p.score)[:2]
    chosen += [p for p in near[4:] if p not in chosen][: max(0, EXAMPLE_PAIRS - len(chosen))]
    return chosen[:EXAMPLE_PAIRS]


def _duplicate_figure(result: AuditResult) -> np.ndarray:
    tiles = []
    for pair in _example_pairs(result):
        a, b = result.entries[pair.a], result.entries[pair.b]
        left, _ = _thumbnail(result.paths[pair.a], 150)
        right, _ = _thumbnail(result.paths[pair.b], 150)
        gap = np.full((150, 4, 3), 255, np.uint8)
        kind = "REVIEW (not grouped)" if pair.kind == "review" else pair.kind
        colour = (255, 80, 80) if a.label != b.label else (255, 255, 0)
        tiles.append(_label(np.hstack([left, gap, right]),
                            [f"{a.relative}  |  {b.relative}",
                             f"{kind}  score {pair.score:.2f}  pHash {pair.phash_distance}  scale {pair.scale:.2f}"],
                            colour))
    return _grid(tiles, 2)


def _caliper_figure(result: AuditResult) -> np.ndarray:
    flagged = [e for e in result.entries if e.annotations.has_calipers]
    # Most crosses first, then the single-cross images (the doubtful ones), spread over the classes.
    flagged.sort(key=lambda e: -len(e.annotations.calipers))
    singles = [e for e in flagged if len(e.annotations.calipers) == 1]
    shown = flagged[: EXAMPLE_CALIPER_IMAGES - min(4, len(singles))]
    shown += [e for e in singles if e not in shown][: EXAMPLE_CALIPER_IMAGES - len(shown)]
    tiles = []
    path_of = {entry.relative: path for entry, path in zip(result.entries, result.paths)}
    for entry in shown:
        thumb, factor = _thumbnail(path_of[entry.relative], 200)
        full = load_image(path_of[entry.relative]).rgb
        for x, y in entry.annotations.calipers:
            cv2.circle(thumb, (round(x * factor), round(y * factor)), 9, (255, 40, 40), 1, cv2.LINE_AA)
        for x, y, w, h in entry.annotations.text_boxes:
            cv2.rectangle(thumb, (round(x * factor) - 1, round(y * factor) - 1),
                          (round((x + w) * factor) + 1, round((y + h) * factor) + 1), (40, 220, 40), 1)
        crops = []
        for x, y in entry.annotations.calipers[:4]:  # native-resolution zooms of the first crosses
            r = 16
            padded = cv2.copyMakeBorder(full, r, r, r, r, cv2.BORDER_CONSTANT)
            crops.append(cv2.resize(padded[y:y + 2 * r, x:x + 2 * r], (64, 64), interpolation=cv2.INTER_NEAREST))
        strip = np.hstack(crops) if crops else np.zeros((64, 64, 3), np.uint8)
        strip = strip[:, : thumb.shape[1]]
        width = max(thumb.shape[1], strip.shape[1])
        thumb = cv2.copyMakeBorder(thumb, 0, 0, 0, width - thumb.shape[1], cv2.BORDER_CONSTANT)
        strip = cv2.copyMakeBorder(strip, 2, 0, 0, width - strip.shape[1], cv2.BORDER_CONSTANT)
        tiles.append(_label(np.vstack([thumb, strip]),
                            [f"{entry.relative}: {len(entry.annotations.calipers)} cross(es)"]))
    return _grid(tiles, 4)


# ------------------------------------------------------------------------------------------------ summary
def _summary(result: AuditResult, n_candidates: int) -> str:
    entries, groups = result.entries, result.groups
    labels = sorted({e.label for e in entries}, key=lambda x: (x not in CLASS_NAMES, x))
    per_class = Counter(e.label for e in entries)
    exact_groups = nd.connected_groups(len(entries), [(p.a, p.b) for p in result.pairs if p.kind == "exact"])
    exact_sizes = Counter(exact_groups)
    n_exact_groups = sum(1 for size in exact_sizes.values() if size > 1)
    multi = {g: m for g, m in groups.items() if len(m) > 1}
    near_groups = sum(1 for m in multi.values() if len({exact_groups[i] for i in m}) > 1)
    name = lambda i: entries[i].relative  # noqa: E731
    shown = {label: label or "(no class)" for label in labels}
    lines = [
        f"# Data audit: {result.title}",
        "",
        f"Dataset: `{result.root}`  ",
        f"Images: {len(entries)} ({', '.join(f'{shown[label]} {per_class[label]}' for label in labels)}); "
        f"unreadable: {sum(1 for e in entries if e.error)}.  ",
        f"Modes: {', '.join(f'{m} {c}' for m, c in Counter(e.mode for e in entries).most_common())}; "
        f"masks: {sum(len(e.mask_files) for e in entries)} files, images without mask: "
        f"{sum(1 for e in entries if not e.mask_files)}.",
        "",
        "| class | images | empty masks | with calipers | caliper crosses | with text | colour |",
        "|---|---|---|---|---|---|---|",
    ]
    for label in labels:
        members = [e for e in entries if e.label == label]
        lines.append(
            f"| {shown[label]} | {len(members)} | {sum(1 for e in members if e.mask_empty)} | "
            f"{sum(1 for e in members if e.annotations.has_calipers)} | "
            f"{sum(len(e.annotations.calipers) for e in members)} | "
            f"{sum(1 for e in members if e.annotations.has_text)} | "
            f"{sum(1 for e in members if e.annotations.colour.colour)} |")
    lines += [
        "",
        "## Duplicates",
        "",
        f"- Exact duplicate groups (same bytes or same decoded pixels): {n_exact_groups} "
        f"({sum(s for s in exact_sizes.values() if s > 1)} images).",
        f"- Near-duplicate pairs verified: {sum(1 for p in result.pairs if p.kind == 'near')} of {n_candidates} "
        f"candidates; groups containing near-duplicates: {near_groups}.",
        f"- Groups with more than one image: {len(multi)}, holding {sum(len(m) for m in multi.values())} images "
        f"(largest: {max((len(m) for m in multi.values()), default=0)}); "
        f"groups in all: {len(groups)} for {len(entries)} images.",
        f"- Borderline pairs for human review (not grouped, `review_pairs.csv`): {len(result.review_pairs)}.",
        "",
        f"### Conflicting groups (one scan in several class folders): {len(result.conflicting_groups)}",
        "",
    ]
    for g in result.conflicting_groups:
        lines.append(f"- group {g}: " + ", ".join(f"`{name(i)}`" for i in groups[g]))
    if result.review_pairs:
        lines += ["", "### Highest-scoring review pairs", ""]
        for p in sorted(result.review_pairs, key=lambda p: -p.score)[:10]:
            lines.append(f"- `{name(p.a)}` ~ `{name(p.b)}`: score {p.score:.2f}")
    colour = [e for e in entries if e.annotations.colour.colour]
    lines += ["", "## Burned-in annotations", "",
              f"- Caliper crosses in {sum(1 for e in entries if e.annotations.has_calipers)} images "
              f"({sum(len(e.annotations.calipers) for e in entries)} crosses); per class in the table above.",
              f"- Text lines in {sum(1 for e in entries if e.annotations.has_text)} images (best effort: labels "
              "such as 'RT UOQ' and vendor logos).",
              f"- Colour content in {len(colour)} images: " + (", ".join(
                  f"`{e.relative}`" + (" (Doppler box)" if e.annotations.colour.colour_box else "")
                  + (" (flow)" if e.annotations.colour.colour_flow else "") for e in colour) or "none") + ".",
              "",
              "## Settings",
              "",
              f"Near-duplicate: candidates = {nd.CANDIDATE_NEIGHBOURS} nearest pHash neighbours or pHash <= "
              f"{nd.CANDIDATE_MAX_PHASH}; verified when the overlap >= {nd.MIN_OVERLAP} and the median local NCC "
              f">= {nd.NEAR_MIN_SCORE}, or >= {nd.REVIEW_MIN_SCORE} with pHash <= {nd.LAYOUT_MAX_PHASH} (else "
              f"review). Work images {nd.WORK_SIZE} px, band-pass DoG sigmas {nd.DOG_SIGMAS}.",
              "",
              "Runtime: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items()) + ".", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ entry point
def run_audit(busi_root: Path | str, out_dir: Path | str, progress: bool = True, *,
              workers: int | None = None, items: list[AuditItem] | None = None, title: str = "BUSI") -> AuditResult:
    """Audit the dataset under ``busi_root`` (``<class>/<name>.png`` with masks beside) into ``out_dir``; or,
    with ``items``, exactly those images (any layout, several sources at once: near-duplicates are then also
    found across sources).

    ``workers``: threads for reading and verification (default: CPU count, at most 4). Raises ScanError
    (a ValueError) when ``busi_root`` is not a readable folder.
    """
    started = time.perf_counter()
    root, out = Path(busi_root), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or min(4, os.cpu_count() or 1)
    threads_before = cv2.getNumThreads()
    cv2.setNumThreads(1)  # parallel over images/pairs instead: OpenCV's own threads would oversubscribe
    try:
        items = busi_folder_items(root, out) if items is None else items
        described = _parallel(_describe, items, workers, progress, "reading images", "img")
        entries = [entry for entry, _ in described]
        features = [feature for _, feature in described]
        t_read = time.perf_counter()
        exact, representatives = _exact_pairs(entries)
        near, review, n_candidates = _near_pairs(entries, features, representatives, workers, progress)
        t_match = time.perf_counter()
        pairs = exact + sorted(near, key=lambda p: (p.a, p.b))
        group_ids = nd.connected_groups(len(entries), [(p.a, p.b) for p in pairs])
        result = AuditResult(root=root, out_dir=out, entries=entries, paths=[item.path for item in items],
                             pairs=pairs,
                             review_pairs=sorted(review, key=lambda p: (p.a, p.b)), group_ids=group_ids,
                             seconds={"reading": t_read - started, "matching": t_match - t_read}, files={},
                             title=title)
        _write_tables(result)
        _write_png(out / "duplicate_examples.png", _duplicate_figure(result))
        _write_png(out / "caliper_examples.png", _caliper_figure(result))
        result.seconds["total"] = time.perf_counter() - started
        with atomic_write(out / "summary.md", "w", encoding="utf-8") as handle:
            handle.write(_summary(result, n_candidates))
    finally:
        cv2.setNumThreads(threads_before)
    result.files = {name: out / name for name in (
        "manifest.csv", "duplicate_pairs.csv", "review_pairs.csv", "groups.csv", "annotations.csv", "summary.md",
        "duplicate_examples.png", "caliper_examples.png")}
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m training.audit BUSI_ROOT OUT_DIR``."""
    parser = argparse.ArgumentParser(prog="busi-train audit", description=__doc__.splitlines()[0])
    parser.add_argument("busi_root", type=Path, help="folder holding benign/, malignant/, normal/")
    parser.add_argument("out_dir", type=Path, help="where the audit files are written")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        result = run_audit(args.busi_root, args.out_dir, progress=not args.quiet)
    except (BusiViewerError, ValueError, OSError) as exc:
        print(f"audit failed: {exc}", file=sys.stderr)
        return 2
    print((result.out_dir / "summary.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
