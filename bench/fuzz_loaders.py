"""Fuzz the image loaders: mutated PNG / JPEG / BMP / TIFF / PGM / DICOM files must give an image or an
ImageLoadError with a reason, nothing else (no other exception, no hang, no unbounded memory).

    python bench/fuzz_loaders.py [--seconds 600 | --cases N] [--seed S] [--keep FOLDER]

Seeds are small valid files made here (and pydicom's own compressed test files: JPEG, JPEG-LS, JPEG 2000, RLE);
each case flips bytes, overwrites runs with extreme values (0x00, 0xFF, 0x7F...), truncates, duplicates or
splices, then loads the result. A case that raises anything but ImageLoadError, or takes longer than
``--case-timeout`` seconds, is a finding: printed, and kept in ``--keep`` to reproduce. Exit status 1 when any was
found. ``tests/test_fuzz_brief.py`` runs a short, fixed-seed session in CI; long runs are opt-in.
"""

from __future__ import annotations

import argparse
import io
import json
import signal
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # busi_viewer and tests.helpers, from a checkout

from busi_viewer.core.errors import ImageLoadError  # noqa: E402
from busi_viewer.core.loader import load_image  # noqa: E402

_COMPRESSED_DICOM_SEEDS = ("SC_rgb_jpeg_gdcm.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm",
                           "MR_small_RLE.dcm", "SC_rgb_rle.dcm", "CT_small.dcm")
_EXTREMES = (b"\x00", b"\xff", b"\x7f", b"\x80", b"\xfe", b"\x01")


def seed_files() -> dict[str, bytes]:
    """name (with its suffix) -> bytes of a small valid file of each format the loader reads."""
    from PIL import Image
    from pydicom.data import get_testdata_file

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (24, 32), dtype=np.uint8)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    seeds = {}
    rasters = (("grey.png", grey, "PNG", {}), ("rgb.png", rgb, "PNG", {}),
               ("grey16.png", grey.astype(np.uint16) * 257, "PNG", {}), ("rgb.jpg", rgb, "JPEG", {"quality": 90}),
               ("grey.bmp", grey, "BMP", {}), ("rgb.tif", rgb, "TIFF", {}),
               ("grey.tif", grey, "TIFF", {"compression": "tiff_lzw"}), ("grey.pgm", grey, "PPM", {}))
    for name, array, fmt, options in rasters:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, fmt, **options)
        seeds[name] = buffer.getvalue()
    seeds["plain.dcm"] = _plain_dicom(grey)
    for name in _COMPRESSED_DICOM_SEEDS:
        found = get_testdata_file(name)
        if found:
            seeds[name] = Path(found).read_bytes()
    return seeds


def _plain_dicom(pixels: np.ndarray) -> bytes:
    from tests.helpers.dicom import write_dicom

    with tempfile.TemporaryDirectory(prefix="busi-fuzz-seed-") as temp:
        return write_dicom(Path(temp) / "plain.dcm", pixels).read_bytes()


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One to four random edits of ``data``: byte flips, extreme-value runs, truncation, duplication, splicing."""
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        if not out:
            break
        kind = int(rng.integers(0, 5))
        at = int(rng.integers(0, len(out)))
        if kind == 0:  # flip a few bits
            for offset in rng.integers(0, len(out), int(rng.integers(1, 9))):
                out[int(offset)] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:  # a run of an extreme value (sizes and lengths become 0, -1, 2^31...)
            run = _EXTREMES[int(rng.integers(0, len(_EXTREMES)))] * int(rng.integers(1, 9))
            out[at:at + len(run)] = run
        elif kind == 2:  # truncate
            del out[max(1, at):]
        elif kind == 3:  # duplicate a slice
            length = int(rng.integers(1, 256))
            out[at:at] = out[at:at + length]
        else:  # splice a slice from elsewhere over this position
            source = int(rng.integers(0, len(out)))
            length = int(rng.integers(1, 64))
            out[at:at + length] = out[source:source + length]
    return bytes(out)


class _CaseTimeout(Exception):
    pass


def _on_alarm(_signum, _frame):
    raise _CaseTimeout


@dataclass
class FuzzReport:
    cases: int = 0
    loaded: int = 0
    refused: int = 0
    seconds: float = 0.0
    slowest_case_s: float = 0.0
    findings: list[dict] = field(default_factory=list)


def fuzz(cases: int | None = None, seconds: float | None = None, seed: int = 0, case_timeout: int = 20,
         keep: Path | None = None) -> FuzzReport:
    """Run until ``cases`` cases or ``seconds`` have passed (whichever is given; both: the first reached)."""
    rng = np.random.default_rng(seed)
    seeds = seed_files()
    names = sorted(seeds)
    report = FuzzReport()
    alarm = hasattr(signal, "SIGALRM")
    previous = signal.signal(signal.SIGALRM, _on_alarm) if alarm else None
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="busi-fuzz-") as temp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # damaged files make pydicom and Pillow warn on nearly every case
            def more() -> bool:
                return ((cases is None or report.cases < cases)
                        and (seconds is None or time.perf_counter() - start < seconds))

            while more():
                name = names[int(rng.integers(0, len(names)))]
                data = mutate(seeds[name], rng)
                path = Path(temp) / f"case{report.cases}{Path(name).suffix}"
                path.write_bytes(data)
                report.cases += 1
                began = time.perf_counter()
                problem = None
                if alarm:
                    signal.alarm(case_timeout)
                try:
                    load_image(path).rgb_frame(0)
                    report.loaded += 1
                except ImageLoadError as exc:
                    report.refused += 1
                    if not exc.reason:
                        problem = "ImageLoadError without a reason"
                except _CaseTimeout:
                    problem = f"took longer than {case_timeout} s"
                except Exception:  # noqa: BLE001 - that is what the fuzzer looks for
                    problem = traceback.format_exc(limit=3).strip().splitlines()[-1]
                finally:
                    if alarm:
                        signal.alarm(0)
                report.slowest_case_s = max(report.slowest_case_s, time.perf_counter() - began)
                if problem:
                    finding = {"seed_file": name, "case": report.cases - 1, "problem": problem}
                    if keep is not None:
                        keep.mkdir(parents=True, exist_ok=True)
                        kept = keep / f"finding{len(report.findings)}{Path(name).suffix}"
                        kept.write_bytes(data)
                        finding["file"] = str(kept)
                    report.findings.append(finding)
                path.unlink()
    finally:
        if alarm:
            signal.signal(signal.SIGALRM, previous)
    report.seconds = time.perf_counter() - start
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--case-timeout", type=int, default=20, help="seconds one case may take (default 20)")
    parser.add_argument("--keep", type=Path, default=None, help="folder to keep the files of findings in")
    args = parser.parse_args(argv)
    if args.cases is None and args.seconds is None:
        args.seconds = 60.0
    report = fuzz(args.cases, args.seconds, args.seed, args.case_timeout, args.keep)
    report.seconds = round(report.seconds, 1)
    report.slowest_case_s = round(report.slowest_case_s, 2)
    print(json.dumps(report.__dict__, indent=2))
    return 1 if report.findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
