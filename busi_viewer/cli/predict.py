"""``busi-predict``: headless batch prediction with explanations over a folder of images.

Writes ``predictions.csv`` (one row per readable image: file, case id, model, class, probabilities, scope) and
``errors.csv`` (file, reason: unreadable images, skipped files, folders and links, scope and mask notes) into
``--out``, row by row as images finish; with ``--json`` the same rows as ``predictions.jsonl``; with
``--heatmaps`` one PNG per image named by its case id, like the reports: the image, the Grad-CAM overlay and the
mask outline side by side above a legend.
One bad file never stops the run. SIGTERM or Ctrl+C stops it after the current batch with every finished row
kept; ``--resume`` continues it. Exit status: 0 when at least one image was processed (or already was), 1 when
none was, 2 for a usage, model or output-folder problem, 128 + the signal's number when stopped by one.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
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
from busi_viewer.core.grid import EXPLANATION_MAX_SIDE, mask_on_grid, reduced_grid, rgb_on_grid
from busi_viewer.core.masks import mask_for_image
from busi_viewer.core.paths import default_model_dir
from busi_viewer.core.report_data import case_id
from busi_viewer.core.scan import MASK_REASON, scan_folder
from busi_viewer.cli.options import add_runtime_options
from busi_viewer.cli.result_files import ERRORS_CSV, PREDICTIONS_JSONL, ResultFiles, ResumeError
from busi_viewer.cli.stop_signals import StopRequest

DECODE_AHEAD_BYTES = 256 * 2**20
"""Decoded images a run holds at once (waiting for the model, or in its batch), beyond the one being decoded."""
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
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run into the same --out: images already in predictions.csv "
                             "are skipped, the others (and failed ones) are tried")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


@dataclass
class _Loaded:
    path: Path
    record: ImageRecord | None
    error: str | None

    @property
    def nbytes(self) -> int:
        """Memory the decoded image holds (its native pixels and its RGB; 0 when it could not be read)."""
        if self.record is None:
            return 0
        arrays = {id(a): a for a in (self.record.pixels, self.record.rgb)}  # greyscale-free RGB files share one
        return sum(a.nbytes for a in arrays.values())


def _load(path: Path) -> _Loaded:
    try:
        return _Loaded(path, load_image(path), None)
    except ImageLoadError as exc:
        return _Loaded(path, None, exc.reason)
    except MemoryError:
        return _Loaded(path, None, "not enough memory to decode this image")
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop the run; the reason is kept
        return _Loaded(path, None, f"unexpected {type(exc).__name__}: {exc}")


def _decoded_batches(paths: Iterable[Path], batch_size: int, max_bytes: int) -> Iterator[list[_Loaded]]:
    """Decode images in one background thread while the model works, and hand them out in batches.

    Memory is bounded by bytes, not files: a decode starts only while the images held (decoded, waiting in the
    batch) take less than ``max_bytes``, and a batch goes out as soon as it holds that much. So at most one image
    is being decoded beyond ``max_bytes``, and a folder of huge images runs one image at a time.
    """
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="busi-load")
    remaining = iter(paths)

    def start() -> Future[_Loaded] | None:
        path = next(remaining, None)
        return None if path is None else pool.submit(_load, path)

    try:
        loading = start()
        batch: list[_Loaded] = []
        held = 0
        while loading is not None:
            batch.append(loading.result())  # no other reference: a yielded batch is freed with its list
            held += batch[-1].nbytes
            full = held >= max_bytes
            loading = None if full else start()  # decode the next image while this batch is predicted
            if full or len(batch) >= batch_size:
                yield batch
                batch, held = [], 0
                loading = loading or start()
        if batch:
            yield batch
    finally:
        # An interrupted run does not wait for decodes it will never use.
        pool.shutdown(wait=False, cancel_futures=True)


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

    if args.batch_size < 1:
        print("busi-predict: error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    if args.resume and (args.pdf or args.force):
        print("busi-predict: error: --resume cannot be combined with " + ("--pdf: the folder summary needs every "
              "image in one run" if args.pdf else "--force"), file=sys.stderr)
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
    card = predictor.card
    header = ["file", "case_id", "status", "model", "predicted_class", *(f"p_{name}" for name in card.class_names),
              "low_confidence", "in_scope", "scope_score", *AGREEMENT_COLUMNS]
    files = ResultFiles(out, header, f"{card.name} {card.version}", json_lines=args.json)
    existing = [p for p in files.paths + ([out / SUMMARY_PDF] if args.pdf else []) if p.exists()]
    if existing and not (args.force or args.resume):
        print(f"busi-predict: error: {existing[0]} already exists; use --resume to continue that run, --force to "
              "overwrite, or choose another --out", file=sys.stderr)
        return 2
    try:
        out.mkdir(parents=True, exist_ok=True)
        files.open(resume=args.resume)
    except ResumeError as exc:
        print(f"busi-predict: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        files.close()
        print(f"busi-predict: error: cannot write results to {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2

    todo = [path for path in scan.images if _relative(path, args.folder) not in files.done]
    reports = _Reports(args, card) if args.pdf or args.pdf_per_image else None
    legend_class = None
    if args.heatmaps:
        from busi_viewer.reports.heatmap_png import Legend as legend_class
        from busi_viewer.reports.pdf import ensure_gui_application

        ensure_gui_application()  # the PNGs' legends are drawn with Qt
    resumed = f" ({len(scan.images) - len(todo)} already done: resuming)" if args.resume else ""
    print(f"{RESEARCH_USE_BANNER}.\nModel {card.name} {card.version} ({card.architecture}) on {predictor.description}; "
          f"{len(scan.images)} image(s) in {args.folder}{resumed}, {masks} lesion mask(s) used as masks, "
          f"{len(scan.skipped) - masks} other file(s) skipped (listed in {ERRORS_CSV}).", file=sys.stderr)

    tally = _Tally()
    try:
        with files, StopRequest("busi-predict") as stop:
            for skipped in scan.skipped:
                if not skipped.reason.startswith(MASK_REASON):
                    files.error(_relative(skipped.path, args.folder), f"skipped: {skipped.reason}")
            progress = _progress(len(todo), disabled=args.no_progress)
            for batch in _decoded_batches(todo, args.batch_size, DECODE_AHEAD_BYTES):
                _predict_batch(batch, predictor, args, files, reports, legend_class, tally)
                progress.update(len(batch))
                del batch  # freed before the next decode starts, not when the loop rebinds the name
                if stop.requested:
                    break
            progress.close()
    except KeyboardInterrupt:  # a second Ctrl+C: stop at once, the files are closed by now
        print(f"\nbusi-predict: interrupted after {tally.processed} image(s); finished rows are in {files.paths[0]}; "
              "run the same command with --resume to continue", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"busi-predict: error: cannot write results to {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if stop.requested:
        print(f"busi-predict: stopped after {tally.processed} image(s) of {len(todo)}; finished rows are in "
              f"{files.paths[0]}; run the same command with --resume to continue", file=sys.stderr)
        return stop.exit_status

    if reports is not None and args.pdf and tally.processed:
        try:
            reports.write_summary(out / SUMMARY_PDF)
        except (BusiViewerError, OSError) as exc:
            print(f"busi-predict: error: {exc}", file=sys.stderr)
            return 2
    print(f"{tally.processed} image(s) processed, {tally.failed} unreadable; results in {files.paths[0]}, "
          f"errors in {files.paths[1]}", file=sys.stderr)
    return 0 if tally.processed or files.done else 1


@dataclass
class _Tally:
    processed: int = 0
    failed: int = 0


def _predict_batch(batch: list[_Loaded], predictor, args: argparse.Namespace, files: ResultFiles,
                   reports: _Reports | None, legend_class, tally: _Tally) -> None:
    """Predict one batch and write everything about each of its images, its table rows last: a row in
    predictions.csv means that image's heatmap PNG and report are on disk too (what --resume relies on)."""
    from busi_viewer.inference.catalogue import in_scope_cell, scope_warning

    card = predictor.card
    readable = [item for item in batch if item.record is not None]
    for item in batch:
        if item.record is None:
            tally.failed += 1
            files.error(_relative(item.path, args.folder), item.error)
            if reports is not None:
                reports.add_unreadable(item.path, item.error)
    try:
        rgbs = [item.record.rgb for item in readable]
        results = predictor.predict_batch(rgbs, heatmap_max_side=EXPLANATION_MAX_SIDE) if readable else []
    except Exception as exc:  # noqa: BLE001 - a model failure is reported per file, the run goes on
        for item in readable:
            tally.failed += 1
            files.error(_relative(item.path, args.folder), f"prediction failed: {exc}")
        return
    for item, prediction in zip(readable, results):
        relative = _relative(item.path, args.folder)
        notes = []
        scope = scope_warning(card, item.record.modality, prediction)
        if scope:  # still classified, as asked, but never silently
            notes.append(scope)
        # Huge images are drawn on a reduced grid (the heatmap's): see busi_viewer.core.grid.
        grid = reduced_grid(item.record.shape, EXPLANATION_MAX_SIDE)
        mask = None
        try:
            mask = mask_on_grid(mask_for_image(item.path, item.record.shape, mask_dir=args.mask_dir), grid)
        except ImageLoadError as exc:
            notes.append(f"mask: {exc.reason}")
        scores = _agreement_of(prediction.heatmap_raw, mask)
        sha256 = sha256_file(item.path)
        row = dict(zip(files.header, [
            relative, case_id(sha256), "ok", files.model, prediction.predicted_class,
            *(float(p) for p in prediction.probabilities), prediction.low_confidence,
            in_scope_cell(scope, prediction), prediction.scope_score,
            *_agreement_values(scores),
        ]))
        shown = rgb_on_grid(item.record.rgb, grid)
        if legend_class is not None:
            from busi_viewer.reports.heatmap_png import explanation_png

            legend = legend_class(f"Prediction: {prediction.predicted_class}, p({prediction.predicted_class}) "
                                  f"{prediction.probability(prediction.predicted_class):.2f}",
                                  row["model"], scope, opacity=args.opacity, explanation=card.explanation_name())
            _write_png(args.out / HEATMAPS_DIR / f"{row['case_id']}.png",
                       explanation_png(shown, prediction.heatmap, mask, legend))
        if reports is not None:
            problem = reports.add(sha256, item.record, shown, prediction, scope, mask, scores)
            if problem:
                notes.append(problem)
        for note in notes:
            files.error(relative, note)
        files.prediction([_fmt(value) for value in row.values()],
                         {key: _json_value(v) for key, v in row.items()} if args.json else None)
        tally.processed += 1


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

    def add(self, sha256: str, record: ImageRecord, shown: np.ndarray, prediction, out_of_scope: str,
            mask: np.ndarray | None, scores: AgreementResult | None) -> str | None:
        """Record one image (and write its report when asked); returns a problem to log, or None.

        ``shown``: the record's RGB on the grid of the heatmap and mask (the record's own, or reduced for a huge
        image); the scale bar is moved onto it. ``out_of_scope``: the run's scope warning for it, or ""."""
        from busi_viewer.core.report_data import image_entry

        entry = image_entry(record, sha256, class_names=self._card.class_names,
                            probabilities=prediction.probabilities, predicted=prediction.predicted_class,
                            low_confidence=prediction.low_confidence, decision_rule=self._card.decision_rule(),
                            out_of_scope=out_of_scope,
                            operating_point=self._card.operating_point(),
                            agreement=scores, review=self._review_for(sha256),
                            include_identifiers=self._args.include_identifiers)
        if entry.scale is not None:
            entry = replace(entry, scale=entry.scale.on_grid(record.shape, shown.shape[:2]))
        self._rows.append((entry, self._pdf.thumbnail(shown)))
        if not self._args.pdf_per_image:
            return None
        images = self._pdf.ReportImages(shown, prediction.heatmap, mask, self._args.opacity)
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
    database when one exists; a headless run never creates or writes one. A database that cannot be read
    (damaged, locked, too new) costs the reports their reviews, with one warning, never the predictions."""
    from busi_viewer.core.report_data import ReviewSection
    from busi_viewer.core.reviews import (
        ReviewStore,
        ReviewStoreError,
        default_reviews_path,
    )

    warned = False

    def warn(problem: object) -> None:
        nonlocal warned
        if not warned:
            warned = True
            text = " ".join(str(problem).split()).rstrip(".")
            print(f"busi-predict: warning: {text}; reports leave out the reviews that cannot be read", file=sys.stderr)

    store = None
    try:
        path = default_reviews_path()
        if path.is_file():
            store = ReviewStore(path, read_only=True)
    except (ReviewStoreError, OSError) as exc:
        warn(exc)
    if store is not None and store.notice:
        warn(store.notice)

    def lookup(sha256: str):
        try:
            review = store.get(sha256) if store is not None else None
        except ReviewStoreError as exc:
            warn(exc)
            review = None
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
