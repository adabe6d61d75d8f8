"""Other frames of one lesion: candidates the near-duplicate audit misses, for a human to confirm.

The audit groups images that are copies of one scan (re-saved, cropped, calipers added). A second frame of the
same lesion, a moment later or from a slightly moved probe, differs by more than that, yet it still puts one
lesion on both sides of a split. Such pairs are proposed here by two independent signals, then looked at:

* ImageNet features (EfficientNet-Lite0, global average pooled, centred and L2-normalised): each image's
  ``neighbours`` nearest others with cosine similarity >= ``min_similarity``;
* lesion structure: both lesion masks agree in shape (IoU of the masks cropped to their boxes and resized to
  48 x 48 >= ``min_shape_iou``), position (centroids within ``max_centroid_shift`` of the image, in relative
  coordinates) and size (box sides within a factor ``max_size_ratio``). Masks are used to group images, never
  as a model input. Normal images have no lesion, so no structure to compare: they are not proposed.

``busi-train similar-frames`` writes the candidates (``similar_frames.csv``) and their picture
(``similar_frames.png``); the pairs a person confirmed as one lesion go into a links file (``file_a,file_b,
verdict``; ``training/configs/busi_same_lesion.csv``), which ``split.lesion_links`` merges into the audit's groups.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from busi_viewer.core.errors import BusiViewerError

SHAPE_SIDE = 48
LINK_COLUMNS = ("file_a", "file_b", "verdict")
VERDICTS = ("same", "different")


class LinksError(BusiViewerError, ValueError):
    """A lesion-links file is unreadable or names images the data set does not have."""


@dataclass(frozen=True)
class LesionShape:
    """Where a lesion mask lies in its image (relative coordinates) and its shape on a SHAPE_SIDE square."""

    centre: tuple[float, float]  # (x, y) / (width, height)
    box: tuple[float, float]  # box (width, height) / image (width, height)
    shape: np.ndarray  # (SHAPE_SIDE, SHAPE_SIDE) bool

    @classmethod
    def of(cls, mask: np.ndarray) -> LesionShape | None:
        """The shape of a (H, W) bool mask; None when it is empty."""
        ys, xs = np.nonzero(mask)
        if ys.size == 0:
            return None
        h, w = mask.shape
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        crop = mask[y0:y1, x0:x1].astype(np.uint8)
        shape = cv2.resize(crop, (SHAPE_SIDE, SHAPE_SIDE), interpolation=cv2.INTER_NEAREST) > 0
        return cls((float(xs.mean()) / w, float(ys.mean()) / h), ((x1 - x0) / w, (y1 - y0) / h), shape)


def structure_agrees(a: LesionShape, b: LesionShape, *, min_shape_iou: float = 0.7, max_centroid_shift: float = 0.05,
                     max_size_ratio: float = 1.35) -> bool:
    """True when two lesions have the same shape, position and size within the tolerances (see module doc)."""
    iou = float((a.shape & b.shape).sum()) / float((a.shape | b.shape).sum())
    shift = float(np.hypot(a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]))
    ratio = max(a.box[0] / b.box[0], b.box[0] / a.box[0], a.box[1] / b.box[1], b.box[1] / a.box[1])
    return iou >= min_shape_iou and shift <= max_centroid_shift and ratio <= max_size_ratio


def candidate_pairs(features: np.ndarray, groups: Sequence[str], shapes: Sequence[LesionShape | None], *,
                    neighbours: int = 5, min_similarity: float = 0.35) -> list[tuple[int, int, float]]:
    """(i, j, cosine similarity) with i < j, most similar first: feature neighbours in different groups whose
    lesions agree in structure. ``features`` (N, C) float: one row per image (centred and normalised here)."""
    f = np.asarray(features, dtype=np.float64)
    f = f - f.mean(axis=0)
    f /= np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    similarity = f @ f.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argsort(-similarity, axis=1)[:, :neighbours]
    pairs = {}
    for i, row in enumerate(nearest):
        for j in row:
            a, b = (i, int(j)) if i < j else (int(j), i)
            if (groups[a] != groups[b] and similarity[a, b] >= min_similarity and shapes[a] is not None
                    and shapes[b] is not None and structure_agrees(shapes[a], shapes[b])):
                pairs[(a, b)] = float(similarity[a, b])
    return sorted(((a, b, s) for (a, b), s in pairs.items()), key=lambda p: -p[2])


def read_links(path: Path | str) -> list[tuple[str, str, str]]:
    """(file_a, file_b, verdict) rows of a lesion-links file; LinksError for bad columns or verdicts."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(line for line in handle if not line.lstrip().startswith("#"))
            if tuple(reader.fieldnames or ()) != LINK_COLUMNS:
                raise LinksError(f"{path}: expected columns {','.join(LINK_COLUMNS)}")
            rows = [(r["file_a"].strip(), r["file_b"].strip(), r["verdict"].strip()) for r in reader]
    except OSError as exc:
        raise LinksError(f"cannot read lesion links {path}: {exc.strerror or exc}") from exc
    bad = [r for r in rows if r[2] not in VERDICTS]
    if bad:
        raise LinksError(f"{path}: verdict must be one of {', '.join(VERDICTS)}, got {bad[0][2]!r}")
    return rows


def merge_links(files: Sequence[str], groups: Sequence[str], conflicting: frozenset[str], classes: Sequence[str],
                links: Sequence[tuple[str, str, str]]) -> tuple[list[str], frozenset[str]]:
    """Groups with every "same" link's two groups joined (union-find), and the conflicting ones among them: a
    joined group is conflicting when one of its parts was or when its images carry more than one class.

    ``files``/``groups``/``classes``: one entry per image; a joined group keeps the smallest of its ids (as
    strings, by ``sorted``). LinksError names a linked file that is not in ``files``.
    """
    position = {f: i for i, f in enumerate(files)}
    parent: dict[str, str] = {g: g for g in groups}

    def find(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    for a, b, verdict in links:
        if verdict != "same":
            continue
        missing = [f for f in (a, b) if f not in position]
        if missing:
            raise LinksError(f"lesion link names {missing[0]!r}, which is not in the data set")
        ra, rb = find(groups[position[a]]), find(groups[position[b]])
        if ra != rb:
            low, high = sorted((ra, rb))
            parent[high] = low
    merged = [find(g) for g in groups]
    members: dict[str, set[str]] = {}
    for root, group, label in zip(merged, groups, classes):
        members.setdefault(root, set()).add(label)
    joined_conflicting = {find(g) for g in conflicting if g in parent}
    joined_conflicting |= {root for root, labels in members.items() if len(labels) > 1}
    return merged, frozenset(joined_conflicting)


def write_candidates(path: Path, files: Sequence[str], split_of: Mapping[str, str],
                     pairs: Sequence[tuple[int, int, float]]) -> None:
    """``similar_frames.csv``: file_a, file_b, similarity, and each file's split where one is given."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_a", "file_b", "similarity", "split_a", "split_b"])
        for a, b, s in pairs:
            writer.writerow([files[a], files[b], f"{s:.3f}", split_of.get(files[a], ""), split_of.get(files[b], "")])


def imagenet_features(images, arch: str = "tf_efficientnet_lite0", batch: int = 16) -> np.ndarray:
    """(N, C) float32 globally pooled ImageNet features of RGB uint8 images (any sizes), resized to the packaged
    weights' native input with the app's preprocessing."""
    import torch

    from busi_viewer.inference.model_card import PreprocessSpec
    from busi_viewer.inference.preprocessing import normalise, resize_for_model
    from busi_viewer.inference.pretrained import PACKAGED_MEAN, PACKAGED_STD, PACKAGED_WEIGHTS, imagenet_classifier

    spec = PreprocessSpec(input_size=PACKAGED_WEIGHTS[arch].input_size, mean=PACKAGED_MEAN, std=PACKAGED_STD)
    net = imagenet_classifier(arch)
    out, pending = [], []

    def flush() -> None:
        with torch.inference_mode():
            stacked = torch.from_numpy(np.stack(pending))
            out.append(net.forward_features(stacked).mean(dim=(2, 3)).numpy())
        pending.clear()

    for rgb in images:
        pending.append(normalise(resize_for_model(rgb, spec)[0], spec))
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def find_similar_frames(busi_root: Path, groups_csv: Path, out_dir: Path, links: Path | None = None,
                        split_manifest: Path | None = None) -> list[tuple[str, str, float]]:
    """Propose other frames of one lesion in a BUSI folder (see module doc): writes ``similar_frames.csv`` and
    ``similar_frames.png`` (pairs with their verdict from ``links`` where one exists) into ``out_dir``."""
    from training.audit import _grid, _label, _thumbnail, _write_png
    from training.data import index_busi, sample_image, sample_mask
    from training.splits import read_audit_groups, read_split_manifest

    index = index_busi(busi_root)
    groups, _ = read_audit_groups(groups_csv, index.relpaths)
    shapes, images = [], []
    for sample in index:
        rgb = sample_image(sample)
        mask = sample_mask(sample, rgb.shape[:2])
        shapes.append(LesionShape.of(mask) if mask is not None else None)
        images.append(rgb)
    pairs = candidate_pairs(imagenet_features(images), groups, shapes)
    files = index.relpaths
    split_of = {row.file: row.split for row in read_split_manifest(split_manifest)} if split_manifest else {}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_candidates(out_dir / "similar_frames.csv", files, split_of, pairs)
    verdict = {frozenset((a, b)): v for a, b, v in read_links(links)} if links else {}
    tiles = []
    for a, b, s in pairs:
        left, _ = _thumbnail(index[a].path, 150)
        right, _ = _thumbnail(index[b].path, 150)
        said = verdict.get(frozenset((files[a], files[b])), "not reviewed")
        colour = {"same": (255, 80, 80), "different": (120, 200, 120)}.get(said, (255, 255, 0))
        tiles.append(_label(np.hstack([left, np.full((150, 4, 3), 255, np.uint8), right]),
                            [f"{files[a]}  |  {files[b]}", f"similarity {s:.2f}: {said}"], colour))
    _write_png(out_dir / "similar_frames.png", _grid(tiles, 2))
    return [(files[a], files[b], s) for a, b, s in pairs]
