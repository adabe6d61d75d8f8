"""``busi-predict``: headless batch prediction with explanations over a folder of images.

Writes ``predictions.csv`` (one row per readable image: file, case id, model, class, probabilities, scope) and
``errors.csv`` (file, reason) into ``--out``; with ``--json`` the same rows as ``predictions.jsonl``; with
``--heatmaps`` one PNG per image named by its case id, like the reports: the image, the Grad-CAM overlay and the
mask outline side by side above a legend.
One bad file never stops the run. Exit status: 0 when at least one image was processed, 1 when none was,
2 for a usage, model or output-folder problem.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from busi_viewer import RESEARCH_USE_BANNER
from busi_viewer.core.agreement import AgreementResult, agreement
from busi_viewer.core.atomic import atomic_write
from busi_viewer.core.errors import BusiViewerError, ImageLoadError
from busi_viewer.core.hashing import sha256_file
from busi_viewer.core.image_record import ImageRecord
from busi_viewer.core.loader import load_image
from busi_viewer.core.masks import mask_for_image
from busi_viewer.core.paths import default_model_dir
from busi_viewer.core.report_data import case_id
from busi_viewer.core.scan import scan_folder
from busi_viewer.cli.options import add_runtime_options

PREDICTIONS_CSV = "predictions.csv"
PREDICTIONS_JSONL = "predictions.jsonl"
ERRORS_CSV = "errors.csv"
SUMMARY_PDF = "summary.pdf"
REPORTS_DIR = "reports"
HEATMAPS_DIR = "heatmaps"
AGREEMENT_COLUMNS = ("iou", "pointing_hit", "energy_in_mask", "baseline_iou", "baseline_pointing_hit",
                     "baseline_energy_in_mask")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="busi-predict",
        description=f"Classify every image in a folder and explain each prediction with Grad-CAM. "
                    f"{RESEARCH_USE_BANNER}.",
    )
    parser.add_argument("folder", type=Path, nargs="?", default=None,
                        help="folder of images (PNG, JPEG, BMP, TIFF, PGM, DICOM), searched recursively")
    parser.add_argument("--demo", action="store_true",
                        help="use the bundled demo folder (synthetic phantoms and pydicom's ultrasound samples)")
    parser.add_argument("--model", type=Path, default=None,
                        help=f"model bundle folder, or the name of an installed one such as mias-mg "
                             f"(default: {default_model_dir()})")
    parser.add_argument("--out", type=Path, default=Path("busi-predictions"), help="output folder (default: ./busi-predictions)")
    parser.add_argument("--heatmaps", action="store_true",
                        help="also write an explanation PNG per image into heatmaps/ (named by case id)")
    parser.add_argument("--json", action="store_true", help=f"also write the rows as JSON lines ({PREDICTIONS_JSONL})")
    add_runtime_options(parser)
    parser.add_argument("--mask-dir", type=Path, default=None, help="look for lesion masks in this folder too")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--opacity", type=float, default=0.45, help="heatmap opacity in the PNGs, 0..1")
    parser.add_argument("--pdf", action="store_true", help="also write a de-identified folder summary, summary.pdf")
    parser.add_argument("--pdf-per-image", action="store_true",
                        help="also write one de-identified PDF report per image into reports/ (named by case id)")
    parser.add_argument("--include-identifiers", action="store_true",
                        help="put patient identifiers and original file names into the PDFs (off by default)")
    parser.add_argument("--force", action="store_true", help="overwrite existing result files in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


@dataclass
class _Loaded:
    path: Path
    record: ImageRecord | None
    error: str | None


def _load(path: Path) -> _Loaded:
    try:
        return _Loaded(path, load_image(path), None)
    except ImageLoadError as exc:
        return _Loaded(path, None, exc.reason)
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop the run; the reason is kept
        return _Loaded(path, None, f"unexpected {type(exc).__name__}: {exc}")


def _prefetched(paths: list[Path], depth: int) -> Iterator[_Loaded]:
    """Decode images in a background thread, at most ``depth`` ahead, while the model works."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="busi-load") as pool:
        pending: deque[Future[_Loaded]] = deque()
        queue = iter(paths)
        for path in queue:
            pending.append(pool.submit(_load, path))
            if len(pending) >= depth:
                break
        while pending:
            yield pending.popleft().result()
            next_path = next(queue, None)
            if next_path is not None:
                pending.append(pool.submit(_load, next_path))


def _batches(items: Iterable[_Loaded], size: int) -> Iterator[list[_Loaded]]:
    batch: list[_Loaded] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{float(value):.6f}"
    return str(value)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {path.name}")
    with atomic_write(path, "wb") as handle:
        handle.write(encoded.tobytes())


def run(args: argparse.Namespace) -> int:
    # Heavy imports after argument parsing so that --help and usage errors are instant.
    from busi_viewer.inference.backend import load_predictor
    from busi_viewer.inference.catalogue import in_scope_cell, scope_warning

    if args.batch_size < 1:
        print("busi-predict: error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        scan = scan_folder(args.folder)
    except BusiViewerError as exc:
        print(f"busi-predict: error: {exc}", file=sys.stderr)
        return 2
    masks = scan.masks
    if not scan.images:
        print(f"busi-predict: no images found in {args.folder} ({masks} lesion mask(s), "
              f"{len(scan.skipped) - masks} other file(s)); nothing written", file=sys.stderr)
        return 1
    try:
        predictor, _folder = load_predictor(args.model, args.device, args.backend)
    except BusiViewerError as exc:
        print(f"busi-predict: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # e.g. --device cuda on a machine without CUDA
        print(f"busi-predict: error: {exc}", file=sys.stderr)
        return 2

    out = args.out
    targets = ([out / PREDICTIONS_CSV, out / ERRORS_CSV] + ([out / SUMMARY_PDF] if args.pdf else [])
               + ([out / PREDICTIONS_JSONL] if args.json else []))
    existing = [p for p in targets if p.exists()]
    if existing and not args.force:
        print(f"busi-predict: error: {existing[0]} already exists; use --force to overwrite or choose another --out",
              file=sys.stderr)
        return 2
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"busi-predict: error: cannot create output folder {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2

    card = predictor.card
    reports = _Reports(args, card) if args.pdf or args.pdf_per_image else None
    if args.heatmaps:
        from busi_viewer.reports.heatmap_png import Legend, explanation_png
        from busi_viewer.reports.pdf import ensure_gui_application

        ensure_gui_application()  # the PNGs' legends are drawn with Qt
    print(f"{RESEARCH_USE_BANNER}.\nModel {card.name} {card.version} ({card.architecture}) on {predictor.description}; "
          f"{len(scan.images)} image(s) in {args.folder}, {masks} lesion mask(s) used as masks, "
          f"{len(scan.skipped) - masks} other file(s) skipped.", file=sys.stderr)

    header = ["file", "case_id", "status", "model", "predicted_class", *(f"p_{name}" for name in card.class_names),
              "low_confidence", "in_scope", "scope_score", *AGREEMENT_COLUMNS]
    processed = failed = 0
    try:
        with ExitStack() as stack:
            predictions = csv.writer(stack.enter_context(atomic_write(targets[0], newline="", encoding="utf-8")))
            errors = csv.writer(stack.enter_context(atomic_write(targets[1], newline="", encoding="utf-8")))
            jsonl = stack.enter_context(atomic_write(out / PREDICTIONS_JSONL, encoding="utf-8")) if args.json else None
            predictions.writerow(header)
            errors.writerow(["file", "reason"])
            progress = _progress(len(scan.images), disabled=args.no_progress)
            for batch in _batches(_prefetched(scan.images, depth=2 * args.batch_size), args.batch_size):
                readable = [item for item in batch if item.record is not None]
                for item in batch:
                    if item.record is None:
                        failed += 1
                        errors.writerow([_relative(item.path, args.folder), item.error])
                        if reports is not None:
                            reports.add_unreadable(item.path, item.error)
                try:
                    results = predictor.predict_batch([item.record.rgb for item in readable]) if readable else []
                except Exception as exc:  # noqa: BLE001 - a model failure is reported per file, the run goes on
                    for item in readable:
                        failed += 1
                        errors.writerow([_relative(item.path, args.folder), f"prediction failed: {exc}"])
                    readable, results = [], []
                for item, prediction in zip(readable, results):
                    relative = _relative(item.path, args.folder)
                    scope = scope_warning(card, item.record.modality, prediction)
                    if scope:  # still classified, as asked, but never silently
                        errors.writerow([relative, scope])
                    mask = None
                    try:
                        mask = mask_for_image(item.path, item.record.shape, mask_dir=args.mask_dir)
                    except ImageLoadError as exc:
                        errors.writerow([relative, f"mask: {exc.reason}"])
                    scores = _agreement_of(prediction.heatmap_raw, mask)
                    sha256 = sha256_file(item.path)
                    row = dict(zip(header, [
                        relative, case_id(sha256), "ok", f"{card.name} {card.version}", prediction.predicted_class,
                        *(float(p) for p in prediction.probabilities), prediction.low_confidence,
                        in_scope_cell(scope, prediction), prediction.scope_score,
                        *_agreement_values(scores),
                    ]))
                    predictions.writerow([_fmt(value) for value in row.values()])
                    if jsonl is not None:
                        jsonl.write(json.dumps({key: _json_value(v) for key, v in row.items()}, allow_nan=False) + "\n")
                    if args.heatmaps:
                        legend = Legend(f"Prediction: {prediction.predicted_class}, p({prediction.predicted_class}) "
                                        f"{prediction.probability(prediction.predicted_class):.2f}",
                                        row["model"], scope, opacity=args.opacity)
                        _write_png(out / HEATMAPS_DIR / f"{row['case_id']}.png",
                                   explanation_png(item.record.rgb, prediction.heatmap, mask, legend))
                    if reports is not None:
                        problem = reports.add(item.path, sha256, item.record, prediction, mask, scores)
                        if problem:
                            errors.writerow([relative, problem])
                    processed += 1
                progress.update(len(batch))
            progress.close()
    except OSError as exc:
        print(f"busi-predict: error: cannot write results to {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2

    if reports is not None and args.pdf and processed:
        try:
            reports.write_summary(out / SUMMARY_PDF)
        except (BusiViewerError, OSError) as exc:
            print(f"busi-predict: error: {exc}", file=sys.stderr)
            return 2
    print(f"{processed} image(s) processed, {failed} unreadable; results in {targets[0]}, errors in {targets[1]}",
          file=sys.stderr)
    return 0 if processed else 1


class _Reports:
    """PDF reports of a headless run: per-image files as it goes, the folder summary at the end."""

    def __init__(self, args: argparse.Namespace, card) -> None:
        from busi_viewer.reports import pdf as pdf_report

        pdf_report.ensure_gui_application()
        self._pdf = pdf_report
        self._args = args
        self._card = card
        self._model = pdf_report.model_section_for(card)
        self._rows: list = []
        self._unreadable: list[tuple[str, str]] = []
        self._review_for = _review_lookup()

    def add(self, path: Path, sha256: str, record: ImageRecord, prediction, mask: np.ndarray | None,
            scores: AgreementResult | None) -> str | None:
        """Record one image (and write its report when asked); returns a problem to log, or None."""
        from busi_viewer.core.report_data import image_entry
        from busi_viewer.inference.catalogue import scope_warning

        entry = image_entry(record, sha256, class_names=self._card.class_names,
                            probabilities=prediction.probabilities, predicted=prediction.predicted_class,
                            low_confidence=prediction.low_confidence, decision_rule=self._card.decision_rule(),
                            out_of_scope=scope_warning(self._card, record.modality, prediction),
                            operating_point=self._card.operating_point(),
                            agreement=scores, review=self._review_for(sha256),
                            include_identifiers=self._args.include_identifiers)
        self._rows.append((entry, self._pdf.thumbnail(record.rgb)))
        if not self._args.pdf_per_image:
            return None
        images = self._pdf.ReportImages(record.rgb, prediction.heatmap, mask, self._args.opacity)
        target = self._args.out / REPORTS_DIR / f"{entry.case_id}.pdf"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._pdf.write_image_report(target, entry, images, self._model, overwrite=self._args.force)
        except (BusiViewerError, OSError) as exc:
            return f"report: {exc}"
        return None

    def add_unreadable(self, path: Path, reason: str | None) -> None:
        reason = reason or "unreadable"
        if self._args.include_identifiers:
            self._unreadable.append((path.name, reason))
            return
        for text in (str(path), path.name):  # decoder messages often quote the path
            reason = reason.replace(text, "the file")
        try:
            name = case_id(sha256_file(path))
        except OSError:
            name = "a file that cannot be read"
        self._unreadable.append((name, reason))

    def write_summary(self, target: Path) -> None:
        from busi_viewer.core.report_data import folder_counts

        entries = [entry for entry, _ in self._rows]
        self._pdf.write_summary_report(target, self._rows, folder_counts(entries, self._card.class_names),
                                       self._model, unreadable=self._unreadable, overwrite=self._args.force)


def _review_lookup():
    """sha256 -> the viewer's saved review as a report section (or None), read from the user's review
    database when one exists; a headless run never creates one."""
    from busi_viewer.core.report_data import ReviewSection
    from busi_viewer.core.reviews import (
        ReviewStore,
        ReviewStoreError,
        default_reviews_path,
    )

    path = default_reviews_path()
    try:
        store = ReviewStore(path) if path.is_file() else None
    except ReviewStoreError:
        store = None

    def lookup(sha256: str):
        review = store.get(sha256) if store is not None else None
        return ReviewSection.of(review)

    return lookup


def _agreement_of(heatmap_raw: np.ndarray | None, mask: np.ndarray | None) -> AgreementResult | None:
    """Heatmap-vs-mask scores, or None without a heatmap or a lesion in the mask."""
    if heatmap_raw is None or mask is None or not mask.any():
        return None
    return agreement(heatmap_raw, mask)


def _agreement_values(result: AgreementResult | None) -> list:
    if result is None:
        return [None] * len(AGREEMENT_COLUMNS)
    base = result.baseline
    return [result.iou_otsu, result.pointing_hit, result.energy_in_mask,
            base.iou_otsu, base.pointing_hit, base.energy_in_mask]


def _json_value(value):
    """A row's value as JSON has it: NumPy scalars as Python's, NaN and "" (unknown) as null."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    return None if value == "" else value


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _progress(total: int, disabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="busi-predict", disable=disabled or None, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.folder is None) == (not args.demo):
        parser.error("give a FOLDER or --demo (not both)")
    if args.demo:
        from busi_viewer.core.demo import demo_folder

        args.folder = demo_folder()
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
